//! `apply` and `status` of one sequence: the checkpoint (pinned targets and per-action
//! progress), confirmations, validations and wait gates. `plan`, `safety` and `rollback` live
//! beside it. Over 600 lines: the apply state machine (step, action, phase) reads best whole.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use sunset_outcome::Shutdown;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sunset_checkpoint::FileStore;
use sunset_plan::format::{ActionFile, ActionKind, SequenceFile};
use sunset_plan::{Fingerprint, Redactor, StepState, format_duration};

use crate::Error;
use crate::actions::{self, Context};
use crate::audit::AuditLog;
use crate::checks::{self, Polled};
use crate::cloud::Cloud;
use crate::inventory::Inventory;
use crate::model::{ActionPhase, ActionRecord, RunState, Target};
use crate::resolve::{Resolver, action_name, difference, resolve_sequence};
use crate::states::Described;

/// Tag keys that protect a resource from every action, besides the sequence's `protect_tag`.
pub const PROTECT_TAG: &str = "sunset:protect";

/// A loaded, validated sequence and where its run keeps its state.
pub struct Teardown {
    pub path: PathBuf,
    pub sequence: SequenceFile,
    pub fingerprint: Fingerprint,
    /// The run's name: the sequence file's stem and a hash of its absolute path.
    pub run: String,
    pub state_dir: PathBuf,
    pub(crate) store: FileStore,
    /// The environment values the sequence interpolated: no file or output shows them.
    pub(crate) redactor: Redactor,
}

/// What the caller decides for every run.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Accounts allowed besides the sequence's `allowed_accounts`.
    pub allow_accounts: Vec<String>,
    /// Only this step.
    pub step: Option<String>,
    /// Discard the checkpoint and start over (re-resolving every target).
    pub restart: bool,
    /// Caps every `wait_time` (rehearsals and demos).
    pub max_wait: Option<Duration>,
    /// How long this run watches a traffic shift's holds before it exits 3 to be resumed
    /// (without it, for as long as the holds last).
    pub watch_for: Option<Duration>,
    /// Steps whose interrupted `command`, `sql` or `http` actions may be sent again.
    pub rerun: Vec<String>,
    pub stop: Shutdown,
    /// Where the command's calls are counted (the binary serves them as metrics).
    pub calls: Arc<crate::audit::CallTally>,
}

/// What the binary shows or asks on the runner's behalf.
pub trait Ui {
    /// Progress: one human line, and the same as a JSON event.
    fn event(&mut self, event: &Event);
    /// Asks before a step changes anything; `irreversible` steps need the step's name typed.
    fn confirm(&mut self, step: &str, summary: &str, irreversible: bool) -> Result<bool, Error>;
}

#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub event: &'static str,
    pub at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    pub message: String,
}

/// The caller's display, with every environment value of the sequence put back as its
/// `${NAME}` before anything is shown.
pub(crate) struct Redacting<'a> {
    pub(crate) ui: &'a mut dyn Ui,
    pub(crate) redactor: &'a Redactor,
}

impl Ui for Redacting<'_> {
    fn event(&mut self, event: &Event) {
        let mut event = event.clone();
        event.message = self.redactor.redact(&event.message);
        self.ui.event(&event);
    }

    fn confirm(&mut self, step: &str, summary: &str, irreversible: bool) -> Result<bool, Error> {
        self.ui
            .confirm(step, &self.redactor.redact(summary), irreversible)
    }
}

pub(crate) fn event(
    event: &'static str,
    step: Option<&str>,
    action: Option<&str>,
    message: String,
) -> Event {
    Event {
        event,
        at: Utc::now(),
        step: step.map(str::to_owned),
        action: action.map(str::to_owned),
        message,
    }
}

/// The directory of the gates' reports, beside the audit log.
pub(crate) const GATES_DIR: &str = "gates";

/// The files of a run, for operators and reviewers.
#[derive(Debug, Clone, Serialize)]
pub struct RunPaths {
    pub checkpoint: PathBuf,
    pub audit_log: PathBuf,
    pub inventory: PathBuf,
    /// The cutover gates' reports (`STEP.metrics_match.json` and `.md`), beside the audit log.
    pub gates: PathBuf,
}

