//! `sunset-backfill`: argument parsing and wiring over `sunset-backfill-engine`.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use sunset_backfill_engine::ops::{self, Validation};
use sunset_backfill_engine::{Backfill, Error, RunOptions, Stats, preflight, runner};
use sunset_cli::progress::{Display, Meter, Progress, Sample, Unit};
use sunset_cli::{
    Classify, DatabaseArgs, Exit, Failure, GlobalArgs, MetricsArgs, Shutdown, emit, report_error,
};

pub mod metrics;

const EXAMPLES: &str = "Examples:
  sunset-backfill preflight plans/accounts-sti.yaml
  sunset-backfill run plans/accounts-sti.yaml --workers 2 --metrics-addr 127.0.0.1:9187
  sunset-backfill status plans/accounts-sti.yaml --json      # from another terminal
  sunset-backfill pause plans/accounts-sti.yaml               # or: UPDATE sunset.backfill_runs SET state = 'paused'
  sunset-backfill validate plans/accounts-sti.yaml && sunset-backfill finish plans/accounts-sti.yaml

Exit codes: 0 done, 1 failed (or validation mismatch), 2 bad plan or flags (nothing changed),
3 stopped early (Ctrl-C, cancel): run the same command again to resume.";

/// Chunked, exactly-once, resumable STI backfills on PostgreSQL.
#[derive(Debug, Parser)]
#[command(name = "sunset-backfill", version, after_help = EXAMPLES)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub global: GlobalArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run (or resume) the backfill; preflight runs first.
    Run {
        /// The backfill plan (YAML).
        plan: PathBuf,
        /// Workers in this process; each leases key ranges from the run's work table.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
        workers: u16,
        /// Add this process's workers to a run another process started.
        #[arg(long)]
        join: bool,
        /// Discard the progress of a run whose plan changed (its journal is kept for rollback).
        #[arg(long)]
        restart: bool,
        #[command(flatten)]
        metrics: MetricsArgs,
    },
    /// Check the plan against the table, count unmapped values, explain and time one batch.
    Preflight {
        /// The backfill plan (YAML).
        plan: PathBuf,
    },
    /// Show a run's progress and throttle state (from any terminal).
    Status {
        /// The backfill plan (YAML).
        plan: PathBuf,
    },
    /// Pause a running backfill before its next batch.
    Pause {
        /// The backfill plan (YAML).
        plan: PathBuf,
    },
    /// Resume a paused backfill.
    Resume {
        /// The backfill plan (YAML).
        plan: PathBuf,
    },
    /// Stop a running backfill after its current batch (resumable with `run`).
    Cancel {
        /// The backfill plan (YAML).
        plan: PathBuf,
    },
    /// Compare types against the legacy column; exit 1 on any mismatch.
    Validate {
        /// The backfill plan (YAML).
        plan: PathBuf,
    },
    /// Restore the exact old values from the undo journal.
    Rollback {
        /// The backfill plan (YAML).
        plan: PathBuf,
        #[command(flatten)]
        metrics: MetricsArgs,
    },
    /// Validate, then make the discriminator NOT NULL without a long lock.
    Finish {
        /// The backfill plan (YAML).
        plan: PathBuf,
    },
}

impl Command {
    fn plan(&self) -> &PathBuf {
        match self {
            Command::Run { plan, .. }
            | Command::Preflight { plan }
            | Command::Status { plan }
            | Command::Pause { plan }
            | Command::Resume { plan }
            | Command::Cancel { plan }
            | Command::Validate { plan }
            | Command::Rollback { plan, .. }
            | Command::Finish { plan } => plan,
        }
    }
}

/// Runs the command; errors are reported here, and the exit code says what happened.
pub async fn run(args: Args, shutdown: Shutdown) -> Exit {
    let json = args.global.json;
    sunset_cli::conclude::<Error>(execute(&args, shutdown).await, json)
}

