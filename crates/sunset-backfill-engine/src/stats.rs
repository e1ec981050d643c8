//! Live counters shared by the workers, the progress display, `status` heartbeats and the
//! Prometheus endpoint. Lock-free where it is hot (per batch), a mutex where it is rare.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::throttle::{Health, Wait};

/// Upper bounds (seconds) of the batch duration histogram.
pub const DURATION_BUCKETS: [f64; 10] = [0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0];

#[derive(Debug, Default)]
pub struct Stats {
    /// Rows in scope of the run (counted at start).
    pub total_rows: AtomicU64,
    /// Rows visited by committed batches (including ones already right).
    pub rows_seen: AtomicU64,
    /// Rows whose discriminator committed batches changed.
    pub rows_changed: AtomicU64,
    pub batches: AtomicU64,
    pub retries: AtomicU64,
    pub errors: AtomicU64,
    /// The most recent batch size chosen by a worker's controller.
    pub batch_size: AtomicU64,
    /// Why the run is waiting, if it is (operator pause or a health signal).
    pub throttle: Mutex<Option<Wait>>,
    /// The health signals as last read by the monitor.
    pub health: Mutex<Health>,
    /// Changes the run's undo journal holds (all its batches, this process's and earlier ones).
    pub journal_rows: AtomicU64,
    /// Changes the run's ranges say committed batches made; rollback can undo them all while
    /// the journal holds at least as many.
    pub rows_changed_in_run: AtomicU64,
    /// The verdict `validate` last recorded on the run, if any.
    pub validation: Mutex<Option<RecordedValidation>>,
    /// Histogram counts per bucket of [`DURATION_BUCKETS`], plus one for +Inf.
    pub durations: Mutex<([u64; DURATION_BUCKETS.len() + 1], f64)>,
}

impl Stats {
    pub(crate) fn record_batch(&self, seen: u64, changed: u64, size: u64, took: Duration) {
        self.rows_seen.fetch_add(seen, Ordering::Relaxed);
        self.rows_changed.fetch_add(changed, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.batch_size.store(size, Ordering::Relaxed);
        let seconds = took.as_secs_f64();
        let bucket = DURATION_BUCKETS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(DURATION_BUCKETS.len());
        let mut durations = self.durations.lock().expect("stats lock");
        durations.0[bucket] += 1;
        durations.1 += seconds;
    }

    /// Why the run waits, as the operator reads it.
    pub fn throttle(&self) -> Option<String> {
        self.wait().map(|wait| wait.reason)
    }

    pub fn wait(&self) -> Option<Wait> {
        self.throttle.lock().expect("stats lock").clone()
    }

    pub(crate) fn set_throttle(&self, wait: Option<Wait>) {
        *self.throttle.lock().expect("stats lock") = wait;
    }

    pub fn health(&self) -> Health {
        *self.health.lock().expect("stats lock")
    }

    pub(crate) fn set_health(&self, health: Health) {
        *self.health.lock().expect("stats lock") = health;
    }

    pub fn validation(&self) -> Option<RecordedValidation> {
        *self.validation.lock().expect("stats lock")
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// What `validate` recorded on the run's row: when, and how many rows it found wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordedValidation {
    pub at: DateTime<Utc>,
    /// Rows mismatched, untyped, missing or differing (0: it passed).
    pub failures: i64,
}