/// How `apply` ended when it did not fail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ApplyOutcome {
    /// Every step (or the one asked for) is validated.
    Done { steps_run: usize },
    /// A `wait_time` gate: run `apply` again at or after `until`.
    Waiting {
        next_step: String,
        until: DateTime<Utc>,
    },
}

pub(crate) fn summary(action: &ActionFile, record: &ActionRecord) -> String {
    let count = record.targets.len();
    let noun = record
        .targets
        .first()
        .map(|t| t.kind.noun(count))
        .unwrap_or_default();
    let text = |s: &Option<sunset_plan::Text>| {
        s.as_ref()
            .map(|t| t.as_str().to_owned())
            .unwrap_or_default()
    };
    match action.action {
        ActionKind::StopServices if action.command.is_some() => {
            format!("run `{}` for {noun}", text(&action.command))
        }
        ActionKind::StopServices | ActionKind::StopInstances => format!("stop {noun}"),
        ActionKind::StartInstances => format!("start {noun}"),
        ActionKind::TerminateInstances => format!("terminate {noun}"),
        ActionKind::SnapshotVolumes => format!("snapshot {noun}"),
        ActionKind::DetachVolumes => format!("detach {noun}"),
        ActionKind::DeleteVolumes => format!("delete {noun}"),
        ActionKind::ReleaseAddresses => format!("release {noun}"),
        ActionKind::DeleteSecurityGroups => format!("delete {noun}"),
        ActionKind::CleanSecurityGroups => format!("delete {noun} once unused"),
        ActionKind::RemoveDns => format!("remove {noun}"),
        ActionKind::DeleteLoadBalancers => format!("delete {noun}"),
        ActionKind::Archive => format!(
            "archive {} dirs and {} tables",
            action.dirs.len(),
            action.tables.len()
        ),
        ActionKind::Command if count > 0 => format!("run `{}` for {noun}", text(&action.command)),
        ActionKind::Command => format!("run `{}`", text(&action.command)),
        ActionKind::Sql => format!("run SQL `{}`", text(&action.sql)),
        ActionKind::Http => format!(
            "{} {}",
            action.method.as_ref().map_or("POST", |m| m.as_str()),
            text(&action.url)
        ),
        ActionKind::Gate => "change nothing; wait for the validation".to_owned(),
        ActionKind::ShiftTraffic => match &action.traffic {
            Some(traffic) => format!(
                "shift {} through {}% (each held {}, {} gates watched)",
                crate::gates::describe_traffic(traffic),
                action
                    .stages
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join("%, "),
                action
                    .hold
                    .map_or_else(String::new, |h| format_duration(h.0).to_string()),
                action.gates.len()
            ),
            None => "shift traffic".to_owned(),
        },
    }
}

