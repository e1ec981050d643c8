//! The logic behind `sunset-drop-column`: prove a column drop is safe, then write the staged up
//! and truthful down migration in the team's runner format, verified up/down/up on a scratch
//! database, and prepare the Do Not Merge pull request.
//!
//! Flow: [`check`] gathers every finding in one pass ([`target`] resolves the column,
//! [`dependents`] walks the catalog, [`references`] searches function bodies, the repository and
//! `pg_stat_statements`, [`parity`] runs the backfill's validation). [`generate`] then builds the
//! [`migration`], renders it with [`formats`], verifies it with [`scratch`] and writes files or
//! the branch ([`pr`]).

pub mod dependents;
mod error;
pub mod findings;
pub mod formats;
pub mod migration;
pub mod parity;
pub mod pr;
pub mod references;
pub mod report;
pub mod scratch;
pub mod snapshot;
pub mod target;
mod tool;

use std::path::{Path, PathBuf};

use chrono::NaiveDateTime;
use tokio_postgres::Client;

pub use error::Error;
pub use findings::{Acknowledgements, Finding};
pub use formats::Format;
pub use target::Target;

use dependents::Dependent;

/// What `check` looks at.
#[derive(Debug, Clone)]
pub struct CheckRequest {
    pub table: String,
    pub column: String,
    pub backfill_plan: Option<PathBuf>,
    /// The application's source tree to search.
    pub repo: Option<PathBuf>,
    pub acknowledgements: Acknowledgements,
    /// Paths under `repo` that are not evidence (the migrations being generated).
    pub skip_paths: Vec<PathBuf>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckReport {
    pub target: Target,
    pub findings: Vec<Finding>,
    pub unused_acknowledgements: Vec<String>,
    #[serde(skip)]
    pub dependents: Vec<Dependent>,
}

impl CheckReport {
    /// Blocking findings nobody acknowledged.
    pub fn blocking(&self) -> Vec<&Finding> {
        self.findings.iter().filter(|f| f.blocks()).collect()
    }

    pub fn passed(&self) -> bool {
        self.blocking().is_empty()
    }
}

/// Reads `--config FILE` acknowledgements into `acks`.
pub fn load_config(path: &Path, acks: &mut Acknowledgements) -> Result<(), Error> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::BadInput(format!("--config {}: cannot read it: {e}", path.display()))
    })?;
    let codes: Vec<&str> = findings::CODES.iter().map(|(c, _)| *c).collect();
    let config = sunset_plan::load_drop_column_config(
        &path.display().to_string(),
        &text,
        &sunset_plan::process_env,
        &codes,
    )?;
    for allow in &config.allow {
        acks.allow(
            allow.code.as_str(),
            allow.object.as_ref().map(|o| o.as_str()),
        );
    }
    Ok(())
}

/// Every finding in one pass. Bad input (unknown table or column, key columns) is an error.
pub async fn check(client: &Client, request: &CheckRequest) -> Result<CheckReport, Error> {
    let target = target::resolve(client, &request.table, &request.column).await?;
    let mut findings = Vec::new();
    if let Some(plan) = &request.backfill_plan {
        findings.extend(parity::check(client, plan, &target).await?);
    }
    // From here on, definitions read from the catalog name every object with its schema, so the
    // migration does not depend on the runner's search_path (the column's type included).
    client
        .batch_execute("SET search_path = ''")
        .await
        .map_err(Error::db("qualifying names"))?;
    let target = target::resolve(client, &target.table_sql, &target.column.name_sql).await?;
    let mut dependents = dependents::find(client, &target).await?;
    for body in references::function_bodies(client, &target).await? {
        // A trigger already dropped for its UPDATE OF or WHEN clause is dropped once.
        let same_drop = |d: &Dependent| {
            d.change.as_ref().map(|c| &c.down) == body.change.as_ref().map(|c| &c.down)
        };
        if body.change.is_some() && dependents.iter().any(same_drop) {
            dependents.push(Dependent::finding(body.finding));
        } else {
            dependents.push(body);
        }
    }
    findings.extend(dependents.iter().map(|d| d.finding.clone()));
    if let Some(repo) = &request.repo {
        findings.extend(references::code_references(
            repo,
            &target,
            &request.skip_paths,
        )?);
    }
    findings.extend(references::live_use(client, &target).await?);
    request.acknowledgements.apply(&mut findings);
    let unused = request
        .acknowledgements
        .unused(&findings)
        .into_iter()
        .map(str::to_owned)
        .collect();
    Ok(CheckReport {
        target,
        findings,
        unused_acknowledgements: unused,
        dependents,
    })
}

