//! The operator commands around a run: `status`, `pause`/`resume`/`cancel` (through the control
//! row, which any psql session can also update), `validate`, `rollback` and `finish`.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use sunset_checkpoint::{PgRunLock, PgStore};
use sunset_outcome::Shutdown;
use sunset_plan::format::Unmapped;
use tokio_postgres::Client;

use crate::catalog::{Backfill, InPlace, Mode, Source};
use crate::connect::{apply_timeouts, connect};
use crate::error::Error;
use crate::preflight;
use crate::runner::read_health;
use crate::sql::{Params, ident};
use crate::statements::{self, KeyText};
use crate::stats::Stats;
use crate::throttle::{self, HealthGate};
use crate::{coverage, schema};

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

/// One line of `validate`'s per-type report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TypeCount {
    pub legacy: Option<String>,
    pub found: Option<String>,
    /// What the map says the type should be (`None`: left alone by `unmapped: skip`/`fail`).
    pub expected: Option<String>,
    pub rows: i64,
}

/// One line of `validate`'s per-source report (copy mode).
#[derive(Debug, Clone, serde::Serialize)]
pub struct SourceCount {
    pub source: String,
    pub type_name: String,
    /// Source rows in scope.
    pub rows: i64,
    /// Of those, rows whose key the STI table lacks.
    pub missing: i64,
    /// Of those, rows whose key the STI table has with another type.
    pub mismatched: i64,
    /// Rows this run copied whose values now differ from what their source row maps to.
    pub differing: i64,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Validation {
    /// In place: rows per (legacy value, type found).
    pub counts: Vec<TypeCount>,
    /// Copy: one line per source.
    pub sources: Vec<SourceCount>,
    /// Rows whose type is not the one their legacy value (or source) says.
    pub mismatched: i64,
    /// Rows left without a type that should have one.
    pub untyped: i64,
    /// Copy: source rows with no row in the STI table.
    pub missing: i64,
    /// In place without `overwrite`: rows that have another type than the mapping's and keep
    /// it (the run leaves them alone); listed, not a failure.
    pub kept: i64,
    /// The first of those, in key order.
    pub kept_keys: Vec<KeyText>,
    /// Copy: rows the run copied whose mapped columns differ from their source row's values.
    pub differing: i64,
    /// The first of those: the STI key and the columns that differ.
    pub differing_rows: Vec<(KeyText, Vec<String>)>,
    /// The first offending keys (of the STI table), in key order.
    pub offending_keys: Vec<KeyText>,
}

impl Validation {
    pub fn passed(&self) -> bool {
        self.mismatched == 0 && self.untyped == 0 && self.missing == 0 && self.differing == 0
    }
}

/// In place: per-type counts against the legacy column and no row left without a type. Copy:
/// every source row in scope has its row in the STI table with the source's type, and no STI row
/// is left without a type.
pub async fn validate(client: &Client, backfill: &Backfill) -> Result<Validation, Error> {
    match &backfill.mode {
        Mode::InPlace(in_place) => validate_in_place(client, backfill, in_place).await,
        Mode::Copy(sources) => validate_copy(client, backfill, sources).await,
    }
}

async fn validate_copy(
    client: &Client,
    backfill: &Backfill,
    sources: &[Source],
) -> Result<Validation, Error> {
    let mut validation = Validation::default();
    let table = backfill.table.quoted();
    let disc = backfill.discriminator.on("t");
    let t_tuple = backfill.target().key_tuple("t");
    let m_tuple = preflight::mapped_tuple(backfill);
    let m_texts = (0..backfill.key.len())
        .map(|i| format!("m.k{i}::text"))
        .collect::<Vec<_>>()
        .join(", ");
    for source in sources {
        let mut params = Params::default();
        let type_name = params.bind(Some(&source.type_name), "text");
        let mapped = preflight::mapped_keys(backfill, source);
        let joined = format!("({mapped}) m LEFT JOIN {table} t ON {t_tuple} = {m_tuple}");
        let row = client
            .query_one(
                &format!(
                    "SELECT count(*), count(*) FILTER (WHERE t.ctid IS NULL),
                            count(*) FILTER (WHERE t.ctid IS NOT NULL AND {disc}::text IS DISTINCT FROM {type_name})
                     FROM {joined}"
                ),
                &params.refs(),
            )
            .await
            .map_err(|e| crate::queries::plan_sql_error(&source.walk, e, "comparing a source with the STI table"))?;
        let (differing, differing_rows) = compare_copied_values(client, backfill, source).await?;
        validation.differing += differing;
        for row in differing_rows {
            if validation.differing_rows.len() < 10 {
                validation.differing_rows.push(row);
            }
        }
        let count = SourceCount {
            source: source.walk.table.display(),
            type_name: source.type_name.clone(),
            rows: row.get(0),
            missing: row.get(1),
            mismatched: row.get(2),
            differing,
        };
        validation.missing += count.missing;
        validation.mismatched += count.mismatched;
        if (count.missing > 0 || count.mismatched > 0) && validation.offending_keys.len() < 10 {
            let rows = client
                .query(
                    &format!(
                        "SELECT ARRAY[{m_texts}] FROM {joined}
                         WHERE t.ctid IS NULL OR {disc}::text IS DISTINCT FROM {type_name}
                         ORDER BY {m_tuple} LIMIT 10"
                    ),
                    &params.refs(),
                )
                .await
                .map_err(Error::db("finding offending keys"))?;
            validation
                .offending_keys
                .extend(rows.iter().map(|r| r.get::<_, KeyText>(0)));
            validation.offending_keys.truncate(10);
        }
        validation.sources.push(count);
    }
    validation.untyped = client
        .query_one(
            &format!("SELECT count(*) FROM {table} t WHERE {disc} IS NULL"),
            &[],
        )
        .await
        .map_err(Error::db("counting rows without a type"))?
        .get(0);
    Ok(validation)
}

/// Every mapped column of every row this run copied from `source` (its keys in the journal),
/// against the value the mapping computes from the source row now: the count, and the first ten
/// rows with the columns that differ. Rows the STI table held before the run are not the run's,
/// and are left out.
async fn compare_copied_values(
    client: &Client,
    backfill: &Backfill,
    source: &Source,
) -> Result<(i64, Vec<(KeyText, Vec<String>)>), Error> {
    let table = backfill.table.quoted();
    let mut params = Params::default();
    let run = params.bind(Some(&backfill.run), "text");
    let mapped: Vec<String> = source
        .columns
        .iter()
        .enumerate()
        .map(|(i, (column, sql))| format!("CAST({sql} AS {}) AS c{i}", column.sql_type))
        .chain(backfill.key.iter().enumerate().map(|(i, c)| {
            format!(
                "CAST({} AS {}) AS k{i}",
                source.value_of(&c.name),
                c.sql_type
            )
        }))
        .collect();
    let journal_key = (0..backfill.key.len())
        .map(|i| format!("m.k{i}::text"))
        .collect::<Vec<_>>()
        .join(", ");
    let differs: Vec<String> = source
        .columns
        .iter()
        .enumerate()
        .map(|(i, (column, _))| format!("{} IS DISTINCT FROM m.c{i}", column.on("t")))
        .collect();
    if differs.is_empty() {
        return Ok((0, Vec::new()));
    }
    let named: Vec<String> = source
        .columns
        .iter()
        .zip(&differs)
        .map(|((column, _), differ)| {
            format!(
                "CASE WHEN {differ} THEN {} END",
                crate::sql::literal(&column.name)
            )
        })
        .collect();
    let joined = format!(
        "(SELECT {} FROM {} s{}) m
         JOIN (SELECT DISTINCT key FROM sunset.backfill_journal WHERE run = {run}) j
           ON j.key = jsonb_build_array({journal_key})
         JOIN {table} t ON {} = {}",
        mapped.join(", "),
        source.walk.table.quoted(),
        source.walk.where_clause(),
        backfill.target().key_tuple("t"),
        preflight::mapped_tuple(backfill),
    );
    let any_differs = differs.join(" OR ");
    let count: i64 = client
        .query_one(
            &format!("SELECT count(*) FILTER (WHERE {any_differs}) FROM {joined}"),
            &params.refs(),
        )
        .await
        .map_err(|e| {
            crate::queries::plan_sql_error(
                &source.walk,
                e,
                "comparing copied values with their sources",
            )
        })?
        .get(0);
    if count == 0 {
        return Ok((0, Vec::new()));
    }
    let rows = client
        .query(
            &format!(
                "SELECT ARRAY[{journal_key}], array_remove(ARRAY[{}]::text[], NULL) FROM {joined}
                 WHERE {any_differs} ORDER BY {} LIMIT 10",
                named.join(", "),
                preflight::mapped_tuple(backfill),
            ),
            &params.refs(),
        )
        .await
        .map_err(Error::db("finding the copied rows that differ"))?;
    Ok((count, rows.iter().map(|r| (r.get(0), r.get(1))).collect()))
}

/// The first ten keys, in key order, of the rows in scope where `condition(expected, disc)`
/// holds: `expected` is the SQL of the type the mapping gives the row, `disc` its type now.
async fn first_keys(
    client: &Client,
    backfill: &Backfill,
    in_place: &InPlace,
    what: &'static str,
    condition: impl Fn(&str, &str) -> String,
) -> Result<Vec<KeyText>, Error> {
    let mut params = Params::default();
    let expected = statements::type_expression(in_place, &backfill.discriminator, &mut params, "t");
    let condition = condition(&expected, &backfill.discriminator.on("t"));
    let rows = client
        .query(
            &format!(
                "SELECT ARRAY[{}] FROM {} t WHERE {condition}{} ORDER BY {} LIMIT 10",
                backfill.key_texts("t"),
                backfill.table.quoted(),
                backfill.and_filter(),
                backfill.key_list("t"),
            ),
            &params.refs(),
        )
        .await
        .map_err(Error::db(what))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

async fn validate_in_place(
    client: &Client,
    backfill: &Backfill,
    in_place: &InPlace,
) -> Result<Validation, Error> {
    let table = backfill.table.quoted();
    let filter = backfill
        .filter
        .as_deref()
        .map(|f| format!(" WHERE ({f})"))
        .unwrap_or_default();
    let rows = client
        .query(
            &format!(
                "SELECT {from}::text, {disc}::text, count(*) FROM {table} t{filter} GROUP BY 1, 2 ORDER BY 1 NULLS FIRST, 2 NULLS FIRST",
                from = in_place.from.on("t"),
                disc = backfill.discriminator.on("t"),
            ),
            &[],
        )
        .await
        .map_err(Error::db("counting types per legacy value"))?;
    let expected_for = |legacy: Option<&str>| -> Option<String> {
        legacy
            .and_then(|l| {
                in_place
                    .map
                    .iter()
                    .find(|(k, _)| k == l)
                    .map(|(_, v)| v.clone())
            })
            .or_else(|| match &in_place.unmapped {
                Unmapped::Default(type_name) => Some(type_name.to_string()),
                Unmapped::Fail | Unmapped::Skip => None,
            })
    };
    let mut validation = Validation::default();
    for row in rows {
        let (legacy, found, count): (Option<String>, Option<String>, i64) =
            (row.get(0), row.get(1), row.get(2));
        let expected = expected_for(legacy.as_deref());
        match (&expected, &found) {
            (Some(e), Some(f)) if e != f && !in_place.overwrite => validation.kept += count,
            (Some(e), Some(f)) if e != f => validation.mismatched += count,
            (Some(_), None) => validation.untyped += count,
            (None, None) if in_place.unmapped == Unmapped::Fail => validation.untyped += count,
            _ => {}
        }
        validation.counts.push(TypeCount {
            legacy,
            found,
            expected,
            rows: count,
        });
    }
    if !validation.passed() {
        let fail_mode = in_place.unmapped == Unmapped::Fail;
        validation.offending_keys = first_keys(client, backfill, in_place, "finding offending keys", |expected, disc| {
            format!("((({expected}) IS NOT NULL AND {disc} IS DISTINCT FROM ({expected})) OR ({disc} IS NULL AND {fail_mode}))")
        })
        .await?;
    }
    if validation.kept > 0 {
        validation.kept_keys = first_keys(
            client,
            backfill,
            in_place,
            "finding the rows that keep another type",
            |expected, disc| format!("{disc}::text <> ({expected})::text"),
        )
        .await?;
    }
    Ok(validation)
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
    // The health gate of the run applies: replication lag, long transactions and lock waiters
    // pause the replay as they pause a run.
    let mut gate = HealthGate::new(&backfill.throttle);
    let oids = backfill.touched_tables();
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
            let reason = gate
                .update(read_health(&client, &oids).await)
                .map(str::to_owned);
            let waiting = reason.is_some();
            stats.set_throttle(reason);
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
