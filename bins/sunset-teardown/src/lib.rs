//! `sunset-teardown`: argument parsing, confirmations and output over `sunset-teardown-engine`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::{Parser, Subcommand};
use sunset_cli::{Exit, Failure, GlobalArgs, MetricsArgs, Shutdown, StateDirArgs, emit, parse};
use sunset_teardown_engine::{
    ApplyOutcome, CallTally, Error, Event, Options, Teardown, Ui, target_list,
};

pub mod metrics;

const EXAMPLES: &str = "Examples:
  sunset-teardown plan sequences/legacy-metrics/decommission.yaml        # resolve and pin targets; changes nothing
  sunset-teardown apply sequences/legacy-metrics/decommission.yaml       # confirm each step on the terminal
  sunset-teardown apply sequences/legacy-metrics/decommission.yaml --yes # automation
  sunset-teardown status sequences/legacy-metrics/decommission.yaml --json
  sunset-teardown rollback sequences/legacy-metrics/decommission.yaml --step step_1_collectors

`apply` resumes from the checkpoint: a step's `wait_time` makes it exit 3 with the time the next
step becomes eligible; run it again then. Targets are resolved and pinned by `plan` (or the
first `apply`); if they resolve differently later, apply refuses until you run `plan` again.
AWS settings come from the standard chain (AWS_PROFILE, AWS_REGION, AWS_ENDPOINT_URL). The audit
log (JSON lines) and the inventory of every changed resource live beside the checkpoint.

Exit codes: 0 done, 1 failed (a step stopped; the checkpoint says where), 2 bad sequence, flags or
account (nothing was called or changed), 3 stopped early: a wait gate, a declined confirmation or
Ctrl-C; run the same command again to continue.";

/// Runs a decommission sequence against AWS step by step, validating each step, resumable, with
/// plan, safety guards, an audit log and rollback.
#[derive(Debug, Parser)]
#[command(name = "sunset-teardown", version, after_help = EXAMPLES)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
    /// Run without confirmations (automation). Irreversible steps are not asked about either.
    #[arg(long, global = true)]
    pub yes: bool,
    /// Only this step (apply: it must be the next one; rollback: undo only it).
    #[arg(long, global = true)]
    pub step: Option<String>,
    /// An AWS account id allowed besides the sequence's `allowed_accounts` (repeatable).
    #[arg(long = "allow-account", global = true)]
    pub allow_accounts: Vec<String>,
    #[command(flatten)]
    pub state: StateDirArgs,
    #[command(flatten)]
    pub global: GlobalArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Resolve every target, show its state and what each step will do and check; pins the targets.
    Plan {
        /// The decommission sequence (YAML).
        sequence: PathBuf,
        /// Forget earlier progress and pin everything afresh.
        #[arg(long)]
        restart: bool,
    },
    /// Run the steps in order from the checkpoint, validating each before the next.
    Apply {
        /// The decommission sequence (YAML).
        sequence: PathBuf,
        /// Forget earlier progress (and pins) and start over.
        #[arg(long)]
        restart: bool,
        /// Cap every wait_time at this (rehearsals and demos), e.g. 5s.
        #[arg(long, value_parser = parse::duration)]
        max_wait: Option<Duration>,
        /// Watch a traffic shift's holds for at most this long, then exit 3; apply again goes
        /// on holding where this run left off (without it: as long as the holds last).
        #[arg(long, value_parser = parse::duration)]
        watch_for: Option<Duration>,
        /// Send again the interrupted `command`, `sql` or `http` actions of this step, which a
        /// resumed run otherwise refuses to repeat (repeatable). Check what they did first.
        #[arg(long, value_name = "STEP")]
        rerun: Vec<String>,
        #[command(flatten)]
        metrics: MetricsArgs,
    },
    /// Each step's state and timestamps, from the checkpoint (no AWS call).
    Status {
        /// The decommission sequence (YAML).
        sequence: PathBuf,
    },
    /// Undo the reversible actions that ran, last first; irreversible ones are listed.
    Rollback {
        /// The decommission sequence (YAML).
        sequence: PathBuf,
        #[command(flatten)]
        metrics: MetricsArgs,
    },
}

