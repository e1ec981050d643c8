//! Connections for the backfill: named (so `pg_stat_activity` shows who is who, and the health
//! check can leave our own sessions out) and with the plan's timeouts applied to every statement.

use tokio_postgres::Client;

use crate::catalog::Backfill;
use crate::error::Error;

/// The `application_name` of every backfill session.
pub(crate) const APPLICATION_NAME: &str = "sunset-backfill";

pub async fn connect(url: &str) -> Result<Client, Error> {
    Ok(sunset_pg::connect(url, APPLICATION_NAME).await?)
}

/// `SET` statements for the plan's per-batch timeouts: `SET LOCAL` (one transaction) or `SET`
/// (the whole session). `lock_timeout` is always set; `statement_timeout` when `with_statement`.
pub(crate) fn timeouts_sql(backfill: &Backfill, local: bool, with_statement: bool) -> String {
    let set = if local { "SET LOCAL" } else { "SET" };
    let mut sql = format!(
        "{set} lock_timeout = {}",
        backfill.throttle.lock_timeout.0.as_millis()
    );
    if with_statement {
        sql.push_str(&format!(
            "; {set} statement_timeout = {}",
            backfill.throttle.statement_timeout.0.as_millis()
        ));
    }
    sql
}

/// Applies the plan's per-batch `lock_timeout` and `statement_timeout` to the session.
pub(crate) async fn apply_timeouts(client: &Client, backfill: &Backfill) -> Result<(), Error> {
    client
        .batch_execute(&timeouts_sql(backfill, false, true))
        .await
        .map_err(Error::db("setting the batch timeouts"))
}
