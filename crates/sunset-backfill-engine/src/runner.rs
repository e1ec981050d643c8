//! `run`: initializes a run (upper bound, key ranges, coverage trigger, checkpoint) in one
//! transaction, then workers lease ranges and process them batch by batch.
//!
//! Exactly-once: each batch commits in ONE transaction with its range's progress row
//! (`done_upto`, the per-range checkpoint) and its journal entries. A SIGKILL at any point leaves
//! either the whole batch or none of it; the resumed run continues after `done_upto`.
//!
//! Longer than ~600 lines: initialization, the lock guard, the monitor and the worker loop share
//! the exactly-once invariant and are read together.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{StreamExt, TryStreamExt, stream::FuturesOrdered};
use serde::{Deserialize, Serialize};
use sunset_checkpoint::{PgRunLock, PgStore};
use sunset_outcome::Shutdown;
use tokio::sync::watch;
use tokio_postgres::Client;

use crate::catalog::Backfill;
use crate::connect::{apply_timeouts, connect};
use crate::error::Error;
use crate::health::HealthReader;
use crate::queries::{largest_key, split};
use crate::statements::{self, KeyText, Lower};
use crate::stats::{RecordedValidation, Stats};
use crate::throttle::{self, BatchController, HealthGate, Pacer, Wait};
use crate::{coverage, schema};

/// The run-level checkpoint (the per-range progress lives in `sunset.backfill_ranges`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunCheckpoint {
    /// Per walked table, the largest key at start: the run never chases rows inserted beyond it
    /// (new rows are covered by the trigger or the application), so it always ends.
    uppers: Vec<Option<KeyText>>,
    ranges: u32,
}

#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    /// Workers in this process.
    pub workers: usize,
    /// Join a run another process coordinates, instead of taking its lock.
    pub join: bool,
    /// Discard the progress of a run whose plan changed (the journal is kept for rollback).
    pub restart: bool,
    /// The rows in scope if preflight just counted them (the total for progress), to save a
    /// second pass over the table.
    pub rows_in_scope: Option<i64>,
}

/// What workers see of the run's control row and health, refreshed by the monitor.
#[derive(Debug, Clone, Default, PartialEq)]
struct Control {
    /// Why to wait before the next batch (operator pause or a health signal).
    wait: Option<String>,
    cancel: bool,
}

