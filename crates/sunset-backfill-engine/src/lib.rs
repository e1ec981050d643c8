//! The logic behind `sunset-backfill`: chunked, exactly-once, resumable STI backfills on
//! PostgreSQL, with a throttle, parallel workers, pause/resume/cancel, validation and rollback.
//!
//! Flow: [`load`] a plan → [`catalog::resolve`] it against the table → [`preflight::check`] →
//! [`runner::run`]; then [`ops::validate`], [`ops::finish`] or [`ops::rollback`].

pub mod catalog;
mod connect;
mod coverage;
mod error;
mod health;
pub mod ops;
pub mod preflight;
mod queries;
pub mod runner;
mod schema;
mod sql;
mod statements;
pub mod stats;
pub mod throttle;
mod validate;

pub use catalog::Backfill;
pub use connect::connect;
pub use error::Error;
pub use runner::RunOptions;
pub use statements::KeyText;
pub use stats::Stats;

use sunset_plan::Loaded;
use sunset_plan::format::BackfillPlanFile;

/// Loads a plan file's text; `file` names it in diagnostics.
pub fn load(file: &str, text: &str) -> Result<Loaded<BackfillPlanFile>, Error> {
    Ok(sunset_plan::load_backfill_plan(
        file,
        text,
        &sunset_plan::process_env,
    )?)
}

/// Connects, makes sure the `sunset` tables exist, and resolves the plan against the table.
pub async fn open(
    url: &str,
    loaded: &Loaded<BackfillPlanFile>,
) -> Result<(tokio_postgres::Client, Backfill), Error> {
    let mut client = connect(url).await?;
    schema::ensure(&mut client).await?;
    let backfill = catalog::resolve(&client, loaded).await?;
    Ok((client, backfill))
}
