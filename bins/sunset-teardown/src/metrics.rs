//! What `--metrics-addr` serves while `apply` and `rollback` run: the sequence's steps, the
//! actions applied, each validation gate's polls, and every AWS (and local) call by service,
//! operation and result, the same calls the audit log records.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use sunset_cli::metrics::{Exposition, Kind};
use sunset_teardown_engine::{CallTally, Error, Event, Ui};

/// The runner's events as counts, beside the step in progress.
#[derive(Debug, Default)]
pub struct Progress {
    /// Events by name (`step_started`, `step_validated`, `action_applied`, `validated`, ...).
    events: BTreeMap<&'static str, u64>,
    current_step: Option<String>,
}

/// A [`Ui`] that counts what passes through it on the way to the real one.
pub struct Counting<'a> {
    pub ui: &'a mut dyn Ui,
    pub progress: Arc<Mutex<Progress>>,
}

impl Ui for Counting<'_> {
    fn event(&mut self, event: &Event) {
        {
            let mut progress = self.progress.lock().unwrap_or_else(|p| p.into_inner());
            *progress.events.entry(event.event).or_default() += 1;
            match event.event {
                "step_started" => progress.current_step.clone_from(&event.step),
                "step_validated" | "done" | "waiting" => progress.current_step = None,
                _ => {}
            }
        }
        self.ui.event(event);
    }

    fn confirm(&mut self, step: &str, summary: &str, irreversible: bool) -> Result<bool, Error> {
        self.ui.confirm(step, summary, irreversible)
    }
}

/// The command's metrics, every sample labelled with the run and the command.
pub fn render(
    run: &str,
    command: &str,
    steps: usize,
    progress: &Mutex<Progress>,
    calls: &CallTally,
) -> String {
    let mut out = Exposition::new(&[("run", run), ("command", command)]);
    let progress = progress.lock().unwrap_or_else(|p| p.into_inner());
    let count = |event: &str| progress.events.get(event).copied().unwrap_or_default() as f64;
    out.single(
        "sunset_teardown_steps",
        "Steps in the sequence.",
        Kind::Gauge,
        steps as f64,
    );
    for (name, help, event) in [
        (
            "sunset_teardown_steps_started_total",
            "Steps this process started (or resumed).",
            "step_started",
        ),
        (
            "sunset_teardown_steps_validated_total",
            "Steps this process finished, every validation held.",
            "step_validated",
        ),
        (
            "sunset_teardown_actions_applied_total",
            "Actions whose calls this process sent and AWS accepted.",
            "action_applied",
        ),
        (
            "sunset_teardown_actions_rolled_back_total",
            "Actions this process undid (rollback).",
            "rolled_back",
        ),
    ] {
        out.single(name, help, Kind::Counter, count(event));
    }
    out.family(
        "sunset_teardown_gate_checks_total",
        "Validation gate polls: `held` ends the gate, `not_yet` polls again after the interval.",
        Kind::Counter,
        [
            ([("result", "held")], count("validated")),
            ([("result", "not_yet")], count("validating")),
        ],
    );
    let current: Vec<(&str, bool)> = progress
        .current_step
        .iter()
        .map(|step| (step.as_str(), true))
        .collect();
    out.one_of(
        "sunset_teardown_step_in_progress",
        "1 for the step running now (no series between steps).",
        "step",
        &current,
    );
    let tally = calls.snapshot();
    let samples = tally.iter().map(|(kind, count)| {
        let labels = [
            ("service", kind.service.as_str()),
            ("operation", kind.operation.as_str()),
            ("mutating", if kind.mutating { "true" } else { "false" }),
            ("result", kind.result.as_str()),
        ];
        (labels, *count as f64)
    });
    out.family(
        "sunset_teardown_api_calls_total",
        "Calls by service and operation, as the audit log records them.",
        Kind::Counter,
        samples,
    );
    out.finish()
}
