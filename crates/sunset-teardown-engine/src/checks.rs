//! Validations: what must hold after an action before the runner moves on, polled with an
//! interval until it holds or its timeout passes. Every action also has an implied check (a
//! stop waits for `stopped`), run before the sequence's own `validation`.

use std::future::Future;
use std::time::Duration;
use sunset_outcome::Shutdown;

use sunset_plan::format::{
    ActionFile, ActionKind, MetricsMatchFile, NoTrafficFile, ProbeFile, PrometheusSource,
    SequenceFile, ValidationKind,
};

use crate::Error;
use crate::actions::{Context, current_records, database_url, expected_status, status_ok};
use crate::model::{ActionRecord, ResourceKind};
use crate::probes;

/// One thing to check after an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    Validation(ValidationKind),
    VolumesDeleted,
    AddressesReleased,
}

/// What one evaluation found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    Holds(String),
    NotYet(String),
}

/// The check every action implies, whatever the sequence says.
pub(crate) fn implied(action: &ActionFile) -> Option<Condition> {
    use ActionKind::*;
    use ValidationKind::*;
    Some(match action.action {
        StopServices if action.command.is_some() => return None,
        StopServices | StopInstances => Condition::Validation(InstanceStopped),
        StartInstances => Condition::Validation(InstanceRunning),
        TerminateInstances => Condition::Validation(InstanceTerminated),
        SnapshotVolumes => Condition::Validation(SnapshotCompleted),
        DetachVolumes => Condition::Validation(NoAttachments),
        DeleteVolumes => Condition::VolumesDeleted,
        ReleaseAddresses => Condition::AddressesReleased,
        DeleteSecurityGroups | CleanSecurityGroups => Condition::Validation(SecurityGroupGone),
        RemoveDns => Condition::Validation(RecordAbsent),
        DeleteLoadBalancers => Condition::Validation(LoadBalancerGone),
        Archive | Command | Sql | Http | Gate | ShiftTraffic => return None,
    })
}

/// The implied check, then the sequence's validation (once, if they are the same).
pub(crate) fn conditions(action: &ActionFile) -> Vec<Condition> {
    let mut all: Vec<Condition> = implied(action).into_iter().collect();
    if let Some(validation) = &action.validation {
        // `no_mount_points` is checked as `no_attachments`: EBS can not see inside the guest.
        let check = match validation.check {
            ValidationKind::NoMountPoints => ValidationKind::NoAttachments,
            other => other,
        };
        let named = Condition::Validation(check);
        if !all.contains(&named) {
            all.push(named);
        }
    }
    all
}

/// How a condition reads in a plan.
pub(crate) fn describe(condition: Condition, action: &ActionFile) -> String {
    let probe = action.validation.as_ref().and_then(|v| v.probe.as_ref());
    match condition {
        Condition::VolumesDeleted => "the volumes are gone".to_owned(),
        Condition::AddressesReleased => "the addresses are released".to_owned(),
        Condition::Validation(kind) => match kind {
            ValidationKind::InstanceStopped => "every instance is `stopped`".to_owned(),
            ValidationKind::InstanceRunning => "every instance is `running`".to_owned(),
            ValidationKind::InstanceTerminated => "every instance is `terminated`".to_owned(),
            ValidationKind::SnapshotCompleted => "every snapshot is `completed`".to_owned(),
            ValidationKind::NoAttachments | ValidationKind::NoMountPoints => "no volume is attached (no mount points)".to_owned(),
            ValidationKind::NoActiveConnections => match probe {
                Some(p) if p.sql.is_some() => format!("no active connections: `{}` returns 0", p.sql.as_ref().map(|s| s.as_str()).unwrap_or_default()),
                Some(p) if p.command.is_some() => format!("no active connections: `{}` exits 0", p.command.as_ref().map(|s| s.as_str()).unwrap_or_default()),
                Some(p) if p.url.is_some() => format!("no active connections: {} answers {}", p.url.as_ref().map(|s| s.as_str()).unwrap_or_default(), expected_status(p.expect_status)),
                Some(ProbeFile { no_traffic: Some(traffic), .. }) => format!("no active connections: {}", describe_traffic(traffic)),
                _ => "no active connections: every instance is off the network (stopped or terminated)".to_owned(),
            },
            ValidationKind::RecordAbsent => "the DNS records no longer resolve in their zone".to_owned(),
            ValidationKind::LoadBalancerGone => "the load balancers are gone".to_owned(),
            ValidationKind::SecurityGroupGone => "the deleted security groups are gone".to_owned(),
            ValidationKind::HttpStatus => format!("{} answers {}", probe_url(probe, action), expected_status(probe.and_then(|p| p.expect_status).or(action.expect_status))),
            ValidationKind::CommandSucceeds => format!("`{}` exits 0", probe_command(probe, action)),
            ValidationKind::SqlReturnsZero => format!("`{}` returns 0", probe_sql(probe, action)),
            ValidationKind::MetricsMatch => match probe.and_then(|p| p.metrics_match.as_ref()) {
                Some(parity) => describe_parity(parity),
                None => "the metrics match".to_owned(),
            },
            ValidationKind::NoTraffic => match probe.and_then(|p| p.no_traffic.as_ref()) {
                Some(traffic) => describe_traffic(traffic),
                None => "no traffic".to_owned(),
            },
        },
    }
}

