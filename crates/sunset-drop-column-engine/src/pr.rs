//! The pull request: one commit on `sunset/drop-<table>-<column>` in the team's repository, made
//! in a temporary worktree so the user's checkout is never touched, and, when asked and `gh` is
//! installed, a draft PR. Re-running replaces sunset's commit on the same branch.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::Error;
use crate::tool;

/// The commit trailer that marks sunset's commit (and carries the migration version).
pub const TRAILER: &str = "Sunset-Drop-Column";
pub const VERSION_TRAILER: &str = "Sunset-Version";

#[derive(Debug, Clone)]
pub struct Request {
    pub repo: PathBuf,
    pub branch: String,
    /// Paths relative to the repository root.
    pub files: Vec<(PathBuf, String)>,
    pub title: String,
    pub body: String,
    /// `schema.table.column`: the trailer value that identifies this drop's commit.
    pub subject: String,
    pub version: String,
    pub open_draft: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum PullRequest {
    NotRequested,
    /// `--pr` was given but `gh` is not installed.
    GhMissing,
    /// The repository has no `origin` remote to push to.
    NoRemote,
    Opened {
        url: String,
    },
    Updated {
        url: String,
    },
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    pub branch: String,
    pub commit: String,
    /// The branch existed (a re-run).
    pub reused_branch: bool,
    /// The branch already had exactly these files: nothing was committed.
    pub unchanged: bool,
    pub pull_request: PullRequest,
}

fn git(dir: &Path, args: &[&str]) -> Result<String, Error> {
    tool::run(
        Command::new("git").arg("-C").arg(dir).args(args),
        &format!("git {}", args.join(" ")),
    )
}

/// The repository's top directory, or bad input when `repo` is not in a git repository.
pub fn root(repo: &Path) -> Result<PathBuf, Error> {
    git(repo, &["rev-parse", "--show-toplevel"])
        .map(PathBuf::from)
        .map_err(|_| {
            Error::BadInput(format!(
                "--repo {}: not a git repository (the pull request needs one)",
                repo.display()
            ))
        })
}

/// The branch name for a drop: `sunset/drop-<table>-<column>`, safe for git.
pub fn branch_name(table: &str, column: &str) -> String {
    let clean = |s: &str| {
        let mut out = String::new();
        for c in s.chars() {
            if c.is_ascii_alphanumeric() || c == '_' {
                out.push(c.to_ascii_lowercase());
            } else if !out.ends_with('-') {
                out.push('-');
            }
        }
        out.trim_matches('-').to_owned()
    };
    format!("sunset/drop-{}-{}", clean(table), clean(column))
}

/// The tip of `branch` when it is sunset's commit for `subject`, with the version it used.
pub fn previous_version(repo: &Path, branch: &str, subject: &str) -> Option<String> {
    let message = git(
        repo,
        &["log", "-1", "--format=%B", &format!("refs/heads/{branch}")],
    )
    .ok()?;
    if !message.contains(&format!("{TRAILER}: {subject}")) {
        return None;
    }
    message.lines().find_map(|line| {
        line.strip_prefix(&format!("{VERSION_TRAILER}: "))
            .map(str::to_owned)
    })
}

/// Removes the temporary worktree however the commit went.
struct Worktree<'a> {
    root: &'a Path,
    path: PathBuf,
}

impl Drop for Worktree<'_> {
    fn drop(&mut self) {
        let path = self.path.display().to_string();
        if git(self.root, &["worktree", "remove", "--force", &path]).is_err() {
            let _ = std::fs::remove_dir_all(&self.path);
            let _ = git(self.root, &["worktree", "prune"]);
        }
    }
}

