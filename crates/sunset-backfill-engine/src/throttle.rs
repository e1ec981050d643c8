//! The throttle: a batch-size controller that aims each batch at the plan's target duration,
//! retry decisions by SQLSTATE, and a health gate that pauses on replication lag, long-running
//! transactions or lock waiters, with hysteresis so the run does not flap at the threshold.

use std::time::Duration;

use sunset_plan::format::{BatchFile, ThrottleFile};

/// Grows and shrinks the batch size so batches take about `target` each.
#[derive(Debug, Clone)]
pub struct BatchController {
    size: u64,
    min: u64,
    max: u64,
    target: Duration,
}

impl BatchController {
    pub fn new(batch: &BatchFile) -> BatchController {
        BatchController {
            size: batch.size,
            min: batch.min_size,
            max: batch.max_size,
            target: batch.target_duration.0,
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Adjusts after a batch of `rows` took `took`: proportional, but at most x2 or /2 per step
    /// so one slow outlier (a checkpoint, an autovacuum) does not collapse the size.
    pub fn observe(&mut self, rows: u64, took: Duration) {
        if rows < self.size || took.is_zero() {
            // A short (last) chunk says nothing about the rate.
            return;
        }
        let ratio = self.target.as_secs_f64() / took.as_secs_f64();
        let proposed = (self.size as f64 * ratio.clamp(0.5, 2.0)).round() as u64;
        self.size = proposed.clamp(self.min, self.max);
    }

    /// After a lock timeout, deadlock or statement timeout: try again with less.
    pub fn shrink(&mut self) {
        self.size = (self.size / 2).max(self.min);
    }
}

/// The pace a plan asks for (`max_rows_per_second`, `duty_cycle`): how long a worker rests
/// after each batch. Shared by the workers of one process, so the rate cap holds for all of them
/// together: each batch books its rows' share of time on one clock.
#[derive(Debug)]
pub struct Pacer {
    max_rows_per_second: Option<u64>,
    duty_cycle: Option<f64>,
    /// When the rows booked so far may all have been written at the capped rate.
    booked_until: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Pacer {
    pub fn new(limits: &ThrottleFile) -> Pacer {
        Pacer {
            max_rows_per_second: limits.max_rows_per_second,
            // A duty cycle of 1 is no pace at all.
            duty_cycle: limits
                .duty_cycle
                .map(|duty| duty.0)
                .filter(|duty| *duty < 1.0),
            booked_until: std::sync::Mutex::new(None),
        }
    }

    /// Whether the plan asks for any pace at all.
    pub fn is_active(&self) -> bool {
        self.max_rows_per_second.is_some() || self.duty_cycle.is_some()
    }

    /// The rest owed after a batch of `rows` that took `took`, at `now`.
    pub fn rest_after(&self, rows: u64, took: Duration, now: std::time::Instant) -> Duration {
        let duty = self
            .duty_cycle
            .map_or(Duration::ZERO, |duty| took.mul_f64(1.0 / duty - 1.0));
        let rate = self.max_rows_per_second.map_or(Duration::ZERO, |cap| {
            let mut booked = self
                .booked_until
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let from = booked.map_or(now, |until| until.max(now));
            let until = from + Duration::from_secs_f64(rows as f64 / cap as f64);
            *booked = Some(until);
            until.saturating_duration_since(now)
        });
        duty.max(rate)
    }
}

/// Whether an error with this SQLSTATE is worth retrying with a smaller batch: serialization
/// failure, deadlock, lock timeout (lock_not_available), statement timeout (query_canceled).
pub fn is_retryable(sqlstate: &str) -> bool {
    matches!(sqlstate, "40001" | "40P01" | "55P03" | "57014")
}

/// Exponential backoff before retry `attempt` (0-based), capped at 5 seconds.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << attempt.min(6))).min(Duration::from_secs(5))
}

/// The retries one batch gets before the run stops with its checkpoint intact.
pub const MAX_RETRIES: u32 = 8;

/// The health signals read from the server.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Health {
    pub replication_lag: Duration,
    /// Age of the oldest other open transaction.
    pub oldest_transaction: Duration,
    /// Sessions waiting for a lock on the table.
    pub lock_waiters: u32,
    /// Other sessions running a query right now.
    pub active_sessions: u32,
    /// How long the plan's probe took (`None` when no probe limit is set or it failed).
    pub probe_latency: Option<Duration>,
}

/// What a wait is for: the `reason` label of the throttle metric, one per signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitKind {
    Paused,
    ReplicationLag,
    TransactionAge,
    LockWaiters,
    ActiveSessions,
    ProbeLatency,
}