async fn execute(args: &Args, shutdown: Shutdown) -> anyhow::Result<Exit> {
    let json = args.global.json;
    let path = args.command.plan();
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::bad_input(format!("cannot read plan `{}`: {e}", path.display())))?;
    let loaded = sunset_backfill_engine::load(&path.display().to_string(), &text)?;
    let url = args.database.require()?;
    let (mut client, backfill) = sunset_backfill_engine::open(&url, &loaded).await?;
    match &args.command {
        Command::Preflight { .. } => {
            let report = preflight::check(&mut client, &backfill).await?;
            print_preflight(json, true, &backfill, &report);
            Ok(Exit::Done)
        }
        Command::Run {
            workers,
            join,
            restart,
            metrics,
            ..
        } => {
            let report = preflight::check(&mut client, &backfill).await?;
            if !json {
                print_preflight(false, false, &backfill, &report);
            }
            drop(client);
            let stats = Arc::new(Stats::default());
            let _metrics = serve_metrics(metrics, &backfill, usize::from(*workers), &stats).await?;
            let options = RunOptions {
                workers: usize::from(*workers),
                join: *join,
                restart: *restart,
                rows_in_scope: Some(report.rows_in_scope),
            };
            let display = show_progress(&stats, json);
            let outcome = runner::run(&url, &backfill, options, stats.clone(), shutdown).await;
            display.stop();
            finish_progress(&stats, json, Work::Run, &outcome);
            outcome?;
            Ok(Exit::Done)
        }
        Command::Status { .. } => {
            let status = ops::status(&mut client, &backfill.run).await?;
            let Some(status) = status else {
                return Err(Failure::bad_input(format!(
                    "run `{}` has never started",
                    backfill.run
                ))
                .into());
            };
            if json {
                emit(&serde_json::to_string_pretty(&status)?);
            } else {
                let percent = if status.total_rows == 0 {
                    100.0
                } else {
                    status.rows_seen as f64 * 100.0 / status.total_rows as f64
                };
                emit(&format!(
                    "run        {}\nstate      {}\nprogress   {}/{} rows ({percent:.1}%), {} changed\nranges     {}/{} done, {} leased by live workers\nthrottle   {}\nbatch size {}\njournal    {} entries\nupdated    {}",
                    status.run,
                    status.state,
                    status.rows_seen,
                    status.total_rows,
                    status.rows_changed,
                    status.ranges_done,
                    status.ranges,
                    status.workers,
                    status.throttle.as_deref().unwrap_or("none"),
                    status.batch_size.map_or("-".to_owned(), |s| s.to_string()),
                    status.journal_entries,
                    status.updated_at.to_rfc3339(),
                ));
            }
            Ok(Exit::Done)
        }
        Command::Pause { .. } | Command::Resume { .. } | Command::Cancel { .. } => {
            let (state, verb) = match &args.command {
                Command::Pause { .. } => ("paused", "paused"),
                Command::Resume { .. } => ("running", "resumed"),
                _ => ("cancelling", "cancelling"),
            };
            ops::set_state(&mut client, &backfill.run, state).await?;
            report_error(&format!("run `{}` {verb}", backfill.run));
            Ok(Exit::Done)
        }
        Command::Validate { .. } => {
            let validation = ops::validate(&client, &backfill).await?;
            ops::record_validation(&client, &backfill.run, &validation).await?;
            print_validation(json, &validation);
            Ok(if validation.passed() {
                Exit::Done
            } else {
                Exit::Failed
            })
        }
        Command::Rollback { metrics, .. } => {
            drop(client);
            let stats = Arc::new(Stats::default());
            let _metrics = serve_metrics(metrics, &backfill, 1, &stats).await?;
            let display = show_progress(&stats, json);
            let outcome = ops::rollback(&url, &backfill, stats.clone(), shutdown).await;
            display.stop();
            let copy = matches!(
                backfill.mode,
                sunset_backfill_engine::catalog::Mode::Copy(_)
            );
            finish_progress(&stats, json, Work::Rollback { copy }, &outcome);
            outcome?;
            Ok(Exit::Done)
        }
        Command::Finish { .. } => match ops::finish(&client, &backfill).await? {
            Ok(finished) => {
                if json {
                    emit(&serde_json::to_string(&finished)?);
                } else if finished.already_not_null {
                    emit(&format!(
                        "`{}` is already NOT NULL",
                        backfill.discriminator.name
                    ));
                } else {
                    emit(&format!(
                        "`{}` is now NOT NULL (via check constraint `{}`, validated without a long lock)",
                        backfill.discriminator.name, finished.constraint
                    ));
                }
                Ok(Exit::Done)
            }
            Err(validation) => {
                print_validation(json, &validation);
                report_error(
                    "error: finish refused: validation found rows with a wrong or missing type",
                );
                Ok(Exit::Failed)
            }
        },
    }
}

