//! `sunset-backfill` as operators run it: the built binary against the real PostgreSQL, in
//! place and in copy mode, interrupted, killed and fed bad plans. One test binary (`it`), one module
//! per area, and `support` for what they share.

mod cli;
mod copy;
mod dashboard;
mod load;
mod support;
