//! `rollback`: undoes the reversible actions of the current attempt, last first, returning each
//! target to the state recorded just before the action touched it and nothing else.

use std::collections::BTreeMap;

use chrono::Utc;
use serde::Serialize;
use sunset_plan::Undo;
use sunset_plan::format::{ActionFile, ActionKind};

use crate::Error;
use crate::actions::{self, Context, InstanceChange};
use crate::model::{ActionPhase, ActionRecord, ResourceKind, RunState};
use crate::resolve::action_name;
use crate::runner::{Options, Redacting, Teardown, Ui, event, summary};

#[derive(Debug, Clone, Default, Serialize)]
pub struct RollbackReport {
    pub undone: Vec<String>,
    pub kept: Vec<String>,
    pub irreversible: Vec<String>,
}

impl Teardown {
    /// Undoes the reversible actions that ran, last first; lists the irreversible ones.
    pub async fn rollback(
        &self,
        options: &Options,
        ui: &mut dyn Ui,
    ) -> Result<RollbackReport, Error> {
        let ui = &mut Redacting {
            ui,
            redactor: &self.redactor,
        };
        let (cloud, account) = self.connect("rollback", options).await?;
        let _lock = self.store.lock()?;
        let mut state = self
            .store
            .resume::<RunState>(&self.fingerprint.to_string(), false)?
            .ok_or_else(|| {
                Error::BadInput(format!(
                    "nothing to roll back: {} was never applied",
                    self.path.display()
                ))
            })?
            .state;
        self.check_same_place(&state, &account, cloud.region())?;
        let mut report = RollbackReport::default();
        let mut work: Vec<(usize, usize)> = Vec::new();
        for (index, step) in state.steps.iter().enumerate().rev() {
            if options.step.as_deref().is_some_and(|s| s != step.name) {
                continue;
            }
            for (position, record) in step.actions.iter().enumerate().rev() {
                if record.phase == ActionPhase::Pending || record.rolled_back_at.is_some() {
                    continue;
                }
                let action = &self.actions_of(&step.name)[position];
                let label = format!("{}: {}", step.name, action_name(action.action));
                match action.undo() {
                    Undo::Reverse => work.push((index, position)),
                    Undo::Kept(why) => report.kept.push(format!("{label}: {why}")),
                    Undo::Irreversible => report.irreversible.push(self.redact(&format!(
                        "{label} ({} — not undone)",
                        summary(action, record)
                    ))),
                }
            }
        }
        for line in report.irreversible.iter().chain(&report.kept) {
            ui.event(&event("rollback_skipped", None, None, line.clone()));
        }
        if work.is_empty() {
            ui.event(&event(
                "done",
                None,
                None,
                "nothing reversible to roll back".to_owned(),
            ));
            return Ok(report);
        }
        let listing: Vec<String> = work
            .iter()
            .map(|&(i, p)| {
                format!(
                    "{}: undo {}",
                    state.steps[i].name,
                    action_name(state.steps[i].actions[p].kind)
                )
            })
            .collect();
        if !ui.confirm("rollback", &listing.join("; "), false)? {
            return Err(Error::Stopped(
                "rollback was not confirmed; nothing was changed".to_owned(),
            ));
        }
        let inventory = self.inventory(&state);
        let attempt = state.attempt.clone();
        for (index, position) in work {
            let step_name = state.steps[index].name.clone();
            let action = self.actions_of(&step_name)[position].clone();
            let record = state.steps[index].actions[position].clone();
            cloud.audit.set_scope(
                Some(&step_name),
                Some(&format!("rollback {}", action_name(action.action))),
            );
            let ctx = Context {
                cloud: &cloud,
                sequence: &self.sequence,
                run: &self.run,
                attempt: &attempt,
                step: &step_name,
                inventory: &inventory,
                state_dir: &self.state_dir,
                stop: &options.stop,
                watch_until: None,
            };
            let done = undo(&ctx, &action, &record).await?;
            state.steps[index].actions[position].rolled_back_at = Some(Utc::now());
            self.save(&state)?;
            let line = format!(
                "{step_name}: undid {} ({})",
                action_name(action.action),
                done.iter()
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            ui.event(&event("rolled_back", Some(&step_name), None, line.clone()));
            report.undone.push(self.redact(&line));
        }
        Ok(report)
    }
}

/// Whether the action moved `id` at all: its state before was not already where the action
/// takes it. A checkpoint from before states were recorded falls back to the action's outputs
/// (`already stopped` means it did not).
fn moved_by_action(record: &ActionRecord, id: &str, already_there: &[&str]) -> bool {
    match record.before.get(id) {
        Some(before) => !already_there.contains(&before.as_str()),
        None => !record
            .outputs
            .get(id)
            .is_some_and(|o| o.starts_with("already")),
    }
}

/// Undoes one reversible action from the attempt's records, touching only the targets the
/// action moved.
async fn undo(
    ctx: &Context<'_>,
    action: &ActionFile,
    record: &ActionRecord,
) -> Result<BTreeMap<String, String>, Error> {
    let ids = record.target_ids();
    let mut done = BTreeMap::new();
    let (change, already_there) = match action.action {
        ActionKind::StopServices | ActionKind::StopInstances => (
            Some((InstanceChange::Start, "stopped")),
            &["stopped", "stopping"][..],
        ),
        ActionKind::StartInstances => (
            Some((InstanceChange::Stop, "running")),
            &["running", "pending"][..],
        ),
        _ => (None, &[][..]),
    };
    if let Some((change, moved_to)) = change {
        let mut to_change = Vec::new();
        for id in &ids {
            if !moved_by_action(record, id, already_there) {
                let before = record
                    .before
                    .get(id)
                    .map_or("already there", String::as_str);
                done.insert(
                    id.clone(),
                    format!("left alone (was {before} before apply)"),
                );
            } else {
                to_change.push(id.clone());
            }
        }
        let live = ctx.cloud.instances_by_id(&to_change).await?;
        let mut movable = Vec::new();
        for id in to_change {
            match live.iter().find(|i| i.id == id) {
                Some(i) if i.state == moved_to => movable.push(id),
                Some(i) => {
                    done.insert(id, format!("left {} (changed since apply)", i.state));
                }
                None => {
                    done.insert(id, "no longer exists".to_owned());
                }
            }
        }
        if !movable.is_empty() {
            done.extend(actions::change_instances(ctx, &movable, &live, change).await?);
        }
        return Ok(done);
    }
    match action.action {
        ActionKind::ShiftTraffic => done.extend(
            crate::gates::restore_shift(action, ctx.cloud, &actions::shift_record(ctx, action))
                .await?,
        ),
        ActionKind::DetachVolumes => done.extend(reattach_volumes(ctx, &ids).await?),
        ActionKind::RemoveDns => {
            let mut saved = Vec::new();
            for id in &ids {
                if let Some(record) = ctx
                    .inventory
                    .load::<crate::resources::RecordInfo>(ResourceKind::Record, id)?
                {
                    saved.push(record);
                }
            }
            done.extend(
                actions::change_records(
                    ctx.cloud,
                    &ids,
                    aws_sdk_route53::types::ChangeAction::Upsert,
                    &saved,
                )
                .await?,
            );
        }
        _ => {}
    }
    Ok(done)
}

/// Re-attaches each volume where the attempt's inventory saw it attached before the detach.
async fn reattach_volumes(
    ctx: &Context<'_>,
    ids: &[String],
) -> Result<BTreeMap<String, String>, Error> {
    #[derive(serde::Deserialize)]
    struct SavedVolume {
        attachments: Vec<crate::resources::Attachment>,
    }
    let cloud = ctx.cloud;
    let mut done = BTreeMap::new();
    let volumes = cloud.volumes_by_id(ids).await?;
    for id in ids {
        let Some(saved) = ctx
            .inventory
            .load::<SavedVolume>(ResourceKind::Volume, id)?
        else {
            done.insert(id.clone(), "no saved attachment".to_owned());
            continue;
        };
        let Some(volume) = volumes.iter().find(|v| &v.id == id) else {
            done.insert(id.clone(), "volume no longer exists".to_owned());
            continue;
        };
        if saved.attachments.is_empty() {
            done.insert(
                id.clone(),
                "left alone (was detached before apply)".to_owned(),
            );
        }
        for attachment in saved.attachments {
            if volume
                .attachments
                .iter()
                .any(|a| a.instance_id == attachment.instance_id)
            {
                done.insert(
                    id.clone(),
                    format!("already attached to {}", attachment.instance_id),
                );
                continue;
            }
            let live = cloud
                .instances_by_id(std::slice::from_ref(&attachment.instance_id))
                .await?;
            if live
                .iter()
                .all(|i| matches!(i.state.as_str(), "terminated" | "shutting-down"))
            {
                done.insert(
                    id.clone(),
                    format!("not re-attached: {} is terminated", attachment.instance_id),
                );
                continue;
            }
            let request = cloud
                .ec2
                .attach_volume()
                .volume_id(id)
                .instance_id(&attachment.instance_id)
                .device(&attachment.device);
            cloud
                .call(
                    "ec2",
                    "AttachVolume",
                    true,
                    &[id.clone(), attachment.instance_id.clone()],
                    request.send(),
                )
                .await?;
            done.insert(
                id.clone(),
                format!(
                    "attached to {} as {}",
                    attachment.instance_id, attachment.device
                ),
            );
        }
    }
    Ok(done)
}
