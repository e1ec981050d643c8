//! `sunset-archive`: argument parsing, progress display and wiring over `sunset-archive-engine`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::{Parser, Subcommand};
use sunset_archive_engine::{
    ArchiveRef, CreateRequest, CreateStats, Destination, Error, RestoreRequest, S3Options,
};
use sunset_cli::progress::{Display, Meter, Progress, Sample, Unit};
use sunset_cli::{
    DatabaseArgs, Exit, Failure, GlobalArgs, MetricsArgs, Shutdown, StateDirArgs, emit, parse,
};

pub mod metrics;

const EXAMPLES: &str = "Examples:
  sunset-archive create --dest s3://legacy-archive/metrics --name 2026-11 \\
      --dir /etc/legacy-collector --table public.samples --query recent='SELECT * FROM samples WHERE at > now() - interval ''30 days'''
  sunset-archive create --dest ./archives --dir /etc/legacy-collector        # a local directory
  sunset-archive verify s3://legacy-archive/metrics/2026-11 --deep
  sunset-archive list s3://legacy-archive/metrics
  sunset-archive restore s3://legacy-archive/metrics/2026-11 --to /tmp/restored --into-schema restored
  sunset-archive cleanup s3://legacy-archive/metrics --older-than 7d       # abort abandoned uploads

The archive created with `--dest DEST --name NAME` is addressed as DEST/NAME. A killed or stopped
`create` resumes when run again with the same arguments: only the parts the destination lacks are
uploaded. AWS settings come from the standard chain (AWS_PROFILE, AWS_REGION, AWS_ENDPOINT_URL).

Exit codes: 0 done, 1 failed (or verify found a difference), 2 bad arguments or sources (nothing
uploaded), 3 stopped early (Ctrl-C): run the same command again to resume.";

/// Streams config directories and table exports as tar.gz to S3 or a directory, with a
/// manifest and checksums; resumable, verifiable, restorable.
#[derive(Debug, Parser)]
#[command(name = "sunset-archive", version, after_help = EXAMPLES)]
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
    /// Archive directories, tables and queries to DEST/NAME (resumes an interrupted run).
    Create(CreateArgs),
    /// Re-read an archive and check it against its manifest.
    Verify {
        /// The archive: `s3://bucket/prefix/NAME` or `DIR/NAME`.
        archive: String,
        /// Also decompress, re-hash every entry and recount every table's rows.
        #[arg(long)]
        deep: bool,
        #[command(flatten)]
        metrics: MetricsArgs,
    },
    /// List the complete archives in a destination.
    List {
        /// Where archives are: `s3://bucket/prefix` or a directory.
        dest: String,
    },
    /// Extract an archive's files into a directory and load its tables into a schema.
    Restore {
        /// The archive: `s3://bucket/prefix/NAME` or `DIR/NAME`.
        archive: String,
        /// Directory to extract files into (created if missing; existing files are not overwritten).
        #[arg(long)]
        to: PathBuf,
        /// Schema to load table exports into (needs --database-url); without it they are extracted as CSV.
        #[arg(long)]
        into_schema: Option<String>,
        /// Give files the owners the archive records, as GNU tar's --same-owner (needs root).
        #[arg(long)]
        same_owner: bool,
        /// Keep setuid, setgid and sticky bits; without it an archive holding them is refused.
        #[arg(long)]
        preserve_special_bits: bool,
        #[command(flatten)]
        metrics: MetricsArgs,
    },
    /// Abort uploads under DEST that were started before --older-than and never completed.
    Cleanup {
        /// Where archives are: `s3://bucket/prefix` or a directory.
        dest: String,
        /// Only uploads started longer ago than this (`7d`, `12h`).
        #[arg(long, value_parser = parse::duration)]
        older_than: Duration,
        /// Where `create` keeps its run locks: an upload whose `create` is running is never aborted.
        #[command(flatten)]
        state: StateDirArgs,
    },
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// s3://bucket/prefix or a local directory.
    #[arg(long)]
    dest: String,
    /// The archive's name in DEST (default: the first source's name and today's date).
    #[arg(long)]
    name: Option<String>,
    /// A directory (or file) to archive, with modes, owners, mtimes and symlinks.
    #[arg(long = "dir")]
    dirs: Vec<PathBuf>,
    /// A table to export as CSV (schema.table), from one snapshot with the others.
    #[arg(long = "table")]
    tables: Vec<String>,
    /// A query to export as CSV: NAME=SQL.
    #[arg(long = "query", value_parser = parse_query)]
    queries: Vec<(String, String)>,
    /// Upload part size (S3 needs at least 5MiB).
    #[arg(long, default_value = "64MiB", value_parser = parse::size)]
    part_size: u64,
    /// Parts uploaded at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// gzip level, 1 (fastest) to 9 (smallest).
    #[arg(long, default_value_t = 6)]
    level: u32,
    /// Compression threads (default: every core).
    #[arg(long)]
    threads: Option<usize>,
    /// S3 storage class of the archive object (STANDARD, STANDARD_IA, GLACIER_IR, DEEP_ARCHIVE, ...).
    #[arg(long, value_parser = sunset_archive_engine::parse_storage_class)]
    storage_class: Option<String>,
    /// Encrypt the archive and its manifest with this KMS key (id, ARN or alias/NAME).
    #[arg(long)]
    sse_kms_key_id: Option<String>,
    /// An object tag, k=v (repeatable).
    #[arg(long = "tag", value_parser = parse_tag)]
    tags: Vec<(String, String)>,
    /// Object lock retention (compliance mode) until this date: YYYY-MM-DD or RFC 3339.
    #[arg(long, value_parser = parse::date)]
    retain_until: Option<chrono::DateTime<chrono::Utc>>,
    #[command(flatten)]
    state: StateDirArgs,
    /// Abort an interrupted upload of this archive and start afresh.
    #[arg(long)]
    restart: bool,
    #[command(flatten)]
    metrics: MetricsArgs,
}