/// Runs the command; errors are reported here, and the exit code says what happened.
pub async fn run(args: Args, stop: Shutdown) -> Exit {
    let json = args.global.json;
    sunset_cli::conclude::<Error>(execute(&args, stop).await, json)
}

struct Terminal {
    json: bool,
    yes: bool,
    /// `-q`: only the step lines (a 1,000-instance plan is thousands of lines).
    quiet: bool,
}

/// The events `-q` keeps: where the run is, step by step.
const STEP_EVENTS: [&str; 6] = [
    "step_started",
    "step_validated",
    "waiting",
    "done",
    "rolled_back",
    "rollback_skipped",
];

impl Ui for Terminal {
    fn event(&mut self, event: &Event) {
        if self.quiet && !STEP_EVENTS.contains(&event.event) {
            return;
        }
        if self.json {
            emit(&serde_json::to_string(event).unwrap_or_default());
        } else if event.event == "plan" {
            emit(&event.message);
        } else {
            emit(&format!(
                "[{}] {}",
                event.at.format("%H:%M:%S"),
                event.message
            ));
        }
    }

    fn confirm(&mut self, step: &str, summary: &str, irreversible: bool) -> Result<bool, Error> {
        if self.yes {
            return Ok(true);
        }
        if !std::io::stdin().is_terminal() {
            return Err(Error::BadInput(format!(
                "step `{step}` needs a confirmation and stdin is not a terminal: pass --yes to run without asking"
            )));
        }
        let prompt = if irreversible {
            format!("step `{step}` is IRREVERSIBLE: {summary}\ntype the step name to proceed: ")
        } else {
            format!("step `{step}`: {summary}\nproceed? [y/N] ")
        };
        let mut stderr = std::io::stderr();
        let _ = stderr.write_all(prompt.as_bytes());
        let _ = stderr.flush();
        let mut answer = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut answer)
            .map_err(|e| Error::BadInput(format!("cannot read the confirmation: {e}")))?;
        let answer = answer.trim();
        Ok(if irreversible {
            answer == step
        } else {
            matches!(answer, "y" | "Y" | "yes")
        })
    }
}

async fn execute(args: &Args, stop: Shutdown) -> anyhow::Result<Exit> {
    let state_dir = args.state.resolve();
    let (sequence, restart, max_wait, watch_for, rerun) = match &args.command {
        Command::Plan { sequence, restart } => (sequence, *restart, None, None, Vec::new()),
        Command::Apply {
            sequence,
            restart,
            max_wait,
            watch_for,
            rerun,
            ..
        } => (sequence, *restart, *max_wait, *watch_for, rerun.clone()),
        Command::Status { sequence } | Command::Rollback { sequence, .. } => {
            (sequence, false, None, None, Vec::new())
        }
    };
    let teardown = Teardown::load(sequence, &state_dir)?;
    let options = Options {
        allow_accounts: args.allow_accounts.clone(),
        step: args.step.clone(),
        restart,
        max_wait,
        watch_for,
        rerun,
        stop,
        calls: Arc::new(CallTally::default()),
    };
    run_loaded(args, &teardown, &options, sequence)
        .await
        .map_err(|error| {
            // The sequence's environment values put back as their `${NAME}`, keeping the exit
            // of the error the text stands for.
            let exit = sunset_cli::exit_code::<Error>(&error);
            anyhow::Error::new(Failure::new(exit, teardown.redact(&format!("{error:#}"))))
        })
}

