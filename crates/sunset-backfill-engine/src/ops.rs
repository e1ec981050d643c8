//! The operator commands around a run: `status`, `pause`/`resume`/`cancel` (through the control
//! row, which any psql session can also update), `rollback` and `finish`; `validate` is its own
//! module and re-exported here.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use sunset_checkpoint::{PgRunLock, PgStore};
use sunset_outcome::Shutdown;
use tokio_postgres::Client;

use crate::catalog::Backfill;
use crate::connect::{apply_timeouts, connect};
use crate::error::Error;
use crate::health::HealthReader;
use crate::sql::ident;
use crate::statements;
use crate::stats::Stats;
use crate::throttle::{self, HealthGate};
use crate::{coverage, schema};

pub use crate::validate::{
    SourceCount, TypeCount, Validation, record as record_validation, validate,
};

/// How often rollback re-reads the health signals (as often as a run's monitor does).
const HEALTH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

/// A run as another terminal sees it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    pub run: String,
    pub state: String,
    /// Why the run waits (operator pause or a health signal), as its heartbeat last said.
    pub throttle: Option<String>,
    pub batch_size: Option<i32>,
    pub total_rows: i64,
    pub rows_seen: i64,
    pub rows_changed: i64,
    pub ranges: i64,
    pub ranges_done: i64,
    /// Ranges leased by a live worker right now.
    pub workers: i64,
    pub journal_entries: i64,
    pub updated_at: DateTime<Utc>,
}

pub async fn status(client: &mut Client, run: &str) -> Result<Option<Status>, Error> {
    schema::ensure(client).await?;
    let row = client
        .query_opt(
            "SELECT r.state, r.throttle, r.batch_size, r.total_rows, r.updated_at,
                    COALESCE(sum(g.rows_seen), 0)::bigint, COALESCE(sum(g.rows_changed), 0)::bigint,
                    count(g.range_no), count(g.range_no) FILTER (WHERE g.state = 'done'),
                    count(g.range_no) FILTER (WHERE g.state = 'leased'
                        AND EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = g.leased_backend)),
                    (SELECT COALESCE(sum(cardinality(j.old_values)), 0)::bigint FROM sunset.backfill_undo j WHERE j.run = r.run)
             FROM sunset.backfill_runs r LEFT JOIN sunset.backfill_ranges g ON g.run = r.run
             WHERE r.run = $1
             GROUP BY r.run, r.state, r.throttle, r.batch_size, r.total_rows, r.updated_at",
            &[&run],
        )
        .await
        .map_err(Error::db("reading the run's status"))?;
    Ok(row.map(|row| Status {
        run: run.to_owned(),
        state: row.get(0),
        throttle: row.get(1),
        batch_size: row.get(2),
        total_rows: row.get(3),
        updated_at: row.get(4),
        rows_seen: row.get(5),
        rows_changed: row.get(6),
        ranges: row.get(7),
        ranges_done: row.get(8),
        workers: row.get(9),
        journal_entries: row.get(10),
    }))
}

/// Sets the control row's state (`paused`, `running`, `cancelling`); a running run picks it up
/// before its next batch.
pub async fn set_state(client: &mut Client, run: &str, state: &str) -> Result<(), Error> {
    schema::ensure(client).await?;
    let updated = client
        .execute(
            "UPDATE sunset.backfill_runs SET state = $2, updated_at = now() WHERE run = $1 AND state IN ('running', 'paused', 'cancelling')",
            &[&run, &state],
        )
        .await
        .map_err(Error::db("updating the control row"))?;
    if updated == 0 {
        return Err(Error::BadInput(format!(
            "there is no active run `{run}` (never started, finished, or rolled back)"
        )));
    }
    Ok(())
}