fn parse_query(text: &str) -> Result<(String, String), String> {
    parse::pair(text, "NAME=SQL")
}

fn parse_tag(text: &str) -> Result<(String, String), String> {
    let (key, value) = parse::pair(text, "key=value")?;
    // S3's rules, checked here so a bad tag fails before any upload, not at its completion.
    let allowed = |c: char| c.is_alphanumeric() || " +-=._:/@".contains(c);
    if key.is_empty() || key.chars().count() > 128 || value.chars().count() > 256 {
        return Err(format!(
            "`{text}`: tag keys take 1 to 128 characters, values up to 256"
        ));
    }
    if let Some(bad) = key.chars().chain(value.chars()).find(|c| !allowed(*c)) {
        return Err(format!(
            "`{text}`: `{bad}` is not allowed in a tag (letters, digits, spaces and + - = . _ : / @)"
        ));
    }
    Ok((key, value))
}

/// Runs the command; errors are reported here, and the exit code says what happened.
pub async fn run(args: Args, stop: Shutdown) -> Exit {
    let json = args.global.json;
    sunset_cli::conclude::<Error>(execute(&args, stop).await, json)
}

async fn execute(args: &Args, stop: Shutdown) -> anyhow::Result<Exit> {
    match &args.command {
        Command::Create(create) => run_create(args, create, stop).await,
        Command::Verify {
            archive,
            deep,
            metrics,
        } => {
            let archive = ArchiveRef::parse(archive)?;
            let read = Arc::new(AtomicU64::new(0));
            let _metrics = serve_read_metrics(metrics, "verify", &archive, &read).await?;
            let display = show_read(&read, args.global.json);
            let report = sunset_archive_engine::verify(&archive, *deep, read).await;
            display.stop();
            let report = report?;
            if args.global.json {
                emit(&serde_json::to_string_pretty(&report)?);
            } else if report.problems.is_empty() {
                emit(&format!(
                    "ok: {archive}: {} bytes, SHA-256 {}{}",
                    report.size,
                    report.sha256,
                    if report.deep {
                        format!(
                            ", {} entries and {} rows checked",
                            report.entries_checked, report.rows_checked
                        )
                    } else {
                        String::new()
                    }
                ));
            } else {
                let mut text = format!("MISMATCH: {archive}");
                for problem in &report.problems {
                    text.push_str(&format!("\n  - {problem}"));
                }
                emit(&text);
            }
            Ok(if report.problems.is_empty() {
                Exit::Done
            } else {
                Exit::Failed
            })
        }
        Command::List { dest } => {
            let dest = Destination::parse(dest)?;
            let listed = sunset_archive_engine::list(&dest).await?;
            if args.global.json {
                emit(&serde_json::to_string_pretty(&listed)?);
            } else {
                for item in &listed {
                    emit(&match &item.problem {
                        Some(problem) => format!("{}\tUNREADABLE: {problem}", item.name),
                        None => format!(
                            "{}\t{}\t{} bytes\t{} entries\t{} tables",
                            item.name,
                            item.created_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
                            item.size.unwrap_or_default(),
                            item.entries.unwrap_or_default(),
                            item.tables.unwrap_or_default()
                        ),
                    });
                }
            }
            Ok(Exit::Done)
        }
        Command::Restore {
            archive,
            to,
            into_schema,
            same_owner,
            preserve_special_bits,
            metrics,
        } => {
            let request = RestoreRequest {
                archive: ArchiveRef::parse(archive)?,
                to: to.clone(),
                database_url: into_schema.as_ref().and(args.database.database_url.clone()),
                into_schema: into_schema.clone(),
                same_owner: *same_owner,
                preserve_special_bits: *preserve_special_bits,
            };
            let read = Arc::new(AtomicU64::new(0));
            let _metrics = serve_read_metrics(metrics, "restore", &request.archive, &read).await?;
            let display = show_read(&read, args.global.json);
            let report = sunset_archive_engine::restore(&request, read).await;
            display.stop();
            let report = report?;
            if args.global.json {
                emit(&serde_json::to_string_pretty(&report)?);
            } else {
                let mut text = format!(
                    "restored {}: {} entries into {}",
                    request.archive,
                    report.files,
                    to.display()
                );
                for (table, rows) in &report.tables {
                    text.push_str(&format!("\n  {table}: {rows} rows"));
                }
                emit(&text);
            }
            Ok(Exit::Done)
        }
        Command::Cleanup {
            dest,
            older_than,
            state,
        } => {
            let dest = Destination::parse(dest)?;
            let cleaned =
                sunset_archive_engine::cleanup(&dest, *older_than, &state.resolve()).await?;
            if args.global.json {
                let items: Vec<_> = cleaned
                    .aborted
                    .iter()
                    .map(|u| serde_json::json!({"key": u.key, "upload_id": u.upload_id, "initiated": u.initiated}))
                    .collect();
                let skipped: Vec<_> = cleaned
                    .skipped
                    .iter()
                    .map(|(u, why)| serde_json::json!({"key": u.key, "upload_id": u.upload_id, "why": why}))
                    .collect();
                emit(&serde_json::to_string_pretty(
                    &serde_json::json!({"aborted": items, "skipped": skipped}),
                )?);
            } else {
                for upload in &cleaned.aborted {
                    emit(&format!(
                        "aborted {} (upload {})",
                        upload.key, upload.upload_id
                    ));
                }
                for (upload, why) in &cleaned.skipped {
                    emit(&format!("skipped {}: {why}", upload.key));
                }
                emit(&format!(
                    "{} abandoned upload(s) aborted",
                    cleaned.aborted.len()
                ));
            }
            Ok(Exit::Done)
        }
    }
}