impl WaitKind {
    pub const ALL: [WaitKind; 6] = [
        WaitKind::Paused,
        WaitKind::ReplicationLag,
        WaitKind::TransactionAge,
        WaitKind::LockWaiters,
        WaitKind::ActiveSessions,
        WaitKind::ProbeLatency,
    ];

    /// The metric label: stable, unlike the operator's sentence.
    pub fn label(self) -> &'static str {
        match self {
            WaitKind::Paused => "paused",
            WaitKind::ReplicationLag => "replication_lag",
            WaitKind::TransactionAge => "transaction_age",
            WaitKind::LockWaiters => "lock_waiters",
            WaitKind::ActiveSessions => "active_sessions",
            WaitKind::ProbeLatency => "probe_latency",
        }
    }
}

/// Why a run waits before its next batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wait {
    pub kind: WaitKind,
    /// The sentence the bar and `status` show.
    pub reason: String,
}

impl Wait {
    pub fn paused() -> Wait {
        Wait {
            kind: WaitKind::Paused,
            reason: "paused by operator (`sunset-backfill resume` to continue)".to_owned(),
        }
    }
}

/// The lowest limit `max_probe_slowdown` sets, however fast the probe was before the run.
pub const PROBE_FLOOR: Duration = Duration::from_millis(1);

/// Pauses when a signal exceeds its limit; resumes only once every signal is well below it
/// (80% for durations, active sessions and the probe, half for waiters).
#[derive(Debug, Clone)]
pub struct HealthGate {
    limits: ThrottleFile,
    paused: Option<Wait>,
    /// The probe's latency before the run started, what `max_probe_slowdown` is relative to.
    baseline: Option<Duration>,
}

impl HealthGate {
    pub fn new(limits: &ThrottleFile) -> HealthGate {
        HealthGate {
            limits: limits.clone(),
            paused: None,
            baseline: None,
        }
    }

    /// The probe's latency measured before the first batch.
    pub fn set_baseline(&mut self, baseline: Duration) {
        self.baseline = Some(baseline);
    }

    /// The probe's limit now: the absolute one, or the baseline times the slowdown, whichever
    /// is lower.
    fn probe_limit(&self) -> Option<Duration> {
        let absolute = self.limits.max_probe_latency.map(|limit| limit.0);
        // A sub-millisecond baseline times a factor is noise (0.04 ms x 1.5): the relative
        // limit never goes below PROBE_FLOOR.
        let relative = self
            .limits
            .max_probe_slowdown
            .zip(self.baseline)
            .map(|(factor, baseline)| baseline.mul_f64(factor.0).max(PROBE_FLOOR));
        match (absolute, relative) {
            (Some(a), Some(r)) => Some(a.min(r)),
            (a, r) => a.or(r),
        }
    }

