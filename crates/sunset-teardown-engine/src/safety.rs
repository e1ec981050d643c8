//! What stops a step before it changes anything: the plan-time limits a sequence puts on itself
//! (how many targets one action may resolve to, which actions may not simply be sent again after
//! an interruption) and the protections on the targets (tags, termination and deletion
//! protection).

use sunset_plan::format::{ActionFile, ActionKind, DEFAULT_MAX_TARGETS, SequenceFile};

use crate::Error;
use crate::cloud::Cloud;
use crate::model::{ActionPhase, ActionRecord, ResourceKind, StepRecord};
use crate::resolve::{Resolver, action_name};
use crate::runner::{PROTECT_TAG, Teardown};
use crate::states::Described;

/// Refuses, when the sequence loads, a `database_url` that libpq's rules reject (an unknown
/// `sslmode`, a root file that is not there, a malformed URL) for any `sql` action or probe,
/// and `DATABASE_URL` where a `sql` action or probe falls back to it: a wrong URL is bad input
/// before any call, not a failure halfway through `apply`, after earlier steps changed things.
pub(crate) fn check_database_urls(sequence: &SequenceFile) -> Result<(), Error> {
    for (step, actions) in sequence.decommission_sequence.iter() {
        for action in actions {
            let probe = action.validation.as_ref().and_then(|v| v.probe.as_ref());
            let probe_url = probe.and_then(|p| p.database_url.as_ref());
            let own = [action.database_url.as_ref(), probe_url];
            for url in own.into_iter().flatten() {
                parse_url(step.as_str(), url.as_str(), "`database_url`")?;
            }
            let uses_sql = action.sql.is_some() || probe.is_some_and(|p| p.sql.is_some());
            // The same fallback the action and its probe will use.
            if uses_sql
                && own.iter().all(Option::is_none)
                && let Ok(url) = crate::actions::database_url(None)
            {
                parse_url(step.as_str(), &url, "DATABASE_URL")?;
            }
        }
    }
    Ok(())
}

fn parse_url(step: &str, url: &str, what: &str) -> Result<(), Error> {
    sunset_pg::Database::parse(url)
        .map(drop)
        .map_err(|e| Error::BadInput(format!("step `{step}`: {what}: {e}")))
}

/// Refuses, before anything runs, an action whose targets are not as many as its `expect` says,
/// or (without `expect`) more than the sequence's `max_targets`. Targets derived from an earlier
/// action (volumes of terminated instances, ...) are bounded by that action, so only `expect`
/// applies to them.
pub(crate) fn check_target_counts(
    sequence: &SequenceFile,
    steps: &[StepRecord],
) -> Result<(), Error> {
    for ((step_name, actions), step) in sequence.decommission_sequence.iter().zip(steps) {
        for (action, record) in actions.iter().zip(&step.actions) {
            let count = record.targets.len();
            let allowed = match action.expect {
                Some(expect) => expect.allows(count),
                None if record.derived_from.is_some() => true,
                None => count <= max_targets(sequence) as usize,
            };
            if allowed {
                continue;
            }
            let limit = target_limit(sequence, action, record).unwrap_or_default();
            let mut by_how: Vec<(&str, Vec<String>)> = Vec::new();
            for target in &record.targets {
                match by_how.iter_mut().find(|(via, _)| *via == target.via) {
                    Some((_, found)) => found.push(target.display()),
                    None => by_how.push((&target.via, vec![target.display()])),
                }
            }
            let found = by_how
                .iter()
                .map(|(via, targets)| format!("by {via}: {}", targets.join(", ")))
                .collect::<Vec<_>>()
                .join("; ");
            let advice = if action.expect.is_some() {
                "check the selector, or change `expect`"
            } else {
                "if that many is right, say so with `expect: N` on the action (or raise `max_targets`)"
            };
            return Err(Error::Resolve {
                step: step_name.as_str().to_owned(),
                action: action_name(action.action),
                message: format!(
                    "{count} target(s) found, {limit}; {advice}. Found: {}",
                    if found.is_empty() { "none" } else { &found }
                ),
            });
        }
    }
    Ok(())
}

fn max_targets(sequence: &SequenceFile) -> u32 {
    sequence.max_targets.unwrap_or(DEFAULT_MAX_TARGETS)
}