async fn run_create(args: &Args, create: &CreateArgs, stop: Shutdown) -> anyhow::Result<Exit> {
    let dest = Destination::parse(&create.dest)?;
    let name = match &create.name {
        Some(name) => name.clone(),
        None => default_name(create),
    };
    let request = CreateRequest {
        archive: dest.archive(&name)?,
        dirs: create.dirs.clone(),
        tables: create.tables.clone(),
        queries: create.queries.clone(),
        database_url: args.database.database_url.clone(),
        part_size: create.part_size,
        concurrency: create.concurrency,
        level: create.level,
        threads: create
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, usize::from)),
        s3: S3Options {
            storage_class: create.storage_class.clone(),
            sse_kms_key_id: create.sse_kms_key_id.clone(),
            tags: create.tags.clone(),
            retain_until: create.retain_until,
        },
        state_dir: create.state.resolve(),
        restart: create.restart,
    };
    let stats = Arc::new(CreateStats::default());
    let _metrics = {
        let (archive, stats) = (request.archive.to_string(), Arc::clone(&stats));
        create
            .metrics
            .serve(move || metrics::render_create(&archive, &stats))
            .await?
    };
    let display = show_create(&stats, args.global.json);
    let created = sunset_archive_engine::create(&request, Arc::clone(&stats), stop).await;
    display.stop();
    let created = created?;
    for warning in &created.warnings {
        tracing::warn!("{warning}");
    }
    let manifest = &created.manifest;
    if args.global.json {
        emit(&serde_json::json!({
            "event": "done",
            "archive": request.archive.to_string(),
            "size": manifest.archive.size,
            "sha256": manifest.archive.sha256,
            "parts": manifest.archive.parts,
            "parts_reused": created.resumed_parts,
            "entries": manifest.entries.len(),
            "tables": manifest.tables.iter().map(|t| serde_json::json!({"name": t.name, "rows": t.rows})).collect::<Vec<_>>(),
            "warnings": created.warnings,
        }).to_string());
    } else {
        let mut text = format!(
            "archived {}: {} entries, {} bytes compressed, SHA-256 {} ({} parts, {} kept from an interrupted run)",
            request.archive,
            manifest.entries.len(),
            manifest.archive.size,
            manifest.archive.sha256,
            manifest.archive.parts,
            created.resumed_parts
        );
        for table in &manifest.tables {
            text.push_str(&format!("\n  {}: {} rows", table.name, table.rows));
        }
        emit(&text);
    }
    Ok(Exit::Done)
}