#[derive(Debug, Clone)]
pub struct GenerateRequest {
    pub check: CheckRequest,
    pub format: Format,
    pub migrations_dir: PathBuf,
    pub options: migration::Options,
    /// Fixed migration version (else: the version of an earlier run, else now).
    pub version: Option<NaiveDateTime>,
    /// Commit to a branch (and open a draft with `gh` when installed).
    pub pull_request: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Generated {
    /// Paths written (in the working tree, or on the branch relative to the repository).
    pub files: Vec<String>,
    pub verification: scratch::Verification,
    pub pull_request: Option<pr::Outcome>,
    /// The `PULL_REQUEST.md` text.
    pub description: String,
}

#[derive(Debug)]
pub enum GenerateOutcome {
    /// Unacknowledged blocking findings: nothing was written.
    Blocked(Box<CheckReport>),
    Generated(Box<CheckReport>, Box<Generated>),
}

/// Check, build, verify on a scratch database, then write: nothing is written unless all passed.
/// `stop` (set by the first Ctrl-C) ends the run before anything is written, with
/// [`Error::Stopped`]; the scratch database a stopped verification leaves is dropped by the next run.
pub async fn generate(
    client: &Client,
    url: &str,
    request: &GenerateRequest,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<GenerateOutcome, Error> {
    let pr_root = if request.pull_request {
        let repo = request
            .check
            .repo
            .clone()
            .unwrap_or_else(|| existing_ancestor(&request.migrations_dir));
        Some(pr::root(&repo)?)
    } else {
        None
    };
    let migrations_in_repo = match &pr_root {
        Some(root) => Some(relative_to(root, &request.migrations_dir)?),
        None => None,
    };
    let mut check_request = request.check.clone();
    check_request
        .skip_paths
        .push(absolute(&request.migrations_dir));
    let report = check(client, &check_request).await?;
    if !report.passed() {
        return Ok(GenerateOutcome::Blocked(Box::new(report)));
    }
    let target = &report.target;
    let migration = migration::build(target, &report.dependents, &request.options)?;
    let branch = pr::branch_name(&target.table, &target.column.name);
    let context = format_context(&request.migrations_dir, request.format);
    let version = match request.version {
        Some(version) => version,
        None => pr_root
            .as_ref()
            .and_then(|root| pr::previous_version(root, &branch, &target.display()))
            .and_then(|v| NaiveDateTime::parse_from_str(&v, "%Y%m%d%H%M%S").ok())
            .or_else(|| version_in(&context.existing, &migration.name))
            .unwrap_or_else(|| chrono::Utc::now().naive_utc()),
    };
    let rendered = formats::render(request.format, &migration, version, &context);
    let column_line = format!("column {}.{} ", target.table_sql, target.column.name_sql);
    let column_gone =
        move |catalog: &[String]| !catalog.iter().any(|line| line.starts_with(&column_line));
    stopped(stop)?;
    let verification = tokio::select! {
        verified = scratch::verify(client, url, &rendered.up, &rendered.down, &column_gone) => verified?,
        () = until_set(stop) => return Err(stopped(stop).unwrap_err()),
    };
    stopped(stop)?;
    let file_names: Vec<String> = rendered
        .files
        .iter()
        .map(|f| match &migrations_in_repo {
            Some(dir) => dir.join(&f.path).display().to_string(),
            None => request.migrations_dir.join(&f.path).display().to_string(),
        })
        .collect();
    let description = report::pull_request(
        &report,
        &migration,
        request.format,
        &rendered,
        &verification,
        &file_names,
    );
    let pull_request = match (&pr_root, &migrations_in_repo) {
        (Some(root), Some(dir)) => {
            let mut files: Vec<(PathBuf, String)> = rendered
                .files
                .iter()
                .map(|f| (dir.join(&f.path), f.contents.clone()))
                .collect();
            files.push((PathBuf::from("PULL_REQUEST.md"), description.clone()));
            Some(pr::prepare(&pr::Request {
                repo: root.clone(),
                branch,
                files,
                title: format!("DO NOT MERGE: drop column {}", target.display()),
                body: description.clone(),
                subject: target.display(),
                version: version.format("%Y%m%d%H%M%S").to_string(),
                open_draft: true,
            })?)
        }
        _ => {
            for file in &rendered.files {
                let path = request.migrations_dir.join(&file.path);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(Error::io(format!("creating {}", parent.display())))?;
                }
                write_atomically(&path, &file.contents)?;
            }
            None
        }
    };
    let generated = Generated {
        files: file_names,
        verification,
        pull_request,
        description,
    };
    Ok(GenerateOutcome::Generated(
        Box::new(report),
        Box::new(generated),
    ))
}

fn stopped(stop: &std::sync::atomic::AtomicBool) -> Result<(), Error> {
    if stop.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(Error::Stopped(
            "interrupted before anything was written; run the same command again".to_owned(),
        ));
    }
    Ok(())
}

