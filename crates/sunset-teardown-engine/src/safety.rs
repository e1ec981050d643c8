//! Plan-time limits a sequence puts on itself: how many targets one action may resolve to, and
//! which actions may not simply be sent again after an interruption.

use sunset_plan::format::{ActionFile, DEFAULT_MAX_TARGETS, SequenceFile};

use crate::Error;
use crate::model::{ActionRecord, StepRecord};
use crate::resolve::action_name;

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