/// Replays the undo journal, newest batch first, with the run's timeouts and retries, restoring
/// the exact old values; then removes the coverage trigger and the run's state.
pub async fn rollback(
    url: &str,
    backfill: &Backfill,
    stats: Arc<Stats>,
    shutdown: Shutdown,
) -> Result<(), Error> {
    let mut client = connect(url).await?;
    // The run's health gate, probe included (measured before anything is written).
    let mut gate = HealthGate::new(&backfill.throttle);
    let mut reader = HealthReader::new(backfill);
    if let Some(baseline) = reader.baseline(&client).await? {
        gate.set_baseline(baseline);
    }
    schema::ensure(&mut client).await?;
    let lock = PgRunLock::acquire(url, &backfill.run).await?;
    apply_timeouts(&client, backfill).await?;
    // The planner cannot see how many entries an undo row holds (it guesses 1,000) and picks a
    // hash join over a full scan of the table for every step: 56 s instead of 3 s for 100k rows.
    // This session only replays undo rows, each a few thousand keys at most: index lookups win.
    client
        .batch_execute("SET enable_hashjoin = off; SET enable_mergejoin = off")
        .await
        .map_err(Error::db("setting the rollback's join strategy"))?;
    let remaining: i64 = client
        .query_one(
            "SELECT COALESCE(sum(cardinality(old_values)), 0)::bigint FROM sunset.backfill_undo WHERE run = $1",
            &[&backfill.run],
        )
        .await
        .map_err(Error::db("counting journal entries"))?
        .get(0);
    stats.total_rows.store(
        u64::try_from(remaining).unwrap_or_default(),
        std::sync::atomic::Ordering::Relaxed,
    );
    // Stop writers first: after this the trigger no longer sets the type of new rows.
    coverage::remove(&client, backfill).await?;
    // The run ends here, before the replay: an interrupted rollback is resumed by running it
    // again, and a `run` after one starts afresh (its journal entries replay before the older
    // ones, so a later rollback still ends at the original values).
    let transaction = client
        .transaction()
        .await
        .map_err(Error::db("beginning the rollback"))?;
    transaction
        .execute(
            "DELETE FROM sunset.backfill_ranges WHERE run = $1",
            &[&backfill.run],
        )
        .await
        .map_err(Error::db("removing the run's ranges"))?;
    transaction
        .execute("UPDATE sunset.backfill_runs SET state = 'rolled_back', throttle = NULL, updated_at = now() WHERE run = $1", &[&backfill.run])
        .await
        .map_err(Error::db("marking the run rolled back"))?;
    let store = PgStore::open_existing(&backfill.run);
    store.clear(&transaction).await?;
    transaction
        .commit()
        .await
        .map_err(Error::db("committing the start of the rollback"))?;
    // Each step replays one undo row: one batch of the original run, sized by its controller.
    // The health gate of the run applies: every signal that pauses a run pauses the replay.
    let mut health_checked: Option<Instant> = None;
    let mut attempt = 0;
    loop {
        if shutdown.is_requested() {
            lock.release().await?;
            return Err(Error::Stopped(
                "rollback stopped on request after the current batch; run it again to resume"
                    .to_owned(),
            ));
        }
        if health_checked.is_none_or(|at| at.elapsed() >= HEALTH_INTERVAL) {
            health_checked = Some(Instant::now());
            let health = reader.read(&client).await;
            stats.set_health(health);
            let wait = gate.update(health).cloned();
            let waiting = wait.is_some();
            stats.set_throttle(wait);
            if waiting {
                tokio::time::sleep(HEALTH_INTERVAL).await;
                continue;
            }
        }
        let (sql, params) = statements::rollback_batch(backfill);
        let started = Instant::now();
        match client.query_one(&sql, &params.refs()).await {
            Ok(row) => {
                attempt = 0;
                let replayed = u64::try_from(row.get::<_, i64>(0)).unwrap_or_default();
                let restored = u64::try_from(row.get::<_, i64>(1)).unwrap_or_default();
                stats.record_batch(replayed, restored, replayed, started.elapsed());
                if replayed == 0 {
                    break;
                }
            }
            Err(error) => {
                let code = error.code().map(|c| c.code().to_owned());
                match code {
                    Some(code)
                        if throttle::is_retryable(&code) && attempt < throttle::MAX_RETRIES =>
                    {
                        stats
                            .retries
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tokio::time::sleep(throttle::backoff(attempt)).await;
                        attempt += 1;
                    }
                    _ => {
                        return Err(Error::Database {
                            context: "replaying the undo journal".into(),
                            cause: error,
                        });
                    }
                }
            }
        }
    }
    lock.release().await?;
    Ok(())
}

/// What `finish` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Finished {
    pub constraint: String,
    pub already_not_null: bool,
}

/// Makes the discriminator NOT NULL without a long exclusive lock: `CHECK (...) NOT VALID` (brief
/// lock), `VALIDATE CONSTRAINT` (no write lock), then `SET NOT NULL`, which PostgreSQL 12+ proves
/// from the valid constraint without scanning; the redundant check is dropped afterwards.
/// Refuses while `validate` finds a problem.
pub async fn finish(
    client: &Client,
    backfill: &Backfill,
) -> Result<Result<Finished, Validation>, Error> {
    let validation = validate(client, backfill).await?;
    if !validation.passed() {
        return Ok(Err(validation));
    }
    let disc = ident(&backfill.discriminator.name);
    let table = backfill.table.quoted();
    let constraint: String = format!(
        "{}_{}_not_null",
        backfill.table.name, backfill.discriminator.name
    )
    .chars()
    .take(63)
    .collect();
    let already: bool = client
        .query_one(
            "SELECT attnotnull FROM pg_attribute WHERE attrelid = $1 AND attname = $2",
            &[&backfill.table.oid, &backfill.discriminator.name],
        )
        .await
        .map_err(Error::db("reading the discriminator's nullability"))?
        .get(0);
    if !already {
        // Rows outside the plan's `where` are not the backfill's to fix, but NOT NULL covers them.
        let untyped: i64 = client
            .query_one(
                &format!("SELECT count(*) FROM {table} WHERE {disc} IS NULL"),
                &[],
            )
            .await
            .map_err(Error::db("counting rows without a type"))?
            .get(0);
        if untyped > 0 {
            return Err(Error::Refused(format!(
                "{untyped} rows of `{}` have no `{}` (outside the plan's `where`, so the backfill left them alone); \
                 NOT NULL would fail: give them a type or delete them, then run `finish` again",
                backfill.table.display(),
                backfill.discriminator.name
            )));
        }
        apply_timeouts(client, backfill).await?;
        let constraint_q = ident(&constraint);
        for (what, sql) in [
            (
                "adding the NOT VALID check",
                format!(
                    "ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {constraint_q}; ALTER TABLE {table} ADD CONSTRAINT {constraint_q} CHECK ({disc} IS NOT NULL) NOT VALID"
                ),
            ),
            (
                "validating the check",
                format!("ALTER TABLE {table} VALIDATE CONSTRAINT {constraint_q}"),
            ),
            (
                "setting NOT NULL",
                format!("ALTER TABLE {table} ALTER COLUMN {disc} SET NOT NULL"),
            ),
            (
                "dropping the redundant check",
                format!("ALTER TABLE {table} DROP CONSTRAINT {constraint_q}"),
            ),
        ] {
            if let Err(error) = client.batch_execute(&sql).await {
                // Leave no half-made constraint behind (a row may have lost its type meanwhile).
                let _ = client
                    .batch_execute(&format!(
                        "ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {constraint_q}"
                    ))
                    .await;
                return Err(Error::db(what)(error));
            }
        }
    }
    Ok(Ok(Finished {
        constraint,
        already_not_null: already,
    }))
}
