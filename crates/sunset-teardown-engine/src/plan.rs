//! `plan`: resolves and pins every target, and shows each with its current state, how it was
//! found, how many an action may take, and what each step will change and check.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sunset_plan::format::ActionFile;
use sunset_plan::{StepState, StepView, format_duration};

use crate::Error;
use crate::checks;
use crate::cloud::Cloud;
use crate::model::{ActionPhase, RunState};
use crate::resolve::{Resolver, action_name, resolve_sequence};
use crate::runner::{Options, RunPaths, Teardown, summary};

/// A plan: every step, its resolved targets with their current state, and what will be checked.
#[derive(Debug, Clone, Serialize)]
pub struct PlanReport {
    pub run: String,
    pub sequence: String,
    pub account: String,
    pub region: String,
    pub paths: RunPaths,
    pub steps: Vec<PlanStep>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlanStep {
    pub name: String,
    pub state: String,
    pub irreversible: bool,
    pub wait_time: Option<String>,
    pub next_eligible_at: Option<DateTime<Utc>>,
    pub actions: Vec<PlanAction>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlanAction {
    pub action: String,
    pub summary: String,
    pub phase: ActionPhase,
    pub irreversible: bool,
    /// Set for `command`, `sql` and `http` actions not marked `idempotent`: what happens if a
    /// run is interrupted while one is in flight.
    pub rerun: Option<String>,
    pub target_count: usize,
    /// The `expect` the sequence gives, or the `max_targets` cap that applies.
    pub target_limit: Option<String>,
    pub derived_from: Option<String>,
    pub targets: Vec<PlanTarget>,
    pub checks: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlanTarget {
    pub id: String,
    pub label: Option<String>,
    pub via: String,
    pub state: String,
}

impl PlanReport {
    /// The aligned text of `plan` and `apply`.
    pub fn render(&self) -> String {
        let views: Vec<StepView> = self
            .steps
            .iter()
            .map(|step| {
                let mut details = Vec::new();
                for action in &step.actions {
                    details.push(format!("{}: {}", action.action, action.summary));
                    if let Some(derived) = &action.derived_from {
                        details.push(format!("  targets: {derived}"));
                    }
                    if let Some(limit) = &action.target_limit {
                        details.push(format!("  {} target(s), {limit}", action.target_count));
                    }
                    if let Some(rerun) = &action.rerun {
                        details.push(format!("  note: {rerun}"));
                    }
                    for target in &action.targets {
                        let label = target
                            .label
                            .as_deref()
                            .filter(|l| *l != target.id)
                            .map(|l| format!(" ({l})"))
                            .unwrap_or_default();
                        details.push(format!(
                            "  {}{label}: {} [via {}]",
                            target.id, target.state, target.via
                        ));
                    }
                    for check in &action.checks {
                        details.push(format!("  then: {check}"));
                    }
                }
                if let Some(wait) = &step.wait_time {
                    details.push(format!("then wait {wait} before the next step"));
                }
                let summary = step
                    .actions
                    .iter()
                    .map(|a| a.summary.clone())
                    .collect::<Vec<_>>()
                    .join("; ");
                StepView {
                    name: step.name.clone(),
                    state: step.state.parse().unwrap_or(StepState::Pending),
                    summary,
                    validation: None,
                    irreversible: step.irreversible,
                    details,
                }
            })
            .collect();
        format!(
            "sequence {} (run {}) in account {} region {}\n{}",
            self.sequence,
            self.run,
            self.account,
            self.region,
            sunset_plan::render_steps(&views)
        )
    }
}

impl Teardown {
    /// Resolves every target and pins the resolution in the checkpoint; makes no mutating call.
    pub async fn plan(&self, options: &Options) -> Result<PlanReport, Error> {
        let (cloud, account) = self.connect("plan", options).await?;
        let _lock = self.store.lock()?;
        let mut resolver = Resolver::new(&cloud);
        let fresh = resolve_sequence(&self.sequence, &mut resolver).await?;
        crate::safety::check_target_counts(&self.sequence, &fresh)?;
        self.check_gates(&cloud).await?;
        let previous = self
            .store
            .resume::<RunState>(&self.fingerprint.to_string(), options.restart)?;
        let state = match previous {
            // Re-planning keeps the progress of started steps and re-pins the rest.
            Some(checkpoint) => {
                let mut state = checkpoint.state;
                self.check_same_place(&state, &account, cloud.region())?;
                for (pinned, fresh) in state.steps.iter_mut().zip(fresh) {
                    if pinned.state == StepState::Pending {
                        *pinned = fresh;
                    }
                }
                state.planned_at = Utc::now();
                // Targets may be pinned anew: the next apply shows the plan again.
                state.plan_shown_at = None;
                state
            }
            None => RunState::new(
                self.path.display().to_string(),
                account.clone(),
                cloud.region().to_owned(),
                fresh,
            ),
        };
        self.store.save(&self.fingerprint.to_string(), &state)?;
        self.report(&cloud, &state, options, resolver.known_states())
            .await
    }

    /// Every Prometheus the gates read answers, before anything is pinned or changed.
    pub(crate) async fn check_gates(&self, cloud: &Cloud) -> Result<(), Error> {
        let text = std::fs::read_to_string(&self.path).map_err(|e| {
            Error::BadInput(format!("cannot read sequence {}: {e}", self.path.display()))
        })?;
        crate::gates::check_reachable(
            &self.sequence,
            &self.path.display().to_string(),
            &text,
            &cloud.audit,
        )
        .await
    }

    pub(crate) async fn report(
        &self,
        cloud: &Cloud,
        state: &RunState,
        options: &Options,
        known: BTreeMap<String, String>,
    ) -> Result<PlanReport, Error> {
        let states = current_states(cloud, state, known).await?;
        let steps = self
            .sequence
            .decommission_sequence
            .iter()
            .zip(&state.steps)
            .filter(|((name, _), _)| options.step.as_deref().is_none_or(|s| s == name.as_str()))
            .map(|((_, actions), step)| PlanStep {
                name: step.name.clone(),
                state: step.state.as_str().to_owned(),
                irreversible: actions.iter().any(ActionFile::is_irreversible),
                wait_time: actions
                    .iter()
                    .filter_map(|a| a.wait_time)
                    .max_by_key(|w| w.0)
                    .map(|w| format_duration(w.0).to_string()),
                next_eligible_at: step.next_eligible_at,
                actions: actions
                    .iter()
                    .zip(&step.actions)
                    .map(|(action, record)| PlanAction {
                        action: action_name(action.action),
                        summary: self.redactor.redact(&summary(action, record)),
                        phase: record.phase,
                        irreversible: action.is_irreversible(),
                        rerun: crate::safety::needs_rerun_flag(action).then(|| format!(
                            "not idempotent: if a run is interrupted while it is in flight, it is sent again only with --rerun {}",
                            step.name
                        )),
                        target_count: record.targets.len(),
                        target_limit: crate::safety::target_limit(&self.sequence, action, record),
                        derived_from: record.derived_from.clone(),
                        targets: record
                            .targets
                            .iter()
                            .map(|t| PlanTarget {
                                id: t.id.clone(),
                                label: t.label.clone(),
                                via: t.via.clone(),
                                state: states
                                    .get(&t.id)
                                    .cloned()
                                    .unwrap_or_else(|| "gone".to_owned()),
                            })
                            .collect(),
                        checks: checks::conditions(action)
                            .into_iter()
                            .map(|c| self.redactor.redact(&checks::describe(c, action)))
                            .collect(),
                    })
                    .collect(),
            })
            .collect();
        Ok(PlanReport {
            run: self.run.clone(),
            sequence: self.path.display().to_string(),
            account: state.account.clone(),
            region: state.region.clone(),
            paths: self.paths(),
            steps,
        })
    }
}

/// The current state of every pinned target (`known` states, just read by the resolver, are
/// not read again).
async fn current_states(
    cloud: &Cloud,
    state: &RunState,
    known: BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, Error> {
    let targets = state
        .steps
        .iter()
        .flat_map(|s| &s.actions)
        .flat_map(|a| &a.targets);
    crate::states::target_states(cloud, targets, known).await
}
