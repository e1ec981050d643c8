//! `sunset-drop-column`: argument parsing and wiring over `sunset-drop-column-engine`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args as ClapArgs, Parser, Subcommand};
use sunset_cli::{DatabaseArgs, Exit, GlobalArgs, Shutdown, emit, parse, report_error};
use sunset_drop_column_engine::findings::{self, CODES};
use sunset_drop_column_engine::migration::Options;
use sunset_drop_column_engine::{
    Acknowledgements, CheckRequest, Error, Format, GenerateOutcome, GenerateRequest, report,
    scratch,
};

const EXAMPLES: &str = "Examples:
  sunset-drop-column check --table accounts --column legacy_kind --backfill-plan plans/accounts-sti.yaml --repo .
  sunset-drop-column check --table accounts --column legacy_kind --json
  sunset-drop-column generate --table accounts --column legacy_kind --format sqlx --migrations-dir migrations --pr --repo .
  sunset-drop-column codes        # every finding code, for --allow

Exit codes: 0 safe (check) or written (generate), 1 a blocking finding not acknowledged, or the
migration failed on the scratch database, 2 bad input (nothing written).";

/// Proves a legacy column can be dropped, then writes the migration and the Do Not Merge PR.
#[derive(Debug, Parser)]
#[command(name = "sunset-drop-column", version, after_help = EXAMPLES)]
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
    /// Every finding in one pass; exit 1 when a blocking one is not acknowledged.
    Check {
        #[command(flatten)]
        subject: Subject,
        /// Also exercise the table (INSERT, UPDATE, DELETE, reads of its views and functions)
        /// before and after the up migration on a scratch database (needs CREATEDB, pg_dump, psql).
        #[arg(long)]
        probe: bool,
    },
    /// Check, build the migration, verify it up/down/up on a scratch database, then write it.
    Generate {
        #[command(flatten)]
        subject: Subject,
        /// The migration runner: sql, sqlx, diesel, golang-migrate, goose, dbmate, flyway, rails, django, alembic.
        #[arg(long, value_parser = parse_format)]
        format: Format,
        /// Where the runner keeps its migrations (inside --repo with --pr).
        #[arg(long)]
        migrations_dir: PathBuf,
        /// Copy the values to an archive table in the up, so the down restores them.
        #[arg(long)]
        restore_data: bool,
        /// Commit the files and PULL_REQUEST.md to sunset/drop-<table>-<column> and open a draft PR with gh.
        #[arg(long)]
        pr: bool,
        /// lock_timeout of the migration's statements.
        #[arg(long, default_value = "5s", value_parser = parse::duration)]
        lock_timeout: Duration,
        /// statement_timeout of the migration's statements (raise it for --restore-data on big tables).
        #[arg(long, default_value = "1m", value_parser = parse::duration)]
        statement_timeout: Duration,
        /// Migration version as YYYYMMDDHHMMSS (default: the version of an earlier run, else now).
        #[arg(long, value_parser = parse::timestamp)]
        timestamp: Option<chrono::NaiveDateTime>,
    },
    /// List every finding code with what it means.
    Codes,
}

#[derive(Debug, Clone, ClapArgs)]
pub struct Subject {
    /// The table, `table` or `schema.table` (quote unusual names: '"My Table"').
    #[arg(long)]
    table: String,
    /// The column to drop.
    #[arg(long)]
    column: String,
    /// The backfill plan that moved the column's data: its validation becomes data evidence.
    #[arg(long)]
    backfill_plan: Option<PathBuf>,
    /// The application's source tree, searched for the column (respects .gitignore).
    #[arg(long)]
    repo: Option<PathBuf>,
    /// Acknowledge a blocking finding: CODE, or CODE=OBJECT for one object. Repeatable.
    #[arg(long = "allow", value_name = "CODE[=OBJECT]")]
    allow: Vec<String>,
    /// A YAML file of acknowledgements (`allow: [{code, object, reason}]`).
    #[arg(long)]
    config: Option<PathBuf>,
}

fn parse_format(text: &str) -> Result<Format, String> {
    Format::parse(text).ok_or_else(|| {
        let names: Vec<&str> = Format::ALL.iter().map(|f| f.name()).collect();
        format!(
            "unknown migration format `{text}`; expected one of: {}",
            names.join(", ")
        )
    })
}