async fn until_set(stop: &std::sync::atomic::AtomicBool) {
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A file is either absent, the old one, or complete: a killed run never leaves half a migration.
fn write_atomically(path: &Path, contents: &str) -> Result<(), Error> {
    let temporary = path.with_extension(format!("sunset-{}.tmp", std::process::id()));
    std::fs::write(&temporary, contents)
        .and_then(|()| std::fs::File::open(&temporary)?.sync_all())
        .and_then(|()| std::fs::rename(&temporary, path))
        .map_err(Error::io(format!("writing {}", path.display())))
}

fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    }
}

/// The closest directory that exists, for finding the repository of a new migrations directory.
fn existing_ancestor(path: &Path) -> PathBuf {
    let path = absolute(path);
    path.ancestors()
        .find(|p| p.is_dir())
        .map(Path::to_path_buf)
        .unwrap_or(path)
}

/// `dir` relative to the repository `root` (both resolved through symlinks).
fn relative_to(root: &Path, dir: &Path) -> Result<PathBuf, Error> {
    let dir = absolute(dir);
    let existing = existing_ancestor(&dir);
    let rest = dir.strip_prefix(&existing).unwrap_or(Path::new(""));
    let canonical = existing
        .canonicalize()
        .map_err(Error::io(format!("resolving {}", existing.display())))?
        .join(rest);
    let root = root
        .canonicalize()
        .map_err(Error::io(format!("resolving {}", root.display())))?;
    canonical
        .strip_prefix(&root)
        .map(Path::to_path_buf)
        .map_err(|_| {
            Error::BadInput(format!(
                "--migrations-dir {} is not inside the repository {}",
                dir.display(),
                root.display()
            ))
        })
}

/// The version an earlier run used for this drop, from the names in the migrations directory.
fn version_in(existing: &[String], name: &str) -> Option<NaiveDateTime> {
    existing
        .iter()
        .filter(|f| f.contains(name))
        .filter_map(|f| {
            let digits: String = f
                .trim_start_matches(['V', 'U'])
                .chars()
                .filter(|c| c.is_ascii_digit())
                .take(14)
                .collect();
            NaiveDateTime::parse_from_str(&digits, "%Y%m%d%H%M%S").ok()
        })
        .min()
}

/// What the formats need from the migrations directory; revision files are read for Alembic only.
fn format_context(dir: &Path, format: Format) -> formats::Context {
    let existing: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    let revision_files = existing
        .iter()
        .filter(|f| format == Format::Alembic && f.ends_with(".py"))
        .filter_map(|f| std::fs::read_to_string(dir.join(f)).ok())
        .collect();
    let app_label = absolute(dir)
        .parent()
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str())
        .map(str::to_owned);
    formats::Context {
        existing,
        app_label,
        revision_files,
    }
}
