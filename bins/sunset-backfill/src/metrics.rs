//! What `--metrics-addr` serves during `run` and `rollback`: the names the dashboard and the
//! alert rules under `dashboards/` read (`tests/it/dashboard.rs` proves each panel finds them).

use sunset_backfill_engine::Stats;
use sunset_backfill_engine::stats::DURATION_BUCKETS;
use sunset_backfill_engine::throttle::WaitKind;
use sunset_cli::metrics::{Exposition, Kind};

/// The run's metrics in the Prometheus text format, every sample labelled with `run`.
pub fn render(run: &str, workers: usize, stats: &Stats) -> String {
    let mut out = Exposition::new(&[("run", run)]);
    let count = |counter| Stats::get(counter) as f64;
    for (name, help, kind, value) in [
        (
            "sunset_backfill_rows_total",
            "Rows in scope of the run.",
            Kind::Gauge,
            count(&stats.total_rows),
        ),
        (
            "sunset_backfill_rows_processed_total",
            "Rows visited by committed batches (of this run, across resumes).",
            Kind::Counter,
            count(&stats.rows_seen),
        ),
        (
            "sunset_backfill_rows_changed_total",
            "Rows whose discriminator committed batches changed.",
            Kind::Counter,
            count(&stats.rows_changed),
        ),
        (
            "sunset_backfill_batches_total",
            "Committed batches of this process.",
            Kind::Counter,
            count(&stats.batches),
        ),
        (
            "sunset_backfill_retries_total",
            "Batches retried after a lock timeout, deadlock or serialization failure.",
            Kind::Counter,
            count(&stats.retries),
        ),
        (
            "sunset_backfill_errors_total",
            "Errors that stopped a worker.",
            Kind::Counter,
            count(&stats.errors),
        ),
        (
            "sunset_backfill_batch_size",
            "The batch size the controller chose last.",
            Kind::Gauge,
            count(&stats.batch_size),
        ),
        (
            "sunset_backfill_workers",
            "Workers in this process.",
            Kind::Gauge,
            workers as f64,
        ),
    ] {
        out.single(name, help, kind, value);
    }
    let (buckets, sum) = *stats.durations.lock().expect("stats lock");
    out.histogram(
        "sunset_backfill_batch_duration_seconds",
        "Duration of committed batches.",
        &DURATION_BUCKETS,
        &buckets,
        sum,
    );
    let wait = stats.wait();
    out.single(
        "sunset_backfill_throttled",
        "1 while the run waits (operator pause or a health signal).",
        Kind::Gauge,
        f64::from(u8::from(wait.is_some())),
    );
    let reasons: Vec<(&str, bool)> = WaitKind::ALL
        .iter()
        .map(|kind| {
            let on = wait.as_ref().is_some_and(|wait| wait.kind == *kind);
            (kind.label(), on)
        })
        .collect();
    out.one_of(
        "sunset_backfill_throttle_reason",
        "1 for the reason the run waits, 0 for the others.",
        "reason",
        &reasons,
    );
    let health = stats.health();
    out.single(
        "sunset_backfill_replication_lag_seconds",
        "The largest replay lag of the server's standbys, as the throttle last read it.",
        Kind::Gauge,
        health.replication_lag.as_secs_f64(),
    );
    out.single(
        "sunset_backfill_oldest_transaction_seconds",
        "Age of the oldest other open transaction in the database.",
        Kind::Gauge,
        health.oldest_transaction.as_secs_f64(),
    );
    out.single(
        "sunset_backfill_lock_waiters",
        "Sessions waiting for a lock on the tables the run writes.",
        Kind::Gauge,
        f64::from(health.lock_waiters),
    );
    out.single(
        "sunset_backfill_active_sessions",
        "Other sessions on the server running a query, as the throttle last read it.",
        Kind::Gauge,
        f64::from(health.active_sessions),
    );
    if let Some(latency) = health.probe_latency {
        out.single(
            "sunset_backfill_probe_latency_seconds",
            "The throttle's probe (median of its last five runs), when the plan sets a probe limit.",
            Kind::Gauge,
            latency.as_secs_f64(),
        );
    }
    let journal = Stats::get(&stats.journal_rows);
    out.single(
        "sunset_backfill_journal_rows",
        "Changes the undo journal holds for the run (what rollback restores or removes).",
        Kind::Gauge,
        journal as f64,
    );
    out.single(
        "sunset_backfill_rollback_ready",
        "1 while the journal holds every change the run's batches made, so rollback can undo all.",
        Kind::Gauge,
        f64::from(u8::from(journal >= Stats::get(&stats.rows_changed_in_run))),
    );
    if let Some(validation) = stats.validation() {
        out.single(
            "sunset_backfill_validation_failures",
            "Rows the last `validate` found wrong (0: it passed).",
            Kind::Gauge,
            validation.failures as f64,
        );
        out.single(
            "sunset_backfill_validation_timestamp_seconds",
            "When the last `validate` ran (Unix time).",
            Kind::Gauge,
            validation.at.timestamp() as f64,
        );
    }
    out.finish()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use sunset_backfill_engine::stats::RecordedValidation;

    use super::*;

    #[test]
    fn every_family_the_dashboard_reads_is_served_before_the_first_batch() {
        let stats = Stats::default();
        stats.total_rows.store(10, Ordering::Relaxed);
        let text = render("accounts-sti", 2, &stats);
        let names: std::collections::BTreeSet<&str> = text
            .lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .filter_map(|line| line.split(' ').next())
            .collect();
        expect_test::expect![[r#"
            {
                "sunset_backfill_active_sessions",
                "sunset_backfill_batch_duration_seconds",
                "sunset_backfill_batch_size",
                "sunset_backfill_batches_total",
                "sunset_backfill_errors_total",
                "sunset_backfill_journal_rows",
                "sunset_backfill_lock_waiters",
                "sunset_backfill_oldest_transaction_seconds",
                "sunset_backfill_replication_lag_seconds",
                "sunset_backfill_retries_total",
                "sunset_backfill_rollback_ready",
                "sunset_backfill_rows_changed_total",
                "sunset_backfill_rows_processed_total",
                "sunset_backfill_rows_total",
                "sunset_backfill_throttle_reason",
                "sunset_backfill_throttled",
                "sunset_backfill_workers",
            }
        "#]]
        .assert_debug_eq(&names);
        assert!(
            text.contains(
                "sunset_backfill_throttle_reason{run=\"accounts-sti\",reason=\"paused\"} 0"
            )
        );
        assert!(
            !text.contains("validation"),
            "no verdict recorded yet: {text}"
        );
        *stats.validation.lock().unwrap() = Some(RecordedValidation {
            at: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            failures: 3,
        });
        let text = render("accounts-sti", 2, &stats);
        assert!(text.contains("sunset_backfill_validation_failures{run=\"accounts-sti\"} 3"));
        assert!(text.contains(
            "sunset_backfill_validation_timestamp_seconds{run=\"accounts-sti\"} 1700000000"
        ));
    }
}
