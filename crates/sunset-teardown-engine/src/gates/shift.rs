//! `shift_traffic`: the new system's share raised stage by stage, each stage held while its
//! gates are watched; a gate broken for its whole window moves the traffic back to the stage
//! before and stops the run with the evidence.
//!
//! Crash safety: the shift's own record (`shift/NAME.json` beside the audit log) is written
//! before each change (`setting`) and after it (`holding`, with the time); a resumed run reads
//! the weights and sends nothing when they already are the recorded stage's, then holds
//! for what is left of the stage.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sunset_outcome::Shutdown;
use sunset_plan::format::{ActionFile, ShiftGateFile};

use crate::Error;
use crate::cloud::Cloud;
use crate::gates::haproxy::Weights;
use crate::gates::prometheus::Prometheus;
use crate::gates::report::timestamp;
use crate::gates::weighted::Weighted;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Phase {
    /// About to set the stage's weights (they may or may not have been sent).
    Setting,
    /// The stage's weights are set; held since `since`.
    Holding,
    /// A gate broke in this stage; the weights are back at the stage before.
    RolledBack,
    /// Every stage held.
    Done,
}

/// What the shift has done so far, saved after every change.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    /// The run attempt that wrote it: a new attempt (`--restart`) starts from the weights as
    /// they are then.
    #[serde(default)]
    attempt: String,
    /// The weights before the first stage: what `rollback` restores.
    initial: Weights,
    /// Each `below_baseline` gate's value before the first stage, by gate position.
    baselines: Vec<Option<f64>>,
    stage: usize,
    phase: Phase,
    since: f64,
    evidence: Option<String>,
}

/// Where the shift's record lives for this action.
pub(crate) fn record_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.json"))
}

fn load(path: &Path) -> Result<Option<Record>, Error> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Error::Internal(format!(
                "the shift record {} is unreadable: {e}",
                path.display()
            ))
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(Error::io("reading the shift record", path)(error)),
    }
}

fn save(path: &Path, record: &Record) -> Result<(), Error> {
    const WHAT: &str = "writing the shift record";
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(Error::io(WHAT, dir))?;
    }
    let partial = path.with_extension("partial");
    let bytes = serde_json::to_vec_pretty(record).expect("a shift record serializes");
    std::fs::write(&partial, bytes).map_err(Error::io(WHAT, &partial))?;
    std::fs::rename(&partial, path).map_err(Error::io(WHAT, path))
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// How the engine drives one shift.
pub(crate) struct Shift<'a> {
    pub action: &'a ActionFile,
    pub cloud: &'a Cloud,
    pub record: PathBuf,
    pub stop: &'a Shutdown,
    /// How often the gates are read during a hold.
    pub interval: Duration,
    /// This run watches holds until then at the latest, then exits to be resumed.
    pub watch_until: Option<std::time::Instant>,
    pub step: &'a str,
    pub attempt: &'a str,
}

fn target<'a>(action: &'a ActionFile, cloud: &'a Cloud) -> Result<Weighted<'a>, Error> {
    let traffic = action
        .traffic
        .as_ref()
        .ok_or_else(|| Error::Internal("`shift_traffic` without `traffic`".to_owned()))?;
    Weighted::of(traffic, cloud)
}