/// Runs (or resumes) a backfill until every range is done; [`Error::Stopped`] when it was asked
/// to stop (Ctrl-C, SIGTERM, `cancel`) or when only other processes' leases remain (`--join`).
pub async fn run(
    url: &str,
    backfill: &Backfill,
    options: RunOptions,
    stats: Arc<Stats>,
    shutdown: Shutdown,
) -> Result<(), Error> {
    let mut client = connect(url).await?;
    // Before anything is written: a probe that fails is bad input, and its latency now is
    // what `max_probe_slowdown` compares with.
    let mut health = HealthReader::new(backfill);
    let baseline = health.baseline(&client).await?;
    schema::ensure(&mut client).await?;
    let lock = if options.join {
        None
    } else {
        Some(PgRunLock::acquire(url, &backfill.run).await?)
    };
    let store = PgStore::open(&mut client, &backfill.run).await?;
    let checkpoint = store
        .resume::<RunCheckpoint>(&client, &backfill.fingerprint, options.restart)
        .await?;
    let checkpoint = match checkpoint {
        Some(checkpoint) => checkpoint.state,
        None if options.join => {
            return Err(Error::BadInput(format!(
                "there is no run `{}` to join: start it without --join first",
                backfill.run
            )));
        }
        None => initialize(&mut client, &store, backfill, options.rows_in_scope).await?,
    };
    tracing::info!(run = %backfill.run, ranges = checkpoint.ranges, "run ready");
    client
        .execute("UPDATE sunset.backfill_runs SET state = 'running', updated_at = now() WHERE run = $1 AND state IN ('cancelling', 'done')", &[&backfill.run])
        .await
        .map_err(Error::db("marking the run as running"))?;
    let progress = client
        .query_one(
            "SELECT r.total_rows, COALESCE(sum(g.rows_seen), 0)::bigint, COALESCE(sum(g.rows_changed), 0)::bigint
             FROM sunset.backfill_runs r LEFT JOIN sunset.backfill_ranges g ON g.run = r.run
             WHERE r.run = $1 GROUP BY r.total_rows",
            &[&backfill.run],
        )
        .await
        .map_err(Error::db("reading the run's progress"))?;
    let as_u64 = |i: usize| u64::try_from(progress.get::<_, i64>(i)).unwrap_or_default();
    stats
        .total_rows
        .store(as_u64(0), std::sync::atomic::Ordering::Relaxed);
    stats
        .rows_seen
        .store(as_u64(1), std::sync::atomic::Ordering::Relaxed);
    stats
        .rows_changed
        .store(as_u64(2), std::sync::atomic::Ordering::Relaxed);
    stats
        .batch_size
        .store(backfill.batch.size, std::sync::atomic::Ordering::Relaxed);

    // Workers stop when the caller asks or when the run lock is lost.
    let lock = lock.map(Arc::new);
    let lock_lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let worker_shutdown = Shutdown::new();
    if shutdown.is_requested() {
        worker_shutdown.request();
    }
    let guard = tokio::spawn(guard_lock(
        lock.clone(),
        shutdown,
        worker_shutdown.clone(),
        lock_lost.clone(),
    ));
    let (control_tx, control_rx) = watch::channel(Control::default());
    let mut gate = HealthGate::new(&backfill.throttle);
    if let Some(baseline) = baseline {
        gate.set_baseline(baseline);
    }
    let monitor = tokio::spawn(monitor(
        client,
        Arc::new(backfill.clone()),
        (health, gate),
        stats.clone(),
        control_tx,
    ));
    let backfill = Arc::new(backfill.clone());
    let pacer = Arc::new(Pacer::new(&backfill.throttle));
    let mut workers = Vec::new();
    for number in 0..options.workers.max(1) {
        let worker = Worker {
            id: format!("{}:{}:{number}", gethost(), std::process::id()),
            backfill: backfill.clone(),
            stats: stats.clone(),
            control: control_rx.clone(),
            pacer: pacer.clone(),
            shutdown: worker_shutdown.clone(),
            statements: std::collections::HashMap::new(),
        };
        let url = url.to_owned();
        workers.push(tokio::spawn(async move { worker.run(&url).await }));
    }
    let mut first_error = None;
    let mut stopped = false;
    for handle in workers {
        match handle.await {
            Ok(Ok(WorkerEnd::Finished)) => {}
            Ok(Ok(WorkerEnd::Stopped)) => stopped = true,
            Ok(Err(error)) => {
                stats
                    .errors
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                first_error.get_or_insert(error);
            }
            Err(join) => {
                first_error.get_or_insert(Error::Internal(format!("a worker crashed: {join}")));
            }
        }
    }
    monitor.abort();
    guard.abort();
    if lock_lost.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(Error::LockLost(backfill.run.clone()));
    }
    if let Some(error) = first_error {
        return Err(error);
    }
    let client = connect(url).await?;
    let remaining: i64 = client
        .query_one(
            "SELECT count(*) FROM sunset.backfill_ranges WHERE run = $1 AND state <> 'done'",
            &[&backfill.run],
        )
        .await
        .map_err(Error::db("checking the remaining ranges"))?
        .get(0);
    if let Some(lock) = lock.and_then(|lock| Arc::try_unwrap(lock).ok()) {
        lock.release().await?;
    }
    if remaining == 0 {
        if matches!(backfill.mode, crate::catalog::Mode::Copy(_)) {
            advance_sequences(&client, &backfill.table).await?;
        }
        client
            .execute("UPDATE sunset.backfill_runs SET state = 'done', throttle = NULL, updated_at = now() WHERE run = $1", &[&backfill.run])
            .await
            .map_err(Error::db("marking the run done"))?;
        Ok(())
    } else if stopped {
        Err(Error::Stopped(
            "the batches in flight committed and the checkpoint is saved; run the same command again to resume"
                .to_owned(),
        ))
    } else {
        // Only other processes' leases remain (joined workers): they will finish those ranges.
        Err(Error::Stopped(format!(
            "no range of run `{}` is left to lease here: the other processes of the run are finishing theirs",
            backfill.run
        )))
    }
}

