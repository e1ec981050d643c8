//! Cutover gates: validations that read what the systems report rather than what AWS says.
//! `metrics_match` compares the legacy and the new collectors series by series; `no_traffic`
//! waits until a Prometheus query stays below a threshold for a while. Both read Prometheus's
//! HTTP API through one audited client, and a gate's report is saved beside the audit log.

mod haproxy;
mod parity;
mod prometheus;
mod report;
mod shift;
mod traffic;
mod weighted;

use std::time::{SystemTime, UNIX_EPOCH};

use sunset_plan::PathSegment;
use sunset_plan::format::{MetricsMatchFile, NoTrafficFile, ProbeFile, SequenceFile};

use crate::Error;
use crate::audit::AuditLog;
use crate::checks::Check;
use crate::cloud::Cloud;

pub use parity::{MetricParity, ParityReport, Verdict, Worst};
pub(crate) use prometheus::without_credentials;
pub use report::{GateReport, saved_reports};
pub(crate) use shift::{Shift, record_path as shift_record, restore as restore_shift};
pub(crate) use weighted::Weighted;

/// How a plan names a shift's target.
pub(crate) fn describe_traffic(traffic: &sunset_plan::format::TrafficTargetFile) -> String {
    Weighted::describe(traffic)
}

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

pub(crate) async fn no_traffic(traffic: &NoTrafficFile, cloud: &Cloud) -> Result<Check, Error> {
    traffic::evaluate(traffic, cloud, now()).await
}

/// Every Prometheus a sequence's gates read answers its API: a wrong URL is bad input, found
/// when the plan is made rather than when a step waits on it, and pointed at in the file.
pub async fn check_reachable(
    sequence: &SequenceFile,
    file: &str,
    text: &str,
    audit: &AuditLog,
) -> Result<(), Error> {
    let mut found = Vec::new();
    for (step, actions) in sequence.decommission_sequence.iter() {
        for (index, action) in actions.iter().enumerate() {
            let mut named: Vec<(Vec<PathSegment>, &str)> = Vec::new();
            if let Some(probe) = action.validation.as_ref().and_then(|v| v.probe.as_ref()) {
                for (keys, url) in urls(probe) {
                    let mut path = vec![PathSegment::Key("validation".to_owned())];
                    path.extend(keys.iter().map(|k| PathSegment::Key((*k).to_owned())));
                    named.push((path, url));
                }
            }
            for (n, gate) in action.gates.iter().enumerate() {
                let path = vec![
                    PathSegment::Key("gates".to_owned()),
                    PathSegment::Index(n),
                    PathSegment::Key("prometheus".to_owned()),
                ];
                named.push((path, gate.prometheus.as_str()));
            }
            for (keys, url) in named {
                if let Err(error) = prometheus::Prometheus::new(url, audit)?.reachable().await {
                    let mut path = vec![
                        PathSegment::Key("decommission_sequence".to_owned()),
                        PathSegment::Key(step.0.clone()),
                        PathSegment::Index(index),
                    ];
                    path.extend(keys);
                    found.push(sunset_plan::diagnostic_at(
                        file,
                        text,
                        &path,
                        format!(
                            "Prometheus does not answer its API: {}",
                            error.with_causes()
                        ),
                    ));
                }
            }
        }
    }
    if found.is_empty() {
        Ok(())
    } else {
        Err(Error::Sequence(sunset_plan::Diagnostics(found)))
    }
}

/// The Prometheus URLs of a validation, each with its place under `validation`.
fn urls(probe: &ProbeFile) -> Vec<(&'static [&'static str], &str)> {
    let mut urls = Vec::new();
    if let Some(parity) = &probe.metrics_match {
        urls.push((
            &["metrics_match", "legacy", "prometheus"][..],
            parity.legacy.prometheus.as_str(),
        ));
        urls.push((
            &["metrics_match", "new", "prometheus"][..],
            parity.new.prometheus.as_str(),
        ));
    }
    if let Some(prometheus) = probe
        .no_traffic
        .as_ref()
        .and_then(|t| t.prometheus.as_ref())
    {
        urls.push((&["no_traffic", "prometheus"][..], prometheus.as_str()));
    }
    urls
}