impl Shift<'_> {
    pub(crate) async fn run(&self) -> Result<Vec<(String, String)>, Error> {
        let target = target(self.action, self.cloud)?;
        let stages = &self.action.stages;
        let hold = self.action.hold.map_or(Duration::ZERO, |h| h.0);
        let mut record = match load(&self.record)? {
            Some(record) if record.attempt == self.attempt => record,
            earlier => {
                // The first stage above the share the new system has now: a shift never moves
                // traffic back to the legacy system on its way up.
                let live = target.weights().await?;
                let first = stages.iter().position(|stage| *stage > live.share());
                let initial = earlier.map_or(live, |r| r.initial);
                let mut baselines = Vec::new();
                for gate in &self.action.gates {
                    // Nothing left to shift: no baseline to take.
                    baselines.push(match gate.below_baseline {
                        Some(_) if first.is_some() => Some(self.baseline(gate).await?),
                        _ => None,
                    });
                }
                let record = Record {
                    attempt: self.attempt.to_owned(),
                    initial,
                    baselines,
                    stage: first.unwrap_or(stages.len() - 1),
                    phase: if first.is_some() {
                        Phase::Setting
                    } else {
                        Phase::Done
                    },
                    since: now(),
                    evidence: None,
                };
                save(&self.record, &record)?;
                record
            }
        };
        if record.phase == Phase::RolledBack {
            // Run again after a broken gate: the stage is tried anew.
            record.phase = Phase::Setting;
            save(&self.record, &record)?;
        }
        while record.phase != Phase::Done {
            let share = stages[record.stage];
            let wanted = Weights::for_share(share);
            if record.phase == Phase::Setting {
                // A crash may have come after the change and before its record: haproxy says.
                if target.weights().await? != wanted {
                    target.set(wanted).await?;
                }
                record.phase = Phase::Holding;
                record.since = now();
                save(&self.record, &record)?;
            } else {
                let live = target.weights().await?;
                if live != wanted {
                    return Err(Error::Blocked {
                        step: self.step.to_owned(),
                        message: format!(
                            "the weights changed behind the shift: stage {share}% wants legacy {} / new {}, they are legacy {} / new {}; set them back, or roll back",
                            wanted.legacy, wanted.new, live.legacy, live.new
                        ),
                    });
                }
            }
            if let Some(evidence) = self
                .hold(&record, share, record.since + hold.as_secs_f64())
                .await?
            {
                let back = match record.stage {
                    0 => record.initial,
                    n => Weights::for_share(stages[n - 1]),
                };
                target.set(back).await?;
                record.phase = Phase::RolledBack;
                record.evidence = Some(evidence.clone());
                save(&self.record, &record)?;
                return Err(Error::Blocked {
                    step: self.step.to_owned(),
                    message: format!(
                        "a gate broke at {share}% on the new system: {evidence}; traffic is back at {}% (legacy {}, new {})",
                        back.share(),
                        back.legacy,
                        back.new
                    ),
                });
            }
            if record.stage + 1 == stages.len() {
                record.phase = Phase::Done;
            } else {
                record.stage += 1;
                record.phase = Phase::Setting;
            }
            save(&self.record, &record)?;
        }
        Ok(vec![
            (
                "shares".to_owned(),
                stages
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            ("weights".to_owned(), {
                let last = Weights::for_share(stages[stages.len() - 1]);
                format!("legacy {}, new {}", last.legacy, last.new)
            }),
        ])
    }

    /// Watches the gates until `until`: the evidence of the first broken one, or `None` once
    /// the stage held.
    async fn hold(&self, record: &Record, share: u32, until: f64) -> Result<Option<String>, Error> {
        loop {
            for (position, gate) in self.action.gates.iter().enumerate() {
                let baseline = record.baselines.get(position).copied().flatten();
                if let Some(evidence) = self.broken(gate, share, baseline, record.since).await? {
                    return Ok(Some(evidence));
                }
            }
            let left = until - now();
            if left <= 0.0 {
                return Ok(None);
            }
            if self.stop.is_requested() {
                return Err(Error::Stopped(format!(
                    "stopped while holding {share}% until {}; apply again to go on holding",
                    timestamp(until)
                )));
            }
            if self
                .watch_until
                .is_some_and(|at| std::time::Instant::now() >= at)
            {
                return Err(Error::Stopped(format!(
                    "the hold of {share}% lasts until {}, longer than this run watches; apply again to go on holding",
                    timestamp(until)
                )));
            }
            tokio::time::sleep(self.interval.min(Duration::from_secs_f64(left))).await;
        }
    }

    /// The mean of the gate's query over its window before the shift starts.
    async fn baseline(&self, gate: &ShiftGateFile) -> Result<f64, Error> {
        let points = self.points(gate).await?;
        let values: Vec<f64> = points
            .iter()
            .map(|(_, v)| *v)
            .filter(|v| v.is_finite())
            .collect();
        if values.is_empty() {
            return Err(Error::Probe(format!(
                "`{}` has no data to take a baseline from before the shift",
                gate.query
            )));
        }
        #[allow(clippy::cast_precision_loss, reason = "a few hundred samples")]
        Ok(values.iter().sum::<f64>() / values.len() as f64)
    }

    async fn points(&self, gate: &ShiftGateFile) -> Result<Vec<(f64, f64)>, Error> {
        let window = gate.window.0.as_secs_f64();
        let step = (window / 30.0).max(1.0);
        let end = now();
        let series = Prometheus::new(gate.prometheus.as_str(), &self.cloud.audit)?
            .query_range(gate.query.as_str(), end - window, end, step)
            .await?;
        Ok(series.into_iter().flat_map(|s| s.points).collect())
    }

    /// A gate is broken when its window, wholly inside the stage (`since` on), has data from
    /// start to end and every sample breaks it; a window without data is broken too (no evidence
    /// of health is no reason to go on). Until a whole window has passed in the stage, it is
    /// not judged: the samples before would be the stage before's.
    async fn broken(
        &self,
        gate: &ShiftGateFile,
        share: u32,
        baseline: Option<f64>,
        since: f64,
    ) -> Result<Option<String>, Error> {
        if now() - since < gate.window.0.as_secs_f64() {
            return Ok(None);
        }
        let name = gate
            .name
            .as_ref()
            .map_or(gate.query.as_str(), |n| n.as_str());
        let window = sunset_plan::format_duration(gate.window.0);
        let points = self.points(gate).await?;
        if points.is_empty() {
            return Ok(Some(format!("`{name}` has no data in the last {window}")));
        }
        let (limit, breaks): (String, Box<dyn Fn(f64) -> bool>) =
            match (gate.below, gate.below_baseline, gate.within_weight) {
                (Some(below), _, _) => (
                    format!("below {}", below.0),
                    Box::new(move |v| v.is_nan() || v >= below.0),
                ),
                (_, Some(factor), _) => {
                    let limit = factor.0 * baseline.unwrap_or(f64::NAN);
                    (
                        format!(
                            "at most {limit} ({}x its baseline {})",
                            factor.0,
                            baseline.unwrap_or(f64::NAN)
                        ),
                        Box::new(move |v| v.is_nan() || limit.is_nan() || v > limit),
                    )
                }
                (_, _, Some(points)) => (
                    format!("within {} points of {share}", points.0),
                    Box::new(move |v| v.is_nan() || (v - f64::from(share)).abs() > points.0),
                ),
                _ => return Err(Error::Internal(format!("gate `{name}` has no threshold"))),
            };
        let start = now() - gate.window.0.as_secs_f64();
        let first = points
            .iter()
            .map(|(at, _)| *at)
            .fold(f64::INFINITY, f64::min);
        let step = (gate.window.0.as_secs_f64() / 30.0).max(1.0);
        if first > start + 2.0 * step || !points.iter().all(|(_, v)| breaks(*v)) {
            return Ok(None);
        }
        let (at, value) = points
            .iter()
            .copied()
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .unwrap_or_default();
        Ok(Some(format!(
            "`{name}` was not {limit} for {window} (last {value} at {})",
            timestamp(at)
        )))
    }
}

/// `rollback`: the weights as they were before the first stage.
pub(crate) async fn restore(
    action: &ActionFile,
    cloud: &Cloud,
    record: &Path,
) -> Result<Vec<(String, String)>, Error> {
    let Some(saved) = load(record)? else {
        return Ok(vec![("weights".to_owned(), "never shifted".to_owned())]);
    };
    let target = target(action, cloud)?;
    if target.weights().await? != saved.initial {
        target.set(saved.initial).await?;
    }
    std::fs::remove_file(record).map_err(Error::io("removing the shift record", record))?;
    Ok(vec![(
        "weights".to_owned(),
        format!(
            "restored: legacy {}, new {}",
            saved.initial.legacy, saved.initial.new
        ),
    )])
}