/// The bound that applies to an action's target count, as the plan shows it.
pub(crate) fn target_limit(
    sequence: &SequenceFile,
    action: &ActionFile,
    record: &ActionRecord,
) -> Option<String> {
    match action.expect {
        Some(expect) => Some(format!("expected {expect}")),
        None if record.derived_from.is_some() || record.targets.is_empty() => None,
        None => Some(format!("at most {} (max_targets)", max_targets(sequence))),
    }
}

/// Actions that run something sunset cannot observe (a command, a statement, a request): once
/// interrupted in flight, nobody knows whether they took effect, so they are not sent again
/// unless the sequence says that is harmless or the operator asks.
pub(crate) fn needs_rerun_flag(action: &ActionFile) -> bool {
    action.runs_locally() && !action.idempotent
}

impl Teardown {
    /// Protection tags, termination protection and deletion protection, for every action of
    /// the step that has not yet run: checked before the step changes anything. Returns the
    /// first action's targets as read here (instances or volumes), for it to start from.
    pub(crate) async fn check_safety(
        &self,
        cloud: &Cloud,
        step: &str,
        actions: &[ActionFile],
        record: &StepRecord,
    ) -> Result<Option<Described>, Error> {
        let mut first = None;
        let protect_keys = [PROTECT_TAG, self.sequence.protect_tag.as_str()];
        let mut problems = Vec::new();
        let mut resolver = Resolver::new(cloud);
        for (position, (action, pinned)) in actions.iter().zip(&record.actions).enumerate() {
            cloud.audit.set_scope(
                Some(step),
                Some(&format!("{} safety checks", action_name(action.action))),
            );
            if matches!(pinned.phase, ActionPhase::Applied | ActionPhase::Validated)
                || pinned.targets.is_empty()
            {
                continue;
            }
            let ids = pinned.target_ids();
            let tagged: Vec<(String, crate::resources::Tags)> = match pinned.targets[0].kind {
                kind @ (ResourceKind::Instance | ResourceKind::Volume) => {
                    let described = Described::read(cloud, kind, &ids).await?;
                    let tagged = described.tags();
                    if position == 0 {
                        first = Some(described);
                    }
                    tagged
                }
                ResourceKind::Address => resolver
                    .all_addresses()
                    .await?
                    .iter()
                    .filter(|a| ids.contains(&a.allocation_id))
                    .map(|a| (a.allocation_id.clone(), a.tags.clone()))
                    .collect(),
                ResourceKind::SecurityGroup => resolver
                    .all_groups()
                    .await?
                    .iter()
                    .filter(|g| ids.contains(&g.id))
                    .map(|g| (g.id.clone(), g.tags.clone()))
                    .collect(),
                ResourceKind::LoadBalancer => {
                    let mut lbs: Vec<_> = resolver
                        .all_load_balancers()
                        .await?
                        .iter()
                        .filter(|lb| ids.contains(&lb.arn))
                        .cloned()
                        .collect();
                    cloud.tag_load_balancers(&mut lbs).await?;
                    for lb in &lbs {
                        if cloud.deletion_protected(&lb.arn).await? {
                            problems.push(format!(
                                "load balancer {} has deletion protection on",
                                lb.name
                            ));
                        }
                    }
                    lbs.into_iter().map(|lb| (lb.arn, lb.tags)).collect()
                }
                ResourceKind::Record => Vec::new(),
            };
            for (id, tags) in tagged {
                if let Some(key) = protect_keys.iter().find(|k| tags.contains_key(**k)) {
                    problems.push(format!("{id} carries the protection tag `{key}`; remove the tag (or the target) to proceed"));
                }
            }
            // Stop protection is enforced by EC2 itself on the whole StopInstances call; only
            // termination protection is read here (one call per instance: no batch form).
            if action.action == ActionKind::TerminateInstances {
                for id in cloud.termination_protected(&ids).await? {
                    problems.push(format!("instance {id} has termination protection on"));
                }
            }
        }
        if problems.is_empty() {
            Ok(first)
        } else {
            Err(Error::Refused {
                step: step.to_owned(),
                message: problems.join("; "),
            })
        }
    }
}