/// Copied rows carry their own keys; the STI table's serial and identity sequences must then
/// move past them, or the application's next insert collides with a copied row.
async fn advance_sequences(client: &Client, table: &crate::catalog::TableRef) -> Result<(), Error> {
    let statements = client
        .query(
            "SELECT format('SELECT setval(%L, GREATEST((SELECT max(%I) FROM %s), (SELECT last_value FROM %s)))',
                           s.oid::regclass, a.attname, t.oid::regclass, s.oid::regclass)
             FROM pg_class t
             JOIN pg_depend d ON d.refobjid = t.oid AND d.refclassid = 'pg_class'::regclass
                             AND d.classid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
             JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
             JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid
             WHERE t.oid = $1",
            &[&table.oid],
        )
        .await
        .map_err(Error::db("finding the sequences of the STI table"))?;
    for row in statements {
        let statement: String = row.get(0);
        client
            .batch_execute(&statement)
            .await
            .map_err(Error::db("moving a sequence past the copied keys"))?;
    }
    Ok(())
}

fn gethost() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

/// Fresh start: in one transaction, the upper bound, the key ranges, the control row, the
/// coverage trigger and the run checkpoint, so a crash here leaves nothing half-made.
async fn initialize(
    client: &mut Client,
    store: &PgStore,
    backfill: &Backfill,
    rows_in_scope: Option<i64>,
) -> Result<RunCheckpoint, Error> {
    // The trigger commits before the upper bound is read: its lock waits for in-flight inserts,
    // so every row is either visible to that read or inserted later, through the trigger.
    install_coverage(client, backfill).await?;
    let transaction = client
        .transaction()
        .await
        .map_err(Error::db("beginning the run setup"))?;
    for table in ["backfill_ranges", "backfill_runs"] {
        transaction
            .execute(
                &format!("DELETE FROM sunset.{table} WHERE run = $1"),
                &[&backfill.run],
            )
            .await
            .map_err(Error::db("clearing a restarted run"))?;
    }
    let mut ranges = 0u32;
    let mut uppers = Vec::new();
    let mut total = 0i64;
    for (walk_no, walk) in backfill.walks().iter().enumerate() {
        let upper = largest_key(&transaction, walk).await?;
        if let Some(upper) = &upper {
            let mut lower: Option<KeyText> = None;
            for hi in split(&transaction, walk, upper).await? {
                transaction
                    .execute(
                        "INSERT INTO sunset.backfill_ranges (run, range_no, walk, lo, hi) VALUES ($1, $2, $3, $4, $5)",
                        &[
                            &backfill.run,
                            &(i32::try_from(ranges).unwrap_or(i32::MAX)),
                            &(i32::try_from(walk_no).unwrap_or(i32::MAX)),
                            &lower.as_ref().map(|l| serde_json::json!(l)),
                            &serde_json::json!(hi),
                        ],
                    )
                    .await
                    .map_err(Error::db("recording a key range"))?;
                lower = Some(hi);
                ranges += 1;
            }
        }
        uppers.push(upper);
        if rows_in_scope.is_none() {
            total += crate::queries::count_in_scope(&transaction, walk).await?;
        }
    }
    let total = rows_in_scope.unwrap_or(total);
    transaction
        .execute(
            "INSERT INTO sunset.backfill_runs (run, total_rows) VALUES ($1, $2)",
            &[&backfill.run, &total],
        )
        .await
        .map_err(Error::db("creating the control row"))?;
    let checkpoint = RunCheckpoint { uppers, ranges };
    store
        .save(&transaction, &backfill.fingerprint, &checkpoint)
        .await?;
    transaction
        .commit()
        .await
        .map_err(Error::db("committing the run setup"))?;
    Ok(checkpoint)
}