async fn run_loaded(
    args: &Args,
    teardown: &Teardown,
    options: &Options,
    sequence: &std::path::Path,
) -> anyhow::Result<Exit> {
    let mut ui = Terminal {
        json: args.global.json,
        yes: args.yes,
        quiet: args.global.verbosity.quiet,
    };
    match &args.command {
        Command::Plan { .. } => {
            let plan = teardown.plan(options).await?;
            if args.global.json {
                emit(&serde_json::to_string_pretty(&plan)?);
            } else {
                emit(&plan.render());
                emit(&format!(
                    "targets pinned in {}; `apply` refuses if they resolve differently later",
                    plan.paths.checkpoint.display()
                ));
            }
            Ok(Exit::Done)
        }
        Command::Apply { metrics, .. } => {
            let (_endpoint, mut ui) =
                serve_metrics(metrics, "apply", teardown, options, &mut ui).await?;
            match teardown.apply(options, &mut ui).await? {
                ApplyOutcome::Done { .. } => Ok(Exit::Done),
                ApplyOutcome::Waiting { .. } => Ok(Exit::Stopped),
            }
        }
        Command::Status { .. } => {
            let state = teardown.status()?;
            let gates = sunset_teardown_engine::saved_reports(&teardown.paths().gates);
            if args.global.json {
                emit(&serde_json::to_string_pretty(
                    &serde_json::json!({"run": teardown.run, "paths": teardown.paths(), "state": state, "gates": gates}),
                )?);
                return Ok(Exit::Done);
            }
            let Some(state) = state else {
                emit(&format!(
                    "{}: not started (run `sunset-teardown plan` or `apply`)",
                    sequence.display()
                ));
                return Ok(Exit::Done);
            };
            emit(&format!(
                "sequence {} (run {}) in account {} region {}, planned {}",
                state.sequence,
                teardown.run,
                state.account,
                state.region,
                state
                    .planned_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ));
            for step in &state.steps {
                let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
                    t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                        .unwrap_or_else(|| "-".to_owned())
                };
                emit(&format!(
                    "{:<10} {}  started {}  finished {}",
                    step.state.as_str(),
                    step.name,
                    time(step.started_at),
                    time(step.finished_at)
                ));
                if let Some(until) = step.next_eligible_at {
                    emit(&format!(
                        "           next step eligible at {}",
                        time(Some(until))
                    ));
                }
                if let Some(failure) = &step.failure {
                    emit(&format!("           failed: {failure}"));
                }
                for action in &step.actions {
                    let rolled = if action.rolled_back_at.is_some() {
                        ", rolled back"
                    } else {
                        ""
                    };
                    emit(&format!(
                        "           {} {:?}{rolled}: {}",
                        sunset_teardown_engine::action_name(action.kind),
                        action.phase,
                        target_list(&action.targets)
                    ));
                }
            }
            for gate in &gates {
                let mut line = format!(
                    "gate {}: {} ({} metrics)",
                    gate.name, gate.verdict, gate.metrics
                );
                if !gate.failing.is_empty() {
                    line.push_str(&format!("; differ: {}", gate.failing.join(", ")));
                }
                if !gate.inconclusive.is_empty() {
                    line.push_str(&format!("; inconclusive: {}", gate.inconclusive.join(", ")));
                }
                emit(&format!("{line}; report: {}", gate.markdown.display()));
            }
            emit(&format!(
                "audit log: {}",
                teardown.paths().audit_log.display()
            ));
            Ok(Exit::Done)
        }
        Command::Rollback { metrics, .. } => {
            let (_endpoint, mut ui) =
                serve_metrics(metrics, "rollback", teardown, options, &mut ui).await?;
            let report = teardown.rollback(options, &mut ui).await?;
            if args.global.json {
                emit(&serde_json::to_string_pretty(&report)?);
            } else if !report.irreversible.is_empty() {
                emit(&format!(
                    "not undone (irreversible): {}",
                    report.irreversible.join("; ")
                ));
            }
            Ok(Exit::Done)
        }
    }
}

/// The command's metrics on `--metrics-addr`, if given, and the display that counts its events.
async fn serve_metrics<'a>(
    args: &MetricsArgs,
    command: &'static str,
    teardown: &Teardown,
    options: &Options,
    ui: &'a mut dyn Ui,
) -> Result<(Option<sunset_cli::metrics::Endpoint>, metrics::Counting<'a>), Failure> {
    let progress = Arc::new(Mutex::new(metrics::Progress::default()));
    let endpoint = {
        let (run, steps) = (
            teardown.run.clone(),
            teardown.sequence.decommission_sequence.len(),
        );
        let (progress, calls) = (Arc::clone(&progress), Arc::clone(&options.calls));
        args.serve(move || metrics::render(&run, command, steps, &progress, &calls))
            .await?
    };
    Ok((endpoint, metrics::Counting { ui, progress }))
}