/// The run's metrics on `--metrics-addr`, if given, for as long as the handle lives.
async fn serve_metrics(
    args: &MetricsArgs,
    backfill: &Backfill,
    workers: usize,
    stats: &Arc<Stats>,
) -> Result<Option<sunset_cli::metrics::Endpoint>, Failure> {
    let run = backfill.run.clone();
    let stats = Arc::clone(stats);
    args.serve(move || metrics::render(&run, workers, &stats))
        .await
}

/// Rows visited against the total, with the throttle reason as the note.
fn show_progress(stats: &Arc<Stats>, json: bool) -> Display {
    let stats = Arc::clone(stats);
    let meters = vec![Meter {
        name: "rows",
        unit: Unit::Rows,
    }];
    Progress::spawn(meters, json, move || Sample {
        values: vec![Stats::get(&stats.rows_seen)],
        total: Stats::get(&stats.total_rows),
        note: stats.throttle(),
        event: progress_fields(&stats),
    })
}

fn progress_fields(stats: &Stats) -> serde_json::Value {
    serde_json::json!({
        "rows_done": Stats::get(&stats.rows_seen),
        "rows_changed": Stats::get(&stats.rows_changed),
        "rows_total": Stats::get(&stats.total_rows),
        "batches": Stats::get(&stats.batches),
        "batch_size": Stats::get(&stats.batch_size),
        "retries": Stats::get(&stats.retries),
        "throttle": stats.throttle(),
    })
}

/// What the last line says the command did: a run visits and changes rows; a rollback replays
/// journal entries and restores the old values (in place) or removes the copies (copy mode).
#[derive(Debug, Clone, Copy)]
enum Work {
    Run,
    Rollback { copy: bool },
}

fn finish_progress(stats: &Stats, json: bool, work: Work, outcome: &Result<(), Error>) {
    let stopped = outcome.as_ref().is_err_and(Error::is_stopped);
    let word = match outcome {
        Ok(()) => "done",
        Err(_) if stopped => "stopped",
        Err(_) => "failed",
    };
    if json {
        emit(&sunset_cli::progress::event(word, progress_fields(stats)).to_string());
        return;
    }
    let (seen, changed) = (
        Stats::get(&stats.rows_seen),
        Stats::get(&stats.rows_changed),
    );
    let (batches, retries) = (Stats::get(&stats.batches), Stats::get(&stats.retries));
    report_error(&match work {
        Work::Run => format!(
            "{word}: {seen} rows visited, {changed} changed, {batches} batches, {retries} retries"
        ),
        Work::Rollback { copy } => format!(
            "{word}: {seen} journal entries replayed, {changed} rows {}, {batches} batches, {retries} retries",
            if copy { "removed" } else { "restored" }
        ),
    });
}

