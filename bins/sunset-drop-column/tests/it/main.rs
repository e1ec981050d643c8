//! `sunset-drop-column` as operators run it: the built binary against the real PostgreSQL, one
//! module per kind of evidence or output, and `support` for what they share. One test binary (`it`).

mod bad_input;
mod catalog;
mod formats;
mod pr;
mod runners;
mod support;
mod untracked;
