//! Connections for the backfill: named (so `pg_stat_activity` shows who is who, and the health
//! check can leave our own sessions out) and with the plan's timeouts applied to every statement.

use tokio_postgres::{Client, NoTls};

use crate::catalog::Backfill;
use crate::error::Error;

/// The `application_name` of every backfill session.
pub(crate) const APPLICATION_NAME: &str = "sunset-backfill";

pub async fn connect(url: &str) -> Result<Client, Error> {
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|e: tokio_postgres::Error| Error::Invalid(format!("invalid database URL: {e}")))?;
    config.application_name(APPLICATION_NAME);
    let (client, connection) = config
        .connect(NoTls)
        .await
        .map_err(Error::db("connecting to PostgreSQL"))?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "connection ended");
        }
    });
    Ok(client)
}

/// Applies the plan's per-batch `lock_timeout` and `statement_timeout` to the session.
pub(crate) async fn apply_timeouts(client: &Client, backfill: &Backfill) -> Result<(), Error> {
    let lock = backfill.throttle.lock_timeout.0.as_millis();
    let statement = backfill.throttle.statement_timeout.0.as_millis();
    client
        .batch_execute(&format!(
            "SET lock_timeout = {lock}; SET statement_timeout = {statement}"
        ))
        .await
        .map_err(Error::db("setting the batch timeouts"))
}