/// Installs the coverage trigger in a short transaction of its own, bounded by the plan's
/// `lock_timeout` (CREATE TRIGGER must not queue the application's writes behind it for long).
async fn install_coverage(client: &mut Client, backfill: &Backfill) -> Result<(), Error> {
    let mut attempt = 0;
    loop {
        let transaction = client
            .transaction()
            .await
            .map_err(Error::db("beginning the coverage setup"))?;
        transaction
            .batch_execute(&crate::connect::timeouts_sql(backfill, true, false))
            .await
            .map_err(Error::db("setting the coverage setup's lock timeout"))?;
        let installed = coverage::install(&transaction, backfill).await;
        match installed {
            Ok(()) => {
                return transaction
                    .commit()
                    .await
                    .map_err(Error::db("committing the coverage trigger"));
            }
            Err(error)
                if error.sqlstate().is_some_and(throttle::is_retryable)
                    && attempt < throttle::MAX_RETRIES =>
            {
                drop(transaction);
                tokio::time::sleep(throttle::backoff(attempt)).await;
                attempt += 1;
            }
            Err(error) => return Err(error),
        }
    }
}

/// Polls the control row and the health signals, publishes them to the workers, and writes a
/// heartbeat (throttle reason, batch size) that `status` shows in another terminal. With the
/// control row it reads the verdict `validate` last recorded; every few seconds, the journal's
/// size against the changes made, for the metrics.
async fn monitor(
    client: Client,
    backfill: Arc<Backfill>,
    (mut reader, mut gate): (HealthReader, HealthGate),
    stats: Arc<Stats>,
    control: watch::Sender<Control>,
) {
    let mut ledger_due: Option<std::time::Instant> = None;
    loop {
        // The control row, and the verdict `validate` last recorded on it.
        let row = client
            .query_opt(
                "SELECT state, validated_at, validation_failures FROM sunset.backfill_runs WHERE run = $1",
                &[&backfill.run],
            )
            .await
            .ok()
            .flatten();
        let state: Option<String> = row.as_ref().map(|row| row.get(0));
        if let Some(row) = &row {
            let recorded = row
                .get::<_, Option<chrono::DateTime<chrono::Utc>>>(1)
                .zip(row.get::<_, Option<i64>>(2))
                .map(|(at, failures)| RecordedValidation { at, failures });
            *stats.validation.lock().expect("stats lock") = recorded;
        }
        let health = reader.read(&client).await;
        stats.set_health(health);
        let health_wait = gate.update(health).cloned();
        let wait = match state.as_deref() {
            Some("paused") => Some(Wait::paused()),
            _ => health_wait,
        };
        let cancel = state.as_deref() == Some("cancelling");
        stats.set_throttle(wait.clone());
        let reason = wait.as_ref().map(|wait| wait.reason.clone());
        control.send_if_modified(|current| {
            let next = Control {
                wait: reason.clone(),
                cancel,
            };
            let changed = *current != next;
            *current = next;
            changed
        });
        let size = i32::try_from(Stats::get(&stats.batch_size)).unwrap_or(i32::MAX);
        let _ = client
            .execute(
                "UPDATE sunset.backfill_runs SET throttle = $2, batch_size = $3, updated_at = now() WHERE run = $1",
                &[&backfill.run, &reason, &size],
            )
            .await;
        if ledger_due.is_none_or(|at| std::time::Instant::now() >= at) {
            let started = std::time::Instant::now();
            read_ledger(&client, &backfill.run, &stats).await;
            // The count reads every journal row: on a large journal it waits longer, so that
            // it never takes more than 1% of the server's time.
            ledger_due = Some(started + LEDGER_INTERVAL.max(started.elapsed() * 100));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// How often (at most) the monitor counts the journal.
const LEDGER_INTERVAL: Duration = Duration::from_secs(5);

/// The run's journalled changes and the changes its ranges say were made, into `stats` (left as
/// they were when the read fails).
async fn read_ledger(client: &Client, run: &str, stats: &Stats) {
    let row = client
        .query_one(
            "SELECT (SELECT COALESCE(sum(cardinality(old_values)), 0)::bigint FROM sunset.backfill_undo WHERE run = $1),
                    (SELECT COALESCE(sum(rows_changed), 0)::bigint FROM sunset.backfill_ranges WHERE run = $1)",
            &[&run],
        )
        .await;
    match row {
        Ok(row) => {
            let as_u64 = |i: usize| u64::try_from(row.get::<_, i64>(i)).unwrap_or_default();
            stats
                .journal_rows
                .store(as_u64(0), std::sync::atomic::Ordering::Relaxed);
            stats
                .rows_changed_in_run
                .store(as_u64(1), std::sync::atomic::Ordering::Relaxed);
        }
        Err(error) => tracing::warn!(%error, "could not read the journal's size"),
    }
}

/// How often the run lock's session is checked, and how long it may take to answer.
const LOCK_CHECK_INTERVAL: Duration = Duration::from_secs(1);
const LOCK_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Passes the caller's shutdown on to the workers, and stops them too when the run lock's
/// session is gone: going on unlocked could let a second runner work the same ranges.
async fn guard_lock(
    lock: Option<Arc<PgRunLock>>,
    shutdown: Shutdown,
    workers: Shutdown,
    lost: Arc<std::sync::atomic::AtomicBool>,
) {
    loop {
        tokio::select! {
            () = shutdown.requested() => {
                workers.request();
                return;
            }
            () = tokio::time::sleep(LOCK_CHECK_INTERVAL) => {
                if let Some(lock) = &lock
                    && !lock.is_held(LOCK_CHECK_TIMEOUT).await
                {
                    tracing::error!(run = lock.run(), "the run lock's connection ended; stopping the workers after their batch");
                    lost.store(true, std::sync::atomic::Ordering::SeqCst);
                    workers.request();
                    return;
                }
            }
        }
    }
}

/// Batch statements a worker keeps in flight on its connection.
const PIPELINE_DEPTH: usize = 2;

enum WorkerEnd {
    /// No range left to lease.
    Finished,
    /// Asked to stop (shutdown or cancel).
    Stopped,
}

struct Worker {
    /// Recorded on leased ranges: host, pid and worker number.
    id: String,
    backfill: Arc<Backfill>,
    stats: Arc<Stats>,
    control: watch::Receiver<Control>,
    pacer: Arc<Pacer>,
    shutdown: Shutdown,
    /// Prepared statements of this worker's connection, by SQL text.
    statements: std::collections::HashMap<String, tokio_postgres::Statement>,
}

/// A leased key range: (lower exclusive, upper inclusive].
struct Lease {
    range_no: i32,
    /// Which of the run's walked tables the range belongs to.
    walk: usize,
    lower: Option<KeyText>,
    upper: KeyText,
}

impl Worker {
    async fn run(mut self, url: &str) -> Result<WorkerEnd, Error> {
        let client = connect(url).await?;
        apply_timeouts(&client, &self.backfill).await?;
        let mut controller = BatchController::new(&self.backfill.batch);
        loop {
            if let Some(end) = self.wait_until_allowed().await {
                return Ok(end);
            }
            let Some(mut lease) = self.lease(&client).await? else {
                if self.others_hold_leases(&client).await? {
                    // Another process's worker holds a range: wait in case it dies and its
                    // lease becomes ours to take over.
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
                return Ok(WorkerEnd::Finished);
            };
            if let Some(end) = self
                .process_range(&client, &mut controller, &mut lease)
                .await?
            {
                return Ok(end);
            }
        }
    }

    /// Waits while paused; `Some` when the worker must stop instead.
    async fn wait_until_allowed(&mut self) -> Option<WorkerEnd> {
        loop {
            if self.shutdown.is_requested() || self.control.borrow().cancel {
                return Some(WorkerEnd::Stopped);
            }
            let waiting = self.control.borrow().wait.is_some();
            if !waiting {
                return None;
            }
            // A closed channel resolves `changed()` at once: waiting on one would spin.
            tokio::select! {
                changed = self.control.changed() => {
                    if changed.is_err() {
                        tracing::warn!("the run's monitor stopped; stopping this worker (the checkpoint is intact)");
                        return Some(WorkerEnd::Stopped);
                    }
                }
                () = self.shutdown.requested() => {}
            }
        }
    }

    async fn lease(&self, client: &Client) -> Result<Option<Lease>, Error> {
        let row = client
            .query_opt(
                "UPDATE sunset.backfill_ranges r
                 SET state = 'leased', leased_by = $2, leased_backend = pg_backend_pid(), lease_until = now() + interval '60 seconds'
                 WHERE (r.run, r.range_no) = (
                     SELECT c.run, c.range_no FROM sunset.backfill_ranges c
                     WHERE c.run = $1 AND (c.state = 'pending' OR (c.state = 'leased' AND (
                         c.lease_until < now()
                         OR NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = c.leased_backend))))
                     ORDER BY c.range_no LIMIT 1
                     FOR UPDATE SKIP LOCKED)
                 RETURNING r.range_no, COALESCE(r.done_upto, r.lo), r.hi, r.walk",
                &[&self.backfill.run, &self.id],
            )
            .await
            .map_err(Error::db("leasing a key range"))?;
        Ok(row.map(|row| Lease {
            range_no: row.get(0),
            walk: usize::try_from(row.get::<_, i32>(3)).unwrap_or_default(),
            lower: row
                .get::<_, Option<serde_json::Value>>(1)
                .and_then(|v| serde_json::from_value(v).ok()),
            upper: serde_json::from_value(row.get(2)).unwrap_or_default(),
        }))
    }

    async fn others_hold_leases(&self, client: &Client) -> Result<bool, Error> {
        let row = client
            .query_one(
                "SELECT count(*) FROM sunset.backfill_ranges WHERE run = $1 AND state = 'leased' AND leased_backend <> pg_backend_pid()",
                &[&self.backfill.run],
            )
            .await
            .map_err(Error::db("checking other workers' leases"))?;
        Ok(row.get::<_, i64>(0) > 0)
    }

    /// Works through one leased range until it is done, the lease is lost (`None`), or the
    /// worker must stop (`Some`). Up to [`PIPELINE_DEPTH`] batch statements are in flight (one
    /// when the plan sets a pace, which rests after each batch): each
    /// continues from the progress the one before it committed, so the server never waits for
    /// the client between batches. Any statement may fail on its own (retryable errors shrink the
    /// batch and back off); the next continues from the last committed progress.
    async fn process_range(
        &mut self,
        client: &Client,
        controller: &mut BatchController,
        lease: &mut Lease,
    ) -> Result<Option<WorkerEnd>, Error> {
        let mut in_flight = FuturesOrdered::new();
        let mut attempt = 0;
        let mut last_result = Instant::now();
        // A paced run sends one statement at a time, so each batch's duration is its own.
        let depth = if self.pacer.is_active() {
            1
        } else {
            PIPELINE_DEPTH
        };
        let outcome = loop {
            // Only a statement that reads its start from the range row may follow another.
            let may_send = in_flight.is_empty() || lease.lower.is_some();
            if may_send && in_flight.len() < depth && self.allowed_now() {
                let size = controller.size();
                let lower = if lease.lower.is_some() {
                    Lower::Lease
                } else {
                    Lower::Open
                };
                let (sql, params) = statements::leased_batch(
                    &self.backfill,
                    lease.range_no,
                    lease.walk,
                    lower,
                    &lease.upper,
                    size,
                );
                let statement = self.prepared(client, &sql).await?;
                in_flight.push_back(async move {
                    let rows = client.query_raw(&statement, params.values).await;
                    let row = match rows {
                        Ok(rows) => {
                            let mut rows = std::pin::pin!(rows);
                            rows.try_next().await
                        }
                        Err(error) => Err(error),
                    };
                    (size, row)
                });
                if in_flight.len() < PIPELINE_DEPTH {
                    continue;
                }
            }
            let Some((size, row)) = in_flight.next().await else {
                // Nothing in flight: paused, cancelled or shutting down.
                if let Some(end) = self.wait_until_allowed().await {
                    break Ok(Some(end));
                }
                continue;
            };
            let row = match row {
                Ok(Some(row)) => row,
                Ok(None) => break Err(Error::Internal("a batch returned no row".into())),
                Err(error) => {
                    let error = Error::db("running a batch")(error);
                    match error.sqlstate() {
                        Some(code)
                            if throttle::is_retryable(code) && attempt < throttle::MAX_RETRIES =>
                        {
                            self.stats
                                .retries
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            tracing::warn!(
                                sqlstate = code,
                                attempt,
                                "batch failed, retrying smaller: {error}"
                            );
                            controller.shrink();
                            tokio::time::sleep(throttle::backoff(attempt)).await;
                            attempt += 1;
                            continue;
                        }
                        _ => break Err(error),
                    }
                }
            };
            let count = |i: usize| u64::try_from(row.get::<_, i64>(i)).unwrap_or_default();
            if count(0) == 0 {
                // Paused or cancelled: this statement changed nothing; neither will those
                // behind it. The monitor's view catches up within its poll interval.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            if count(1) == 0 || count(5) == 0 {
                // The range is done (by the statement before this one) or its lease was lost.
                break Ok(None);
            }
            attempt = 0;
            let (seen, changed) = (count(2), count(3));
            let took = last_result.elapsed();
            last_result = Instant::now();
            self.stats.record_batch(seen, changed, size, took);
            controller.observe(seen, took);
            if let Some(last) = row.get::<_, Option<serde_json::Value>>(4) {
                lease.lower = serde_json::from_value(last).ok();
            }
            // The plan's pace: rest before sending more, after a range's last batch too.
            let rest = self.pacer.rest_after(seen, took, Instant::now());
            if !rest.is_zero() {
                tokio::select! {
                    () = tokio::time::sleep(rest) => {}
                    () = self.shutdown.requested() => {}
                }
                last_result = Instant::now();
            }
            if seen < size {
                break Ok(None);
            }
        };
        // Statements already sent run anyway: wait for them, so none is left mid-flight when
        // the worker stops. Each changes nothing once the range is done or the run is held.
        while let Some((size, row)) = in_flight.next().await {
            if let Ok(Some(row)) = row {
                let count = |i: usize| u64::try_from(row.get::<_, i64>(i)).unwrap_or_default();
                if count(5) > 0 {
                    self.stats
                        .record_batch(count(2), count(3), size, last_result.elapsed());
                }
            }
        }
        outcome
    }

    /// Whether a batch may start right now (no pause, cancel or shutdown seen).
    fn allowed_now(&self) -> bool {
        !self.shutdown.is_requested()
            && !self.control.borrow().cancel
            && self.control.borrow().wait.is_none()
    }

    /// The worker's prepared statement for `sql`: prepared once per connection, not per batch
    /// (a parse and describe round trip and a re-analysis saved on every batch).
    async fn prepared(
        &mut self,
        client: &Client,
        sql: &str,
    ) -> Result<tokio_postgres::Statement, Error> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = client
            .prepare(sql)
            .await
            .map_err(Error::db("preparing a batch statement"))?;
        self.statements.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }
}