    /// Feeds one reading; returns why to stay paused, if anything says so.
    pub fn update(&mut self, health: Health) -> Option<&Wait> {
        let limits = &self.limits;
        let over = if health.replication_lag > limits.max_replication_lag.0 {
            Some((
                WaitKind::ReplicationLag,
                format!(
                    "replication lag {:.1}s > {}",
                    health.replication_lag.as_secs_f64(),
                    sunset_plan::format_duration(limits.max_replication_lag.0)
                ),
            ))
        } else if health.oldest_transaction > limits.max_transaction_age.0 {
            Some((
                WaitKind::TransactionAge,
                format!(
                    "a transaction open for {}s > {}",
                    health.oldest_transaction.as_secs(),
                    sunset_plan::format_duration(limits.max_transaction_age.0)
                ),
            ))
        } else if health.lock_waiters > limits.max_lock_waiters {
            Some((
                WaitKind::LockWaiters,
                format!(
                    "{} sessions waiting for locks on the table > {}",
                    health.lock_waiters, limits.max_lock_waiters
                ),
            ))
        } else if let Some(max) = limits.max_active_sessions
            && health.active_sessions > max
        {
            Some((
                WaitKind::ActiveSessions,
                format!(
                    "{} other sessions running queries > {max}",
                    health.active_sessions
                ),
            ))
        } else if let Some((latency, limit)) = health.probe_latency.zip(self.probe_limit())
            && latency > limit
        {
            let baseline = self
                .baseline
                .map(|b| format!(", {:.1}ms before the run", b.as_secs_f64() * 1000.0))
                .unwrap_or_default();
            Some((
                WaitKind::ProbeLatency,
                format!(
                    "the probe took {:.1}ms > {:.1}ms{baseline}",
                    latency.as_secs_f64() * 1000.0,
                    limit.as_secs_f64() * 1000.0
                ),
            ))
        } else {
            None
        }
        .map(|(kind, reason)| Wait { kind, reason });
        let well_below = health.replication_lag.as_secs_f64()
            < limits.max_replication_lag.0.as_secs_f64() * 0.8
            && health.oldest_transaction.as_secs_f64()
                < limits.max_transaction_age.0.as_secs_f64() * 0.8
            && health.lock_waiters <= limits.max_lock_waiters / 2
            && limits
                .max_active_sessions
                .is_none_or(|max| f64::from(health.active_sessions) <= f64::from(max) * 0.8)
            && health
                .probe_latency
                .zip(self.probe_limit())
                .is_none_or(|(latency, limit)| latency.as_secs_f64() < limit.as_secs_f64() * 0.8);
        match (over, self.paused.is_some()) {
            (Some(reason), _) => self.paused = Some(reason),
            (None, true) if well_below => self.paused = None,
            (None, _) => {}
        }
        self.paused.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use sunset_plan::DurationValue;

    use super::*;

    fn controller() -> BatchController {
        BatchController::new(&BatchFile {
            size: 1000,
            min_size: 10,
            max_size: 8000,
            target_duration: DurationValue(Duration::from_millis(200)),
        })
    }

    #[test]
    fn the_batch_size_converges_on_the_target_duration() {
        let mut c = controller();
        c.observe(1000, Duration::from_millis(100));
        assert_eq!(c.size(), 2000, "fast batches grow");
        c.observe(2000, Duration::from_millis(800));
        assert_eq!(c.size(), 1000, "slow batches shrink, at most by half");
        c.observe(1000, Duration::from_millis(250));
        assert_eq!(c.size(), 800);
        c.observe(3, Duration::from_millis(1));
        assert_eq!(c.size(), 800, "a short last chunk is ignored");
        for _ in 0..20 {
            c.observe(c.size(), Duration::from_millis(1));
        }
        assert_eq!(c.size(), 8000, "bounded by max_size");
        for _ in 0..20 {
            c.shrink();
        }
        assert_eq!(c.size(), 10, "bounded by min_size");
    }

    #[test]
    fn the_pacer_caps_the_rate_of_all_workers_together_and_keeps_the_duty_cycle() {
        let start = std::time::Instant::now();
        let capped = Pacer::new(&ThrottleFile {
            max_rows_per_second: Some(1000),
            ..ThrottleFile::default()
        });
        let ms = Duration::from_millis;
        assert_eq!(capped.rest_after(500, ms(10), start), ms(500));
        // A second worker's batch, finished at the same moment, waits for the first one's share.
        assert_eq!(capped.rest_after(500, ms(10), start), ms(1000));
        // Once the booked time has passed, a batch owes only its own share.
        assert_eq!(capped.rest_after(100, ms(10), start + ms(5000)), ms(100));
        let half = Pacer::new(&ThrottleFile {
            duty_cycle: Some(sunset_plan::format::Decimal(0.5)),
            ..ThrottleFile::default()
        });
        assert_eq!(half.rest_after(1000, ms(80), start), ms(80));
        let unpaced = Pacer::new(&ThrottleFile::default());
        assert_eq!(unpaced.rest_after(1_000_000, ms(80), start), Duration::ZERO);
    }

    #[test]
    fn active_sessions_and_a_slow_probe_pause_the_run_with_hysteresis() {
        let limits = ThrottleFile {
            max_active_sessions: Some(10),
            max_probe_latency: Some(DurationValue(Duration::from_millis(50))),
            max_probe_slowdown: Some(sunset_plan::format::Decimal(3.0)),
            ..ThrottleFile::default()
        };
        let mut gate = HealthGate::new(&limits);
        gate.set_baseline(Duration::from_millis(4));
        let reading = |active, probe_ms| Health {
            active_sessions: active,
            probe_latency: Some(Duration::from_millis(probe_ms)),
            ..Health::default()
        };
        let mut update = |health| gate.update(health).map(|w| (w.kind, w.reason.clone()));
        assert_eq!(update(reading(10, 5)), None);
        assert_eq!(
            update(reading(11, 5)),
            Some((
                WaitKind::ActiveSessions,
                "11 other sessions running queries > 10".to_owned()
            ))
        );
        assert!(update(reading(9, 5)).is_some(), "9 is not well below 10");
        assert_eq!(update(reading(8, 5)), None);
        // 3x the 4 ms baseline is 12 ms, below the absolute 50 ms: the lower limit holds.
        assert_eq!(
            update(reading(0, 13)),
            Some((
                WaitKind::ProbeLatency,
                "the probe took 13.0ms > 12.0ms, 4.0ms before the run".to_owned()
            ))
        );
        assert!(
            update(reading(0, 10)).is_some(),
            "10 ms is not well below 12"
        );
        assert_eq!(update(reading(0, 9)), None);
    }

    #[test]
    fn retries_are_chosen_by_sqlstate() {
        for code in ["40001", "40P01", "55P03", "57014"] {
            assert!(is_retryable(code), "{code}");
        }
        for code in ["23505", "42703", "22P02", "53100"] {
            assert!(!is_retryable(code), "{code}");
        }
        assert_eq!(backoff(0), Duration::from_millis(100));
        assert_eq!(backoff(3), Duration::from_millis(800));
        assert_eq!(backoff(30), Duration::from_secs(5));
    }

    #[test]
    fn the_health_gate_pauses_and_resumes_with_hysteresis() {
        let mut gate = HealthGate::new(&ThrottleFile::default());
        let mut update = |health| gate.update(health).map(|wait| wait.reason.clone());
        let lag = |s: f64| Health {
            replication_lag: Duration::from_secs_f64(s),
            ..Health::default()
        };
        assert_eq!(update(lag(1.0)), None);
        assert_eq!(
            update(lag(12.0)).as_deref(),
            Some("replication lag 12.0s > 10s")
        );
        assert!(
            update(lag(9.0)).is_some(),
            "just below the limit is not enough to resume"
        );
        assert_eq!(update(lag(7.0)), None, "resumes well below the limit");
        let waiters = Health {
            lock_waiters: 6,
            ..Health::default()
        };
        assert_eq!(
            update(waiters).as_deref(),
            Some("6 sessions waiting for locks on the table > 5")
        );
        let old = Health {
            oldest_transaction: Duration::from_secs(301),
            ..Health::default()
        };
        assert_eq!(
            update(old).as_deref(),
            Some("a transaction open for 301s > 5m")
        );
        assert_eq!(update(Health::default()), None);
    }
}