/// Runs the command; errors are reported here, and the exit code says what happened.
pub async fn run(args: Args, stop: Shutdown) -> Exit {
    let json = args.global.json;
    sunset_cli::conclude::<Error>(execute(args, &stop).await, json)
}

fn acknowledgements(subject: &Subject) -> Result<Acknowledgements, Error> {
    let mut acks = Acknowledgements::default();
    for entry in &subject.allow {
        let (code, object) = match entry.split_once('=') {
            Some((code, object)) => (code, Some(object)),
            None => (entry.as_str(), None),
        };
        if !findings::is_known_code(code) {
            let codes: Vec<&str> = CODES.iter().map(|(c, _)| *c).collect();
            let hint = sunset_plan::closest(code, &codes)
                .map(|c| format!("; did you mean `{c}`?"))
                .unwrap_or_default();
            return Err(Error::BadInput(format!(
                "--allow {entry}: unknown finding code `{code}`{hint} (`sunset-drop-column codes` lists them)"
            )));
        }
        acks.allow(code, object);
    }
    if let Some(config) = &subject.config {
        sunset_drop_column_engine::load_config(config, &mut acks)?;
    }
    Ok(acks)
}

fn check_request(subject: &Subject) -> Result<CheckRequest, Error> {
    Ok(CheckRequest {
        table: subject.table.clone(),
        column: subject.column.clone(),
        backfill_plan: subject.backfill_plan.clone(),
        repo: subject.repo.clone(),
        acknowledgements: acknowledgements(subject)?,
        skip_paths: Vec::new(),
        probe_url: None,
    })
}

async fn execute(args: Args, stop: &Shutdown) -> anyhow::Result<Exit> {
    let json = args.global.json;
    if let Command::Codes = args.command {
        for (code, meaning) in CODES {
            emit(&format!("{code:<26} {meaning}"));
        }
        return Ok(Exit::Done);
    }
    let url = args.database.require()?;
    match args.command {
        Command::Codes => Ok(Exit::Done),
        Command::Check { subject, probe } => {
            let mut request = check_request(&subject)?;
            request.probe_url = probe.then(|| url.clone());
            let client = scratch::connect(&url).await?;
            let report = sunset_drop_column_engine::check(&client, &request).await?;
            if json {
                emit(&serde_json::to_string_pretty(&serde_json::json!({
                    "table": format!("{}.{}", report.target.schema, report.target.table),
                    "column": report.target.column.name,
                    "passed": report.passed(),
                    "blocking": report.blocking().len(),
                    "findings": report.findings,
                    "unused_acknowledgements": report.unused_acknowledgements,
                }))?);
            } else {
                emit(report::text(&report).trim_end());
            }
            Ok(if report.passed() {
                Exit::Done
            } else {
                Exit::Failed
            })
        }
        Command::Generate {
            subject,
            format,
            migrations_dir,
            restore_data,
            pr,
            lock_timeout,
            statement_timeout,
            timestamp,
        } => {
            let request = GenerateRequest {
                check: check_request(&subject)?,
                format,
                migrations_dir,
                options: Options {
                    restore_data,
                    lock_timeout,
                    statement_timeout,
                },
                version: timestamp,
                pull_request: pr,
            };
            let client = scratch::connect(&url).await?;
            let outcome =
                sunset_drop_column_engine::generate(&client, &url, &request, stop).await?;
            match outcome {
                GenerateOutcome::Blocked(report) => {
                    if json {
                        emit(&serde_json::to_string_pretty(&serde_json::json!({
                            "generated": false,
                            "findings": report.findings,
                        }))?);
                    } else {
                        emit(report::text(&report).trim_end());
                    }
                    report_error("error: nothing was written: the check found blocking findings");
                    Ok(Exit::Failed)
                }
                GenerateOutcome::Generated(report, generated) => {
                    if json {
                        emit(&serde_json::to_string_pretty(&serde_json::json!({
                            "generated": true,
                            "findings": report.findings,
                            "files": generated.files,
                            "verification": generated.verification,
                            "pull_request": generated.pull_request,
                        }))?);
                    } else {
                        emit(report::text(&report).trim_end());
                        emit(generated.summary().trim_end());
                    }
                    Ok(Exit::Done)
                }
            }
        }
    }
}
