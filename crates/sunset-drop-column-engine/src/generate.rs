//! `generate`: check, build the migration, verify it up/down/up on a scratch database, then
//! write the files or the pull-request branch; nothing is written unless everything passed.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use chrono::NaiveDateTime;
use sunset_outcome::Shutdown;
use tokio_postgres::Client;

use crate::check::{CheckReport, CheckRequest, check};
use crate::error::Error;
use crate::formats::{self, Format};
use crate::{migration, pr, report, scratch};

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

impl Generated {
    /// What `generate` prints: files, verification and the branch.
    pub fn summary(&self) -> String {
        let generated = self;
        let mut out = String::new();
        let v = &generated.verification;
        let _ = writeln!(
            out,
            "verified on scratch database {}: up, down, up ok; {} catalog facts equal after down ({:.1} s)",
            v.scratch_database, v.facts_compared, v.seconds
        );
        for file in &generated.files {
            let _ = writeln!(out, "wrote {file}");
        }
        if let Some(pr) = &generated.pull_request {
            let _ = writeln!(
                out,
                "branch {} at {} ({})",
                pr.branch,
                &pr.commit[..pr.commit.len().min(12)],
                match (pr.reused_branch, pr.unchanged) {
                    (_, true) => "already up to date",
                    (true, false) => "updated",
                    (false, false) => "created",
                }
            );
            let _ = writeln!(
                out,
                "{}",
                match &pr.pull_request {
                    pr::PullRequest::NotRequested => "pull request: not requested (add --pr to open a draft with gh)".to_owned(),
                    pr::PullRequest::GhMissing => "pull request: gh is not installed; push the branch and open a draft PR with PULL_REQUEST.md as its body".to_owned(),
                    pr::PullRequest::NoRemote => "pull request: the repository has no `origin` remote; add one, then run again".to_owned(),
                    pr::PullRequest::Opened { url } => format!("pull request: draft opened at {url}"),
                    pr::PullRequest::Updated { url } => format!("pull request: draft updated at {url}"),
                }
            );
        }
        out
    }
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
    stop: &Shutdown,
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
    let target = report.target.clone();
    let target = &target;
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
    let trial = scratch::Trial {
        up: &rendered.up,
        table: &target.table_sql,
        column_gone: &column_gone,
    };
    let mut verification = tokio::select! {
        verified = scratch::verify(client, url, &trial, &rendered.down) => verified?,
        () = stop.requested() => return Err(stopped(stop).unwrap_err()),
    };
    stopped(stop)?;
    // The behavioural probe's findings join the check's, acknowledged the same way.
    let mut report = report;
    request
        .check
        .acknowledgements
        .apply(&mut verification.probe);
    report.findings.extend(verification.probe.iter().cloned());
    if !report.passed() {
        return Ok(GenerateOutcome::Blocked(Box::new(report)));
    }
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

fn stopped(stop: &Shutdown) -> Result<(), Error> {
    if stop.is_requested() {
        return Err(Error::Stopped(
            "interrupted before anything was written; run the same command again".to_owned(),
        ));
    }
    Ok(())
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

/// What the formats need from the migrations directory; revision files are read for Alembic only,
/// the nearest `Gemfile.lock` above it for Rails only.
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
    let rails_version = (format == Format::Rails)
        .then(|| {
            absolute(dir).ancestors().find_map(|above| {
                let lockfile = std::fs::read_to_string(above.join("Gemfile.lock")).ok()?;
                formats::rails_version_in(&lockfile)
            })
        })
        .flatten();
    formats::Context {
        existing,
        app_label,
        revision_files,
        rails_version,
    }
}
