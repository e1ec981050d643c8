//! Reading the health signals the throttle judges (`throttle::HealthGate`): replication lag,
//! the oldest other transaction, lock waiters on the run's tables, other active sessions, and
//! the latency of the plan's probe, a read-only query standing for the application's.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use crate::catalog::Backfill;
use crate::error::Error;
use crate::throttle::Health;

/// The probe when the plan names none: a round trip through the server's executor.
const DEFAULT_PROBE: &str = "SELECT 1";

/// Probe timings kept for the median: one slow outlier (a checkpoint) does not pause the run.
const PROBE_WINDOW: usize = 5;

/// One reader per monitor: the tables to watch, the probe, and its recent timings.
pub(crate) struct HealthReader {
    table_oids: Vec<u32>,
    /// `None` unless the plan sets a probe limit.
    probe: Option<String>,
    /// A probe stuck behind a lock must not stall the monitor: it is cancelled after this, and
    /// counts as having taken that long.
    probe_timeout: Duration,
    recent: VecDeque<Duration>,
}

impl HealthReader {
    pub(crate) fn new(backfill: &Backfill) -> HealthReader {
        let throttle = &backfill.throttle;
        let judged = throttle.max_probe_latency.is_some() || throttle.max_probe_slowdown.is_some();
        HealthReader {
            table_oids: backfill.touched_tables(),
            probe: judged.then(|| {
                throttle
                    .probe
                    .as_ref()
                    .map_or(DEFAULT_PROBE.to_owned(), |probe| probe.as_str().to_owned())
            }),
            probe_timeout: throttle
                .max_probe_latency
                .map_or(Duration::from_secs(5), |limit| limit.0 * 3)
                .clamp(Duration::from_millis(100), Duration::from_secs(5)),
            recent: VecDeque::new(),
        }
    }

    /// The probe's latency before the run: the median of five runs, or `None` without a probe.
    /// A probe that fails here is bad input, reported before the first batch.
    pub(crate) async fn baseline(&mut self, client: &Client) -> Result<Option<Duration>, Error> {
        let Some(probe) = self.probe.clone() else {
            return Ok(None);
        };
        let mut timings = Vec::new();
        for _ in 0..PROBE_WINDOW {
            timings.push(time_probe(client, &probe, None).await.map_err(|error| {
                Error::BadInput(format!(
                    "throttle.probe `{probe}` failed: {}",
                    crate::error::describe(&error)
                ))
            })?);
        }
        timings.sort();
        Ok(Some(timings[timings.len() / 2]))
    }

    /// One reading; a signal that cannot be read counts as healthy (and is logged).
    pub(crate) async fn read(&mut self, client: &Client) -> Health {
        let row = client
            .query_one(
                "SELECT
                    COALESCE((SELECT EXTRACT(epoch FROM max(replay_lag)) FROM pg_stat_replication), 0)::float8,
                    COALESCE((SELECT EXTRACT(epoch FROM now() - min(xact_start)) FROM pg_stat_activity
                              WHERE pid <> pg_backend_pid() AND backend_type = 'client backend' AND datname = current_database()
                                AND application_name <> current_setting('application_name') AND xact_start IS NOT NULL), 0)::float8,
                    (SELECT count(*) FROM pg_locks WHERE relation = ANY($1) AND NOT granted)::int4,
                    (SELECT count(*) FROM pg_stat_activity
                     WHERE pid <> pg_backend_pid() AND backend_type = 'client backend' AND state = 'active'
                       AND application_name <> current_setting('application_name'))::int4",
                &[&self.table_oids],
            )
            .await;
        let mut health = match row {
            Ok(row) => Health {
                replication_lag: Duration::from_secs_f64(row.get::<_, f64>(0).max(0.0)),
                oldest_transaction: Duration::from_secs_f64(row.get::<_, f64>(1).max(0.0)),
                lock_waiters: u32::try_from(row.get::<_, i32>(2)).unwrap_or_default(),
                active_sessions: u32::try_from(row.get::<_, i32>(3)).unwrap_or_default(),
                probe_latency: None,
            },
            Err(error) => {
                tracing::warn!(%error, "could not read health signals");
                Health::default()
            }
        };
        if let Some(probe) = &self.probe {
            match time_probe(client, probe, Some(self.probe_timeout)).await {
                Ok(took) => {
                    if self.recent.len() == PROBE_WINDOW {
                        self.recent.pop_front();
                    }
                    self.recent.push_back(took);
                    let mut sorted: Vec<Duration> = self.recent.iter().copied().collect();
                    sorted.sort();
                    health.probe_latency = Some(sorted[sorted.len() / 2]);
                }
                Err(error) => tracing::warn!(%error, "the throttle's probe failed"),
            }
        }
        health
    }
}

/// Runs the probe once, in a read-only transaction that is rolled back, as one statement (the
/// extended protocol refuses a second), and times the statement alone. Cancelled by `timeout`
/// (when given), it took the whole timeout.
async fn time_probe(
    client: &Client,
    probe: &str,
    timeout: Option<Duration>,
) -> Result<Duration, tokio_postgres::Error> {
    client.batch_execute("BEGIN READ ONLY").await?;
    if let Some(timeout) = timeout {
        client
            .batch_execute(&format!(
                "SET LOCAL statement_timeout = {}",
                timeout.as_millis().max(1)
            ))
            .await?;
    }
    let started = Instant::now();
    let outcome = client.query(probe, &[]).await;
    let took = started.elapsed();
    client.batch_execute("ROLLBACK").await?;
    match outcome {
        Err(error) if timeout.is_some() && error.code() == Some(&SqlState::QUERY_CANCELED) => {
            Ok(took)
        }
        outcome => outcome.map(|_| took),
    }
}