fn print_preflight(
    json: bool,
    with_explain: bool,
    backfill: &Backfill,
    report: &preflight::Preflight,
) {
    if json {
        let value = serde_json::json!({
            "run": backfill.run,
            "table": backfill.table.display(),
            "rows_in_scope": report.rows_in_scope,
            "unmapped": report.unmapped.iter().map(|(v, n)| serde_json::json!({"value": v, "rows": n})).collect::<Vec<_>>(),
            "already_present": report.already_present.iter().map(|(s, n)| serde_json::json!({"source": s, "rows": n})).collect::<Vec<_>>(),
            "already_typed": report.already_typed.as_ref().map(|t| serde_json::json!({
                "same": t.same,
                "different": t.different,
                "overwrite": t.overwrite,
                "sample": t.sample.iter().map(|(key, now, mapped)| serde_json::json!({"key": key, "type": now, "mapped": mapped})).collect::<Vec<_>>(),
            })),
            "explain": report.explain,
            "sample_rows": report.sample.map(|s| s.0),
            "sample_ms": report.sample.map(|s| s.1.as_secs_f64() * 1000.0),
            "estimate_seconds": report.estimate.map(|d| d.as_secs_f64()),
        });
        emit(&value.to_string());
        return;
    }
    let details = if !report.already_present.is_empty() {
        let present = report
            .already_present
            .iter()
            .map(|(source, n)| format!("{source}: {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        format!("keys already in the table (left alone): {present}")
    } else if report.unmapped.is_empty() {
        "unmapped: none".to_owned()
    } else {
        let unmapped = report
            .unmapped
            .iter()
            .map(|(v, n)| format!("{}: {n}", v.as_deref().unwrap_or("NULL")))
            .collect::<Vec<_>>()
            .join(", ");
        format!("unmapped: {unmapped}")
    };
    let sample = report.sample.map_or("-".to_owned(), |(rows, took)| {
        format!(
            "{rows} rows in {:.1} ms (rolled back)",
            took.as_secs_f64() * 1000.0
        )
    });
    let estimate = report
        .estimate
        .map_or("-".to_owned(), |d| format!("{:.0}s", d.as_secs_f64()));
    let explain = if with_explain {
        format!(
            "\n  plan of one batch:\n    {}",
            report.explain.replace('\n', "\n    ")
        )
    } else {
        String::new()
    };
    let key: Vec<&str> = backfill.key.iter().map(|c| c.name.as_str()).collect();
    let typed = report
        .already_typed
        .as_ref()
        .map(already_typed_line)
        .unwrap_or_default();
    report_error(&format!(
        "preflight: {} ({} rows in scope), key ({}), {details}{typed}\n  sample batch: {sample}; estimated duration: {estimate}{explain}",
        backfill.table.display(),
        report.rows_in_scope,
        key.join(", "),
    ));
}

/// In place: the rows already typed, and what the run does with those typed otherwise.
fn already_typed_line(typed: &preflight::AlreadyTyped) -> String {
    let mut line = format!(
        "\n  already typed: {} as the mapping says (nothing to do), {} otherwise",
        typed.same, typed.different
    );
    if typed.different > 0 {
        let examples = typed
            .sample
            .iter()
            .map(|(key, now, mapped)| format!("({}) {now}, mapping says {mapped}", key.join(", ")))
            .collect::<Vec<_>>()
            .join("; ");
        line.push_str(&if typed.overwrite {
            format!(
                ": REPLACED by the mapping's type and journalled (overwrite: true); e.g. {examples}"
            )
        } else {
            format!(": left alone (overwrite: false; validate lists them); e.g. {examples}")
        });
    }
    line
}

fn print_validation(json: bool, validation: &Validation) {
    if json {
        emit(&serde_json::to_string_pretty(validation).unwrap_or_default());
        return;
    }
    let mut out = String::new();
    if !validation.counts.is_empty() {
        out.push_str("legacy value -> type: rows\n");
    }
    for count in &validation.counts {
        let mark = match (&count.expected, &count.found) {
            (Some(e), Some(f)) if e == f => "ok",
            (None, _) => "left alone",
            (Some(_), Some(_)) if validation.kept > 0 => {
                "kept: typed before the run, overwrite: false"
            }
            _ => "MISMATCH",
        };
        out.push_str(&format!(
            "  {} -> {}: {} ({mark})\n",
            count.legacy.as_deref().unwrap_or("NULL"),
            count.found.as_deref().unwrap_or("NULL"),
            count.rows
        ));
    }
    if !validation.sources.is_empty() {
        out.push_str("source -> type: rows, missing, wrong type, values differ\n");
    }
    for source in &validation.sources {
        let mark = if source.missing == 0 && source.mismatched == 0 && source.differing == 0 {
            "ok"
        } else {
            "MISMATCH"
        };
        out.push_str(&format!(
            "  {} -> {}: {}, {}, {}, {} ({mark})\n",
            source.source,
            source.type_name,
            source.rows,
            source.missing,
            source.mismatched,
            source.differing
        ));
    }
    out.push_str(&format!(
        "mismatched: {}, without a type: {}, missing: {}",
        validation.mismatched, validation.untyped, validation.missing
    ));
    if !validation.offending_keys.is_empty() {
        let keys: Vec<String> = validation
            .offending_keys
            .iter()
            .map(|k| format!("({})", k.join(", ")))
            .collect();
        out.push_str(&format!("\nfirst offending keys: {}", keys.join(" ")));
    }
    if validation.differing > 0 {
        let rows: Vec<String> = validation
            .differing_rows
            .iter()
            .map(|(key, columns)| format!("({}): {}", key.join(", "), columns.join(", ")))
            .collect();
        out.push_str(&format!(
            "\ncopied rows whose values differ from their source: {}, first: {}",
            validation.differing,
            rows.join("; ")
        ));
    }
    if validation.kept > 0 {
        let keys: Vec<String> = validation
            .kept_keys
            .iter()
            .map(|k| format!("({})", k.join(", ")))
            .collect();
        out.push_str(&format!(
            "\nkept another type (overwrite: false): {} rows, first keys: {}",
            validation.kept,
            keys.join(" ")
        ));
    }
    emit(&out);
}