pub fn prepare(request: &Request) -> Result<Outcome, Error> {
    let root = root(&request.repo)?;
    let branch = &request.branch;
    let reference = format!("refs/heads/{branch}");
    let existing = git(&root, &["rev-parse", "--verify", "--quiet", &reference]).ok();
    if let Ok(list) = git(&root, &["worktree", "list", "--porcelain"]) {
        let mut path = "";
        for line in list.lines() {
            if let Some(p) = line.strip_prefix("worktree ") {
                path = p;
            }
            if line == format!("branch {reference}") {
                return Err(Error::BadInput(format!(
                    "branch {branch} is checked out at {path}: switch that checkout to another branch, then run again"
                )));
            }
        }
    }
    remove_abandoned_worktrees(&root);
    let ours = existing
        .as_ref()
        .is_some_and(|_| previous_version(&root, branch, &request.subject).is_some());
    let base = match (&existing, ours) {
        (Some(tip), true) => git(&root, &["rev-parse", &format!("{tip}^")])?,
        (Some(tip), false) => tip.clone(),
        (None, _) => git(&root, &["rev-parse", "--verify", "HEAD"]).map_err(|_| {
            Error::BadInput(format!(
                "--repo {}: the repository has no commit to branch from",
                root.display()
            ))
        })?,
    };
    let worktree = Worktree {
        root: &root,
        path: std::env::temp_dir().join(format!(
            "sunset-pr-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        )),
    };
    git(
        &root,
        &[
            "worktree",
            "add",
            "--detach",
            &worktree.path.display().to_string(),
            &base,
        ],
    )?;
    for (path, contents) in &request.files {
        let full = worktree.path.join(path);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent)
                .map_err(Error::io(format!("creating {}", parent.display())))?;
        }
        std::fs::write(&full, contents)
            .map_err(Error::io(format!("writing {}", full.display())))?;
        git(&worktree.path, &["add", "--", &path.display().to_string()])?;
    }
    let tree = git(&worktree.path, &["write-tree"])?;
    if let (Some(tip), true) = (&existing, ours)
        && git(&root, &["rev-parse", &format!("{tip}^{{tree}}")])? == tree
    {
        return Ok(Outcome {
            branch: branch.clone(),
            commit: tip.clone(),
            reused_branch: true,
            unchanged: true,
            pull_request: open_draft(&root, request)?,
        });
    }
    let message = format!(
        "{}\n\nGenerated by sunset-drop-column; see PULL_REQUEST.md.\n\n{TRAILER}: {}\n{VERSION_TRAILER}: {}\n",
        request.title, request.subject, request.version
    );
    let mut commit = Command::new("git");
    commit
        .arg("-C")
        .arg(&worktree.path)
        .args(["commit", "-q", "--no-verify", "-m", &message]);
    if git(&root, &["config", "user.email"]).is_err() {
        commit
            .env("GIT_AUTHOR_NAME", "sunset-drop-column")
            .env("GIT_AUTHOR_EMAIL", "sunset@localhost")
            .env("GIT_COMMITTER_NAME", "sunset-drop-column")
            .env("GIT_COMMITTER_EMAIL", "sunset@localhost");
    }
    tool::run(&mut commit, "git commit")?;
    let new = git(&worktree.path, &["rev-parse", "HEAD"])?;
    let mut update = vec!["update-ref", reference.as_str(), new.as_str()];
    if let Some(tip) = &existing {
        update.push(tip.as_str());
    }
    git(&root, &update)?;
    drop(worktree);
    Ok(Outcome {
        branch: branch.clone(),
        commit: new,
        reused_branch: existing.is_some(),
        unchanged: false,
        pull_request: open_draft(&root, request)?,
    })
}

/// Worktrees a killed run left behind (their process is gone): removed before making a new one.
fn remove_abandoned_worktrees(root: &Path) {
    let Ok(list) = git(root, &["worktree", "list", "--porcelain"]) else {
        return;
    };
    for path in list.lines().filter_map(|l| l.strip_prefix("worktree ")) {
        let name = Path::new(path)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let Some(pid) = name
            .strip_prefix("sunset-pr-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = git(root, &["worktree", "remove", "--force", path]);
        }
    }
    let _ = git(root, &["worktree", "prune"]);
}

fn gh_installed() -> bool {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .any(|dir| dir.join("gh").is_file())
}

/// Pushes the branch and opens (or updates) its draft PR with `gh`.
fn open_draft(root: &Path, request: &Request) -> Result<PullRequest, Error> {
    if !request.open_draft {
        return Ok(PullRequest::NotRequested);
    }
    if !gh_installed() {
        return Ok(PullRequest::GhMissing);
    }
    if git(root, &["remote", "get-url", "origin"]).is_err() {
        return Ok(PullRequest::NoRemote);
    }
    git(
        root,
        &[
            "push",
            "--force-with-lease",
            "origin",
            &format!("refs/heads/{0}:refs/heads/{0}", request.branch),
        ],
    )?;
    let body = std::env::temp_dir().join(format!("sunset-pr-body-{}.md", std::process::id()));
    std::fs::write(&body, &request.body).map_err(Error::io("writing the PR body"))?;
    let body_arg = body.display().to_string();
    let gh = |args: &[&str]| -> Result<String, Error> {
        tool::run(
            Command::new("gh").args(args).current_dir(root),
            &format!("gh {}", args.first().copied().unwrap_or_default()),
        )
    };
    let existing = gh(&[
        "pr",
        "view",
        &request.branch,
        "--json",
        "url",
        "--jq",
        ".url",
    ])
    .ok()
    .filter(|url| !url.is_empty());
    let details = ["--title", &request.title, "--body-file", &body_arg];
    let outcome = match existing {
        Some(url) => {
            gh(&[&["pr", "edit", &request.branch][..], &details].concat())?;
            PullRequest::Updated { url }
        }
        None => {
            let create = ["pr", "create", "--draft", "--head", &request.branch];
            let url = gh(&[&create[..], &details].concat())?;
            PullRequest::Opened { url }
        }
    };
    let _ = std::fs::remove_file(&body);
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branch_names_are_git_safe() {
        assert_eq!(
            branch_name("accounts", "legacy_kind"),
            "sunset/drop-accounts-legacy_kind"
        );
        assert_eq!(branch_name("My Table", "a;b"), "sunset/drop-my-table-a-b");
    }
}
