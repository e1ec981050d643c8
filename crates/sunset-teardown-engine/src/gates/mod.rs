//! Cutover gates: validations that read what the systems report rather than what AWS says.
//! `metrics_match` compares the legacy and the new collectors series by series; `no_traffic`
//! waits until a Prometheus query stays below a threshold for a while. Both read Prometheus's
//! HTTP API through one audited client, and a gate's report is saved beside the audit log.

mod parity;
mod prometheus;
mod report;
mod traffic;

use std::time::{SystemTime, UNIX_EPOCH};

use sunset_plan::format::{MetricsMatchFile, NoTrafficFile, ProbeFile, SequenceFile};

use crate::Error;
use crate::audit::AuditLog;
use crate::checks::Check;

pub use parity::{MetricParity, ParityReport, Verdict, Worst};
pub use report::{GateReport, saved_reports};

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Compares the two sides now; saves the report (JSON and Markdown) under `reports` as `name`.
pub(crate) async fn metrics_match(
    parity: &MetricsMatchFile,
    audit: &AuditLog,
    reports: &std::path::Path,
    name: &str,
) -> Result<Check, Error> {
    let report = parity::evaluate(parity, audit, now()).await?;
    let saved = report::save(reports, name, &report)?;
    let summary = report::summary(&report, &saved);
    Ok(if report.verdict == Verdict::Pass {
        Check::Holds(summary)
    } else {
        Check::NotYet(summary)
    })
}

pub(crate) async fn no_traffic(traffic: &NoTrafficFile, audit: &AuditLog) -> Result<Check, Error> {
    traffic::evaluate(traffic, audit, now()).await
}

/// Every Prometheus a sequence's gates read answers its API: a wrong URL is bad input, found
/// when the plan is made rather than when a step waits on it.
pub async fn check_reachable(sequence: &SequenceFile, audit: &AuditLog) -> Result<(), Error> {
    for (step, actions) in sequence.decommission_sequence.iter() {
        for (index, action) in actions.iter().enumerate() {
            let Some(probe) = action.validation.as_ref().and_then(|v| v.probe.as_ref()) else {
                continue;
            };
            for url in urls(probe) {
                prometheus::Prometheus::new(url, audit)?
                    .reachable()
                    .await
                    .map_err(|error| {
                        Error::BadInput(format!(
                            "step `{step}`, action {}: the validation's Prometheus does not answer: {error}",
                            index + 1
                        ))
                    })?;
            }
        }
    }
    Ok(())
}

fn urls(probe: &ProbeFile) -> Vec<&str> {
    let mut urls = Vec::new();
    if let Some(parity) = &probe.metrics_match {
        urls.push(parity.legacy.prometheus.as_str());
        urls.push(parity.new.prometheus.as_str());
    }
    if let Some(traffic) = &probe.no_traffic {
        urls.push(traffic.prometheus.as_str());
    }
    urls.dedup();
    urls
}