fn describe_parity(parity: &MetricsMatchFile) -> String {
    let patterns = parity.exact.len() + parity.tolerance.len();
    format!(
        "every series of {patterns} metric patterns and {} derived metrics matches between {} and {} over the last {}, every {}",
        parity.derived.len(),
        side(&parity.legacy),
        side(&parity.new),
        sunset_plan::format_duration(parity.range.0),
        sunset_plan::format_duration(parity.step.0),
    )
}

fn side(source: &PrometheusSource) -> String {
    match &source.selector {
        Some(selector) => format!("{} `{selector}`", redacted_url(source.prometheus.as_str())),
        None => redacted_url(source.prometheus.as_str()),
    }
}

fn describe_traffic(traffic: &NoTrafficFile) -> String {
    let source = match (&traffic.prometheus, &traffic.query, &traffic.cloudwatch) {
        (Some(prometheus), Some(query), _) => {
            format!("`{query}` on {}", redacted_url(prometheus.as_str()))
        }
        (_, _, Some(cloudwatch)) => format!(
            "CloudWatch {} of load balancer {}",
            cloudwatch.metric.as_str(),
            cloudwatch.load_balancer
        ),
        _ => "the traffic".to_owned(),
    };
    format!(
        "{source} stays below {} for {}",
        traffic.below.0,
        sunset_plan::format_duration(traffic.hold.0)
    )
}

fn redacted_url(url: &str) -> String {
    crate::gates::without_credentials(url)
}

fn probe_url<'a>(probe: Option<&'a ProbeFile>, action: &'a ActionFile) -> &'a str {
    probe
        .and_then(|p| p.url.as_ref())
        .or(action.url.as_ref())
        .map_or("", |t| t.as_str())
}
fn probe_command<'a>(probe: Option<&'a ProbeFile>, action: &'a ActionFile) -> &'a str {
    probe
        .and_then(|p| p.command.as_ref())
        .or(action.command.as_ref())
        .map_or("", |t| t.as_str())
}
fn probe_sql<'a>(probe: Option<&'a ProbeFile>, action: &'a ActionFile) -> &'a str {
    probe
        .and_then(|p| p.sql.as_ref())
        .or(action.sql.as_ref())
        .map_or("", |t| t.as_str())
}

/// The interval and timeout of an action's validation: the probe's, the action's, the defaults.
pub(crate) fn timing(action: &ActionFile, sequence: &SequenceFile) -> (Duration, Duration) {
    let probe = action.validation.as_ref().and_then(|v| v.probe.as_ref());
    let interval = probe
        .and_then(|p| p.interval)
        .or(action.interval)
        .unwrap_or(sequence.defaults.poll_interval)
        .0;
    let timeout = probe
        .and_then(|p| p.timeout)
        .or(action.timeout)
        .unwrap_or(sequence.defaults.validation_timeout)
        .0;
    (interval, timeout)
}