fn default_name(create: &CreateArgs) -> String {
    let first = create
        .dirs
        .first()
        .and_then(|d| d.canonicalize().ok())
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .or_else(|| create.tables.first().cloned())
        .or_else(|| create.queries.first().map(|(n, _)| n.clone()))
        .unwrap_or_else(|| "archive".into());
    let safe: String = first
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("{safe}-{}", chrono::Utc::now().format("%Y-%m-%d"))
}

/// Bytes read, compressed and uploaded against the sources' estimated size.
fn show_create(stats: &Arc<CreateStats>, json: bool) -> Display {
    let stats = Arc::clone(stats);
    let meter = |name| Meter {
        name,
        unit: Unit::Bytes,
    };
    let meters = vec![meter("read"), meter("compressed"), meter("uploaded")];
    Progress::spawn(meters, json, move || {
        let values = [&stats.read, &stats.compressed, &stats.uploaded]
            .map(|counter| counter.load(Ordering::Relaxed));
        let total = stats.read_total.load(Ordering::Relaxed);
        Sample {
            values: values.to_vec(),
            total,
            note: None,
            event: serde_json::json!({
                "read": values[0],
                "compressed": values[1],
                "uploaded": values[2],
                "total_estimate": total,
            }),
        }
    })
}

/// `verify`'s and `restore`'s metrics on `--metrics-addr`, if given, while the handle lives.
async fn serve_read_metrics(
    args: &MetricsArgs,
    command: &'static str,
    archive: &ArchiveRef,
    read: &Arc<AtomicU64>,
) -> Result<Option<sunset_cli::metrics::Endpoint>, Failure> {
    let (archive, read) = (archive.to_string(), Arc::clone(read));
    args.serve(move || metrics::render_read(command, &archive, &read))
        .await
}

/// Bytes of the archive read (verify, restore); their total is not known up front.
fn show_read(read: &Arc<AtomicU64>, json: bool) -> Display {
    let read = Arc::clone(read);
    let meters = vec![Meter {
        name: "read",
        unit: Unit::Bytes,
    }];
    Progress::spawn(meters, json, move || {
        let value = read.load(Ordering::Relaxed);
        Sample {
            values: vec![value],
            total: 0,
            note: None,
            event: serde_json::json!({ "read": value }),
        }
    })
}
