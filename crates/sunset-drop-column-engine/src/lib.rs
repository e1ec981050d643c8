//! The logic behind `sunset-drop-column`: prove a column drop is safe, then write the staged up
//! and truthful down migration in the team's runner format, verified up/down/up on a scratch
//! database, and prepare the Do Not Merge pull request.
//!
//! Flow: [`check`] gathers every finding in one pass ([`target`] resolves the column,
//! [`dependents`] walks the catalog, [`descendants`] the children's own indexes, [`untracked`]
//! the places the catalog keeps the column's name as text, [`references`] searches function
//! bodies, the repository and `pg_stat_statements`, [`parity`] runs the backfill's validation). [`generate`] then builds the
//! [`migration`], renders it with [`formats`], verifies it with [`scratch`] and writes files or
//! the branch ([`pr`]).

mod check;
pub mod dependents;
pub mod descendants;
mod error;
pub mod findings;
pub mod formats;
mod generate;
pub mod migration;
pub mod parity;
pub mod pr;
pub mod probe;
pub mod references;
pub mod report;
pub mod scratch;
pub mod snapshot;
mod subset;
pub mod target;
mod tool;
pub mod untracked;

pub use check::{CheckReport, CheckRequest, check, load_config};
pub use error::Error;
pub use findings::{Acknowledgements, Finding};
pub use formats::Format;
pub use generate::{GenerateOutcome, GenerateRequest, Generated, generate};
pub use target::Target;