/// Evaluates one condition against the current state.
pub(crate) async fn evaluate(
    ctx: &Context<'_>,
    condition: Condition,
    action: &ActionFile,
    record: &ActionRecord,
) -> Result<Check, Error> {
    let ids = record.target_ids();
    let probe = action.validation.as_ref().and_then(|v| v.probe.as_ref());
    let ids_ref = &ids;
    let instance_states = |wanted: &'static [&'static str], gone_counts: bool| async move {
        let instances = ctx.cloud.instances_by_id(ids_ref).await?;
        let mut off: Vec<String> = Vec::new();
        for id in ids_ref {
            match instances.iter().find(|i| &i.id == id) {
                Some(i) if wanted.contains(&i.state.as_str()) => {}
                Some(i) => off.push(format!("{} is {}", i.id, i.state)),
                None if gone_counts => {}
                None => off.push(format!("{id} no longer exists")),
            }
        }
        Ok::<Check, Error>(if off.is_empty() {
            Check::Holds(format!("{} {}", ids_ref.len(), wanted[0]))
        } else {
            Check::NotYet(off.join(", "))
        })
    };
    match condition {
        Condition::Validation(ValidationKind::InstanceStopped) => {
            instance_states(&["stopped"], false).await
        }
        Condition::Validation(ValidationKind::InstanceRunning) => {
            instance_states(&["running"], false).await
        }
        Condition::Validation(ValidationKind::InstanceTerminated) => {
            instance_states(&["terminated"], true).await
        }
        Condition::Validation(ValidationKind::SnapshotCompleted) => {
            let wanted: Vec<&String> = record
                .outputs
                .values()
                .filter(|v| v.starts_with("snap-"))
                .collect();
            if wanted.is_empty() {
                return Err(Error::BadInput(format!(
                    "`snapshot_completed` in step `{}` follows an action that made no snapshot",
                    ctx.step
                )));
            }
            let snapshots = ctx.cloud.snapshots_of_run(ctx.run).await?;
            let mut pending = Vec::new();
            for id in &wanted {
                match snapshots.iter().find(|s| &&s.id == id) {
                    Some(s) if s.state == "completed" => {}
                    Some(s) if s.state == "error" => {
                        return Err(Error::Probe(format!(
                            "snapshot {id} failed (state `error`)"
                        )));
                    }
                    Some(s) => pending.push(format!("{id} is {}", s.state)),
                    None => pending.push(format!("{id} is not visible yet")),
                }
            }
            Ok(if pending.is_empty() {
                Check::Holds(format!("{} snapshots completed", wanted.len()))
            } else {
                Check::NotYet(pending.join(", "))
            })
        }
        Condition::Validation(ValidationKind::NoAttachments | ValidationKind::NoMountPoints) => {
            let volume_ids: Vec<String> =
                if record.targets.first().map(|t| t.kind) == Some(ResourceKind::Instance) {
                    let instances = ctx.cloud.instances_by_id(&ids).await?;
                    instances
                        .iter()
                        .flat_map(|i| {
                            i.volumes
                                .iter()
                                .filter(|(d, _)| i.root_device.as_deref() != Some(d.as_str()))
                                .map(|(_, v)| v.clone())
                        })
                        .collect()
                } else {
                    ids.clone()
                };
            let volumes = ctx.cloud.volumes_by_id(&volume_ids).await?;
            let attached: Vec<String> = volumes
                .iter()
                .filter(|v| !v.attachments.is_empty())
                .map(|v| {
                    format!(
                        "{} is attached to {}",
                        v.id,
                        v.attachments
                            .iter()
                            .map(|a| a.instance_id.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })
                .collect();
            Ok(if attached.is_empty() {
                Check::Holds("no attachments".to_owned())
            } else {
                Check::NotYet(attached.join(", "))
            })
        }
        Condition::Validation(ValidationKind::NoActiveConnections) => match probe {
            Some(p) if p.sql.is_some() => {
                sql_is_zero(
                    ctx,
                    action,
                    p.database_url.as_ref().map(|t| t.as_str()),
                    probe_sql(probe, action),
                )
                .await
            }
            Some(p) if p.command.is_some() => {
                command_succeeds(
                    ctx,
                    action,
                    probe_command(probe, action),
                    p.timeout.map(|t| t.0),
                )
                .await
            }
            Some(ProbeFile {
                no_traffic: Some(traffic),
                ..
            }) => crate::gates::no_traffic(traffic, ctx.cloud).await,
            Some(p) if p.url.is_some() => {
                http_answers(
                    ctx,
                    probe_url(probe, action),
                    p.expect_status.or(action.expect_status),
                )
                .await
            }
            _ if record.targets.first().map(|t| t.kind) == Some(ResourceKind::Instance) => {
                instance_states(&["stopped", "terminated"], true).await
            }
            _ => Err(Error::BadInput(format!(
                "`no_active_connections` in step `{}` needs a probe (`sql`, `command` or `url`) when its action has no instances",
                ctx.step
            ))),
        },
        Condition::Validation(ValidationKind::RecordAbsent) => {
            let left = current_records(ctx.cloud, &ids).await?;
            Ok(if left.is_empty() {
                Check::Holds("records absent".to_owned())
            } else {
                Check::NotYet(format!(
                    "still present: {}",
                    left.iter()
                        .map(|r| format!("{} {}", r.name, r.record_type))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
        }
        Condition::Validation(ValidationKind::LoadBalancerGone) => {
            let left: Vec<String> = ctx
                .cloud
                .load_balancers()
                .await?
                .into_iter()
                .filter(|lb| ids.contains(&lb.arn))
                .map(|lb| format!("{} is {}", lb.name, lb.state))
                .collect();
            Ok(if left.is_empty() {
                Check::Holds("load balancers gone".to_owned())
            } else {
                Check::NotYet(left.join(", "))
            })
        }
        Condition::Validation(ValidationKind::SecurityGroupGone) => {
            let deleted: Vec<&String> = record
                .outputs
                .iter()
                .filter(|(_, v)| !v.starts_with("kept"))
                .map(|(k, _)| k)
                .collect();
            let left: Vec<String> = ctx
                .cloud
                .security_groups()
                .await?
                .into_iter()
                .filter(|g| deleted.contains(&&g.id))
                .map(|g| g.id)
                .collect();
            Ok(if left.is_empty() {
                Check::Holds(format!("{} security groups gone", deleted.len()))
            } else {
                Check::NotYet(format!("still present: {}", left.join(", ")))
            })
        }
        Condition::Validation(ValidationKind::HttpStatus) => {
            http_answers(
                ctx,
                probe_url(probe, action),
                probe.and_then(|p| p.expect_status).or(action.expect_status),
            )
            .await
        }
        Condition::Validation(ValidationKind::CommandSucceeds) => {
            command_succeeds(
                ctx,
                action,
                probe_command(probe, action),
                probe.and_then(|p| p.timeout).map(|t| t.0),
            )
            .await
        }
        Condition::Validation(ValidationKind::SqlReturnsZero) => {
            sql_is_zero(
                ctx,
                action,
                probe
                    .and_then(|p| p.database_url.as_ref())
                    .or(action.database_url.as_ref())
                    .map(|t| t.as_str()),
                probe_sql(probe, action),
            )
            .await
        }
        Condition::Validation(ValidationKind::MetricsMatch) => {
            let parity = probe
                .and_then(|p| p.metrics_match.as_ref())
                .ok_or_else(|| {
                    Error::Internal("`metrics_match` without its settings".to_owned())
                })?;
            let reports = ctx
                .cloud
                .audit
                .path()
                .parent()
                .unwrap_or(ctx.state_dir)
                .join(crate::runner::GATES_DIR);
            let name = format!(
                "{}.metrics_match.{}",
                ctx.step,
                sunset_plan::Fingerprint::of(parity).short()
            );
            crate::gates::metrics_match(parity, &ctx.cloud.audit, &reports, &name).await
        }
        Condition::Validation(ValidationKind::NoTraffic) => {
            let traffic = probe
                .and_then(|p| p.no_traffic.as_ref())
                .ok_or_else(|| Error::Internal("`no_traffic` without its settings".to_owned()))?;
            crate::gates::no_traffic(traffic, ctx.cloud).await
        }
        Condition::VolumesDeleted => {
            let left: Vec<String> = ctx
                .cloud
                .volumes_by_id(&ids)
                .await?
                .into_iter()
                .map(|v| format!("{} is {}", v.id, v.state))
                .collect();
            Ok(if left.is_empty() {
                Check::Holds("volumes gone".to_owned())
            } else {
                Check::NotYet(left.join(", "))
            })
        }
        Condition::AddressesReleased => {
            let left: Vec<String> = ctx
                .cloud
                .addresses()
                .await?
                .into_iter()
                .filter(|a| ids.contains(&a.allocation_id))
                .map(|a| a.allocation_id)
                .collect();
            Ok(if left.is_empty() {
                Check::Holds("addresses released".to_owned())
            } else {
                Check::NotYet(format!("still allocated: {}", left.join(", ")))
            })
        }
    }
}

/// One evaluation is bounded by the validation's whole `timeout`.
async fn sql_is_zero(
    ctx: &Context<'_>,
    action: &ActionFile,
    url: Option<&str>,
    sql: &str,
) -> Result<Check, Error> {
    let url = database_url(url)?;
    let (_, timeout) = timing(action, ctx.sequence);
    let value = probes::run_sql(&ctx.cloud.audit, &url, sql, timeout, false).await?;
    Ok(match value.as_deref().map(str::trim) {
        None | Some("0") => Check::Holds(format!(
            "`{sql}` returned {}",
            value.as_deref().unwrap_or("no rows")
        )),
        Some(other) => Check::NotYet(format!("`{sql}` returned {other}")),
    })
}

async fn command_succeeds(
    ctx: &Context<'_>,
    action: &ActionFile,
    command: &str,
    timeout: Option<Duration>,
) -> Result<Check, Error> {
    let (ok, outcome) = probes::run_command(
        &ctx.cloud.audit,
        command,
        None,
        &action.env,
        timeout.unwrap_or(Duration::from_secs(60)),
        false,
    )
    .await?;
    Ok(if ok {
        Check::Holds(format!("`{command}` succeeded"))
    } else {
        Check::NotYet(format!("`{command}`: {outcome}"))
    })
}

async fn http_answers(ctx: &Context<'_>, url: &str, expected: Option<u16>) -> Result<Check, Error> {
    match probes::http_status(&ctx.cloud.audit, "GET", url, Duration::from_secs(30), false).await {
        Ok(status) if status_ok(status, expected) => {
            Ok(Check::Holds(format!("{url} answered {status}")))
        }
        Ok(status) => Ok(Check::NotYet(format!(
            "{url} answered {status}, expected {}",
            expected_status(expected)
        ))),
        Err(Error::Probe(message)) => Ok(Check::NotYet(message)),
        Err(error) => Err(error),
    }
}

/// How a poll ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Polled {
    Held { detail: String, attempts: u32 },
    TimedOut { last: String, attempts: u32 },
    Stopped,
}

/// Evaluates `check` now and then every `interval` until it holds, `timeout` passes, or `stop`
/// is set. Uses tokio's clock, so tests can run hours of polling in a paused runtime.
pub async fn poll<F, Fut>(
    interval: Duration,
    timeout: Duration,
    stop: &Shutdown,
    mut check: F,
    mut on_wait: impl FnMut(&str),
) -> Result<Polled, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Check, Error>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let last = match check().await? {
            Check::Holds(detail) => return Ok(Polled::Held { detail, attempts }),
            Check::NotYet(last) => last,
        };
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(Polled::TimedOut { last, attempts });
        }
        on_wait(&last);
        let wake = (now + interval).min(deadline);
        // Sleep in short slices so an interrupt is noticed within a second.
        while tokio::time::Instant::now() < wake {
            if stop.is_requested() {
                return Ok(Polled::Stopped);
            }
            let slice = wake
                .saturating_duration_since(tokio::time::Instant::now())
                .min(Duration::from_secs(1));
            tokio::time::sleep(slice).await;
        }
        if stop.is_requested() {
            return Ok(Polled::Stopped);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_slow_transition_is_polled_until_it_holds() {
        let stop = Shutdown::new();
        let mut calls = 0;
        let started = tokio::time::Instant::now();
        let outcome = poll(
            Duration::from_secs(15),
            Duration::from_secs(600),
            &stop,
            || {
                calls += 1;
                let now = calls;
                async move {
                    Ok(if now < 4 {
                        Check::NotYet(format!("stopping ({now})"))
                    } else {
                        Check::Holds("stopped".into())
                    })
                }
            },
            |_| {},
        )
        .await
        .unwrap();
        assert_eq!(
            outcome,
            Polled::Held {
                detail: "stopped".into(),
                attempts: 4
            }
        );
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(45),
            "three intervals of 15 s"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_check_that_never_holds_times_out_with_its_last_answer() {
        let stop = Shutdown::new();
        let started = tokio::time::Instant::now();
        let mut waits = Vec::new();
        let outcome = poll(
            Duration::from_secs(60),
            Duration::from_secs(30 * 60),
            &stop,
            || async { Ok(Check::NotYet("i-1 is stopping".into())) },
            |last| waits.push(last.to_owned()),
        )
        .await
        .unwrap();
        assert_eq!(
            outcome,
            Polled::TimedOut {
                last: "i-1 is stopping".into(),
                attempts: 31
            }
        );
        assert_eq!(started.elapsed(), Duration::from_secs(30 * 60));
        assert_eq!(waits.len(), 30);
    }

    #[tokio::test(start_paused = true)]
    async fn an_interrupt_stops_polling_within_a_second() {
        let stop = Shutdown::new();
        let flag = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(2500)).await;
            flag.request();
        });
        let started = tokio::time::Instant::now();
        let outcome = poll(
            Duration::from_secs(3600),
            Duration::from_secs(7200),
            &stop,
            || async { Ok(Check::NotYet("x".into())) },
            |_| {},
        )
        .await
        .unwrap();
        assert_eq!(outcome, Polled::Stopped);
        assert!(started.elapsed() <= Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn an_error_from_the_check_ends_the_poll() {
        let stop = Shutdown::new();
        let error = poll(
            Duration::from_secs(1),
            Duration::from_secs(10),
            &stop,
            || async { Err::<Check, _>(Error::Probe("snapshot failed".into())) },
            |_| {},
        )
        .await
        .unwrap_err();
        assert_eq!(error.to_string(), "snapshot failed");
    }
}