impl Teardown {
    /// Reads and validates a sequence; nothing is called.
    pub fn load(path: &Path, state_dir: &Path) -> Result<Teardown, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::BadInput(format!("cannot read sequence {}: {e}", path.display()))
        })?;
        let loaded = sunset_plan::load_sequence(
            &path.display().to_string(),
            &text,
            &sunset_plan::process_env,
        )?;
        let absolute = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "sequence".to_owned());
        let parent = path
            .parent()
            .and_then(|p| p.file_name())
            .map(|s| format!("{}-", s.to_string_lossy()))
            .unwrap_or_default();
        let hash = Fingerprint::of(&absolute.display().to_string()).to_string();
        let redactor = loaded.redactor;
        let run = format!("{parent}{stem}-{}", &hash[..8]);
        crate::safety::check_database_urls(&loaded.plan)?;
        let dir = state_dir.join("teardown");
        Ok(Teardown {
            path: path.to_owned(),
            sequence: loaded.plan,
            fingerprint: loaded.fingerprint,
            store: FileStore::in_dir(&dir, &run),
            run,
            state_dir: state_dir.to_owned(),
            redactor,
        })
    }

    /// `text` with every environment value of the sequence shown as its `${NAME}`, for
    /// messages the caller prints (errors above all).
    pub fn redact(&self, text: &str) -> String {
        self.redactor.redact(text)
    }

    /// The inventory of one attempt: a restarted run never rolls back to an earlier one's.
    pub(crate) fn inventory(&self, state: &RunState) -> Inventory {
        let base = self.paths().inventory;
        Inventory::new(&if state.attempt.is_empty() {
            base
        } else {
            base.join(&state.attempt)
        })
    }

    pub fn paths(&self) -> RunPaths {
        let dir = self.state_dir.join("teardown").join(&self.run);
        RunPaths {
            checkpoint: self.store.path().to_owned(),
            audit_log: dir.join("audit.jsonl"),
            inventory: dir.join("inventory"),
            gates: dir.join(GATES_DIR),
        }
    }

    /// The checkpoint, read without touching AWS.
    pub fn status(&self) -> Result<Option<RunState>, Error> {
        Ok(self.store.load::<RunState>()?.map(|c| c.state))
    }

    /// `--step` and `--rerun` name steps of this sequence.
    fn check_step_option(&self, options: &Options) -> Result<(), Error> {
        let names: Vec<&str> = self
            .sequence
            .decommission_sequence
            .iter()
            .map(|(n, _)| n.as_str())
            .collect();
        let named = options
            .step
            .iter()
            .map(|s| ("--step", s))
            .chain(options.rerun.iter().map(|s| ("--rerun", s)));
        for (flag, step) in named {
            if names.contains(&step.as_str()) {
                continue;
            }
            let hint = sunset_plan::closest(step, &names)
                .map(|c| format!(" (did you mean `{c}`?)"))
                .unwrap_or_default();
            return Err(Error::BadInput(format!(
                "{flag} `{step}` is not a step of {}{hint}; its steps are {}",
                self.path.display(),
                names.join(", ")
            )));
        }
        Ok(())
    }

    /// Connects, writes the audit log from here on, and refuses an account that is not allowed.
    pub(crate) async fn connect(
        &self,
        command: &str,
        options: &Options,
    ) -> Result<(Cloud, String), Error> {
        self.check_step_option(options)?;
        let audit = Arc::new(AuditLog::open(
            &self.paths().audit_log,
            command,
            self.redactor.clone(),
            Arc::clone(&options.calls),
        )?);
        let cloud =
            Cloud::connect(self.sequence.region.as_ref().map(|r| r.as_str()), audit).await?;
        let account = cloud.account().await?;
        let allowed: Vec<String> = self
            .sequence
            .allowed_accounts
            .iter()
            .map(|a| a.as_str().to_owned())
            .chain(options.allow_accounts.iter().cloned())
            .collect();
        if !allowed.contains(&account) {
            return Err(Error::AccountNotAllowed {
                account,
                allowed: if allowed.is_empty() {
                    "none".to_owned()
                } else {
                    allowed.join(", ")
                },
            });
        }
        Ok((cloud, account))
    }

    /// A checkpoint's pinned ids mean something only in the account and region it was made in.
    pub(crate) fn check_same_place(
        &self,
        state: &RunState,
        account: &str,
        region: &str,
    ) -> Result<(), Error> {
        if state.account != account {
            return Err(Error::BadInput(format!(
                "the checkpoint of this sequence was made in account {}, but the credentials are for {account}; use the same account, or --restart",
                state.account
            )));
        }
        if state.region != region {
            return Err(Error::BadInput(format!(
                "the checkpoint of this sequence was made in region {}, but this run is in {region} (AWS_REGION or the sequence's `region`); use the same region, or --restart",
                state.region
            )));
        }
        Ok(())
    }

    /// Runs the steps in order from the checkpoint; see [`ApplyOutcome`].
    pub async fn apply(&self, options: &Options, ui: &mut dyn Ui) -> Result<ApplyOutcome, Error> {
        let ui = &mut Redacting {
            ui,
            redactor: &self.redactor,
        };
        let (cloud, account) = self.connect("apply", options).await?;
        let _lock = self.store.lock()?;
        let fingerprint = self.fingerprint.to_string();
        // States the resolution just read, so the plan does not describe them again.
        let known;
        let mut state = match self
            .store
            .resume::<RunState>(&fingerprint, options.restart)?
        {
            Some(checkpoint) => {
                let state = checkpoint.state;
                self.check_same_place(&state, &account, cloud.region())?;
                known = self.check_pins(&cloud, &state).await?;
                state
            }
            None => {
                let mut resolver = Resolver::new(&cloud);
                let steps = resolve_sequence(&self.sequence, &mut resolver).await?;
                known = resolver.known_states();
                crate::safety::check_target_counts(&self.sequence, &steps)?;
                self.check_gates(&cloud).await?;
                let state = RunState::new(
                    self.path.display().to_string(),
                    account.clone(),
                    cloud.region().to_owned(),
                    steps,
                );
                self.store.save(&fingerprint, &state)?;
                state
            }
        };
        if state
            .steps
            .iter()
            .any(|s| s.actions.iter().any(|a| a.rolled_back_at.is_some()))
        {
            return Err(Error::BadInput("this run was rolled back; start it over with `apply --restart` (targets are resolved again)".to_owned()));
        }
        match state.plan_shown_at {
            None => {
                let plan = self.report(&cloud, &state, options, known).await?;
                ui.event(&event("plan", None, None, plan.render()));
                state.plan_shown_at = Some(Utc::now());
                self.store.save(&fingerprint, &state)?;
            }
            Some(shown) => ui.event(&event(
                "resumed",
                None,
                None,
                format!(
                    "resuming the run planned at {}; its plan was shown at {} (`sunset-teardown plan` shows it with today's states)",
                    state.planned_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    shown.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ),
            )),
        }
        let inventory = self.inventory(&state);
        let mut steps_run = 0;
        let step_count = state.steps.len();
        for index in 0..step_count {
            let (name, done) = (
                state.steps[index].name.clone(),
                state.steps[index].state.is_done(),
            );
            if let Some(only) = &options.step
                && only != &name
            {
                if !done && self.position(only) > index {
                    return Err(Error::BadInput(format!(
                        "--step `{only}` can not run before step `{name}`, which is {}",
                        state.steps[index].state
                    )));
                }
                continue;
            }
            if done {
                continue;
            }
            if index > 0
                && let Some(until) = state.steps[index - 1].next_eligible_at
                && until > Utc::now()
            {
                return Ok(self.wait_gate(ui, &name, until));
            }
            let actions = self.actions_of(&name);
            let step_summary = actions
                .iter()
                .zip(&state.steps[index].actions)
                .map(|(action, record)| self.redactor.redact(&summary(action, record)))
                .collect::<Vec<_>>()
                .join("; ");
            if !ui.confirm(
                &name,
                &step_summary,
                actions.iter().any(ActionFile::is_irreversible),
            )? {
                return Err(Error::Stopped(format!(
                    "step `{name}` was not confirmed; nothing in it was changed. Run apply again to continue"
                )));
            }
            self.run_step(&cloud, &inventory, &mut state, index, options, ui)
                .await?;
            steps_run += 1;
            let step = &state.steps[index];
            if let Some(until) = step.next_eligible_at
                && index + 1 < step_count
                && options.step.is_none()
                && until > Utc::now()
            {
                let next = state.steps[index + 1].name.clone();
                return Ok(self.wait_gate(ui, &next, until));
            }
        }
        cloud.audit.set_scope(None, None);
        ui.event(&event(
            "done",
            None,
            None,
            format!("{steps_run} step(s) run; every step is validated"),
        ));
        Ok(ApplyOutcome::Done { steps_run })
    }

    fn wait_gate(&self, ui: &mut dyn Ui, next: &str, until: DateTime<Utc>) -> ApplyOutcome {
        let remaining = (until - Utc::now()).to_std().unwrap_or_default();
        ui.event(&event("waiting", Some(next), None, format!(
            "step `{next}` becomes eligible at {} (in {}); run `sunset-teardown apply` again then",
            until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            format_duration(Duration::from_secs(remaining.as_secs().max(1)))
        )));
        ApplyOutcome::Waiting {
            next_step: next.to_owned(),
            until,
        }
    }

    fn position(&self, step: &str) -> usize {
        self.sequence
            .decommission_sequence
            .iter()
            .position(|(n, _)| n.as_str() == step)
            .unwrap_or(usize::MAX)
    }

    pub(crate) fn actions_of(&self, step: &str) -> &[ActionFile] {
        self.sequence
            .decommission_sequence
            .iter()
            .find(|(n, _)| n.as_str() == step)
            .map(|(_, a)| a.as_slice())
            .unwrap_or_default()
    }

    /// Explicit targets of steps not yet started must still resolve to what the plan pinned;
    /// the states read on the way.
    async fn check_pins(
        &self,
        cloud: &Cloud,
        state: &RunState,
    ) -> Result<BTreeMap<String, String>, Error> {
        let mut resolver = Resolver::new(cloud);
        for ((_, actions), step) in self.sequence.decommission_sequence.iter().zip(&state.steps) {
            if step.state != StepState::Pending {
                continue;
            }
            for (action, record) in actions.iter().zip(&step.actions) {
                let explicit = if action.action == ActionKind::RemoveDns {
                    &action.records
                } else {
                    &action.targets
                };
                let Some(kind) =
                    crate::resolve::target_kind(action.action).filter(|_| !explicit.is_empty())
                else {
                    continue;
                };
                let fresh = resolver
                    .resolve(kind, explicit, action.zone.as_ref().map(|z| z.as_str()))
                    .await
                    .map_err(|message| Error::TargetsChanged {
                        step: step.name.clone(),
                        detail: message,
                    })?;
                if let Some(detail) = difference(&record.targets, &fresh) {
                    return Err(Error::TargetsChanged {
                        step: step.name.clone(),
                        detail: format!("`{}` {detail}", action_name(action.action)),
                    });
                }
            }
        }
        Ok(resolver.known_states())
    }

    pub(crate) fn save(&self, state: &RunState) -> Result<(), Error> {
        self.store
            .save(&self.fingerprint.to_string(), state)
            .map_err(Error::from)
    }

    async fn run_step(
        &self,
        cloud: &Cloud,
        inventory: &Inventory,
        state: &mut RunState,
        index: usize,
        options: &Options,
        ui: &mut dyn Ui,
    ) -> Result<(), Error> {
        let name = state.steps[index].name.clone();
        let actions = self.actions_of(&name).to_vec();
        cloud.audit.set_scope(Some(&name), None);
        let mut prefetched = self
            .check_safety(cloud, &name, &actions, &state.steps[index])
            .await?;
        {
            let step = &mut state.steps[index];
            if matches!(step.state, StepState::Pending | StepState::Failed) {
                step.state = step
                    .state
                    .transition(StepState::Running)
                    .map_err(|e| Error::Internal(e.to_string()))?;
                step.started_at.get_or_insert_with(Utc::now);
                step.failure = None;
                self.save(state)?;
            }
        }
        ui.event(&event(
            "step_started",
            Some(&name),
            None,
            format!("step `{name}`"),
        ));
        let attempt = state.attempt.clone();
        let ctx = Context {
            cloud,
            sequence: &self.sequence,
            run: &self.run,
            attempt: &attempt,
            step: &name,
            inventory,
            state_dir: &self.state_dir,
            stop: &options.stop,
            watch_until: options
                .watch_for
                .map(|watch| std::time::Instant::now() + watch),
        };
        for (position, action) in actions.iter().enumerate() {
            // Only the first action may use what the safety checks read: the others run after
            // an action of the same step changed things.
            let described = if position == 0 {
                prefetched.take()
            } else {
                None
            };
            if let Err(error) = self
                .run_action(&ctx, state, index, position, action, described, options, ui)
                .await
            {
                if !matches!(error, Error::Stopped(_)) {
                    let step = &mut state.steps[index];
                    step.failure = Some(self.redactor.redact(&error.with_causes()));
                    if let Ok(failed) = step.state.transition(StepState::Failed) {
                        step.state = failed;
                    }
                    self.save(state)?;
                }
                return Err(error);
            }
        }
        let step = &mut state.steps[index];
        for next in [StepState::Applied, StepState::Validated] {
            step.state = step
                .state
                .transition(next)
                .map_err(|e| Error::Internal(e.to_string()))?;
        }
        let now = Utc::now();
        step.finished_at = Some(now);
        let wait = actions
            .iter()
            .filter_map(|a| a.wait_time)
            .map(|w| w.0)
            .max()
            .unwrap_or_default();
        let wait = options.max_wait.map_or(wait, |cap| wait.min(cap));
        step.next_eligible_at =
            (!wait.is_zero()).then(|| now + chrono::Duration::from_std(wait).unwrap_or_default());
        self.save(state)?;
        ui.event(&event(
            "step_validated",
            Some(&name),
            None,
            format!("step `{name}` validated"),
        ));
        Ok(())
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "the runner's whole context, passed down once"
    )]
    async fn run_action(
        &self,
        ctx: &Context<'_>,
        state: &mut RunState,
        index: usize,
        position: usize,
        action: &ActionFile,
        prefetched: Option<Described>,
        options: &Options,
        ui: &mut dyn Ui,
    ) -> Result<(), Error> {
        let name = action_name(action.action);
        let step = ctx.step;
        ctx.cloud.audit.set_scope(Some(step), Some(&name));
        if options.stop.is_requested() {
            return Err(Error::Stopped(
                "interrupted; run apply again to continue".to_owned(),
            ));
        }
        let phase = state.steps[index].actions[position].phase;
        if phase == ActionPhase::Validated {
            return Ok(());
        }
        if phase == ActionPhase::Started
            && crate::safety::needs_rerun_flag(action)
            && !options.rerun.iter().any(|s| s == step)
        {
            return Err(Error::Refused {
                step: step.to_owned(),
                message: self.redactor.redact(&format!(
                    "`{name}` ({}) was interrupted while it ran, so it may have taken effect; it is not marked `idempotent`, so it is not sent again. Check what it did, then run apply with --rerun {step} to send it again",
                    summary(action, &state.steps[index].actions[position])
                )),
            });
        }
        if matches!(phase, ActionPhase::Pending | ActionPhase::Started) {
            let record = &state.steps[index].actions[position];
            let described = match (prefetched, record.targets.first().map(|t| t.kind)) {
                (Some(described), _) => described,
                (None, Some(kind)) => {
                    Described::read(ctx.cloud, kind, &record.target_ids()).await?
                }
                (None, None) => Described::default(),
            };
            actions::save_inventory(ctx, &state.steps[index].actions[position], &described)?;
            if phase == ActionPhase::Pending {
                let record = &mut state.steps[index].actions[position];
                record.before = crate::states::states_before(&described, record);
            }
            let record = &mut state.steps[index].actions[position];
            record.phase = ActionPhase::Started;
            record.started_at.get_or_insert_with(Utc::now);
            self.save(state)?;
            ui.event(&event(
                "action_started",
                Some(step),
                Some(&name),
                format!(
                    "{step}: {}",
                    summary(action, &state.steps[index].actions[position])
                ),
            ));
            let outputs = actions::execute(
                ctx,
                action,
                &state.steps[index].actions[position],
                &described,
            )
            .await?;
            let record = &mut state.steps[index].actions[position];
            record.outputs.extend(
                outputs
                    .into_iter()
                    .map(|(k, v)| (self.redactor.redact(&k), self.redactor.redact(&v))),
            );
            record.phase = ActionPhase::Applied;
            record.applied_at = Some(Utc::now());
            let outcome: Vec<String> = record
                .outputs
                .iter()
                .map(|(id, what)| format!("{id}: {what}"))
                .collect();
            self.save(state)?;
            ui.event(&event(
                "action_applied",
                Some(step),
                Some(&name),
                format!("{step}: {name} applied ({})", outcome.join(", ")),
            ));
        }
        let (interval, timeout) = checks::timing(action, &self.sequence);
        for condition in checks::conditions(action) {
            let described = checks::describe(condition, action);
            let record = state.steps[index].actions[position].clone();
            let mut waiting = |last: &str| {
                ui.event(&event(
                    "validating",
                    Some(step),
                    Some(&name),
                    format!("{step}: waiting until {described}: {last}"),
                ))
            };
            let polled = checks::poll(
                interval,
                timeout,
                &options.stop,
                || checks::evaluate(ctx, condition, action, &record),
                &mut waiting,
            )
            .await?;
            match polled {
                Polled::Held { detail, .. } => ui.event(&event(
                    "validated",
                    Some(step),
                    Some(&name),
                    format!("{step}: {} ({detail})", checks::describe(condition, action)),
                )),
                Polled::TimedOut { last, .. } => {
                    return Err(Error::ValidationTimedOut {
                        step: step.to_owned(),
                        check: checks::describe(condition, action),
                        timeout: format_duration(timeout).to_string(),
                        last,
                    });
                }
                Polled::Stopped => {
                    return Err(Error::Stopped(
                        "interrupted while validating; run apply again to re-validate and continue"
                            .to_owned(),
                    ));
                }
            }
        }
        let record = &mut state.steps[index].actions[position];
        record.phase = ActionPhase::Validated;
        record.validated_at = Some(Utc::now());
        self.save(state)
    }
}

/// A human summary of a step's targets, for `status`.
pub fn target_list(targets: &[Target]) -> String {
    targets
        .iter()
        .map(Target::display)
        .collect::<Vec<_>>()
        .join(", ")
}
