//! The pull request against a real git repository made in the test, with a bare `origin` and a
//! stand-in `gh` on PATH that records how it was called.

use crate::support;

use std::path::PathBuf;
use std::process::{Command, Output};

use sunset_test_support::service_env;
use support::{BASE, BIN, Db, git, text};

const BRANCH: &str = "sunset/drop-accounts-legacy_kind";

struct Project {
    _dir: tempfile::TempDir,
    repo: PathBuf,
    remote: PathBuf,
    gh_dir: PathBuf,
    gh_log: PathBuf,
}

impl Project {
    fn new() -> Project {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("app");
        let remote = dir.path().join("origin.git");
        std::fs::create_dir_all(repo.join("src")).unwrap();
        std::fs::write(
            repo.join("src/accounts.rs"),
            "// accounts, typed by `type` now\n",
        )
        .unwrap();
        git(
            dir.path(),
            &["init", "-q", "--bare", remote.to_str().unwrap()],
        );
        git(&repo, &["init", "-q", "-b", "main"]);
        git(&repo, &["add", "."]);
        git(&repo, &["commit", "-q", "-m", "initial"]);
        git(
            &repo,
            &["remote", "add", "origin", remote.to_str().unwrap()],
        );
        git(&repo, &["push", "-q", "origin", "main"]);
        let gh_dir = dir.path().join("bin");
        std::fs::create_dir_all(&gh_dir).unwrap();
        let gh_log = dir.path().join("gh.log");
        let state = dir.path().join("gh.state");
        let script = format!(
            "#!/bin/sh\necho \"$@\" >> '{log}'\ncase \"$1 $2\" in\n  'pr view') [ -f '{state}' ] && echo https://github.com/acme/app/pull/7 || exit 1 ;;\n  'pr create') touch '{state}'; echo https://github.com/acme/app/pull/7 ;;\nesac\n",
            log = gh_log.display(),
            state = state.display()
        );
        std::fs::write(gh_dir.join("gh"), script).unwrap();
        Command::new("chmod")
            .arg("+x")
            .arg(gh_dir.join("gh"))
            .status()
            .unwrap();
        Project {
            _dir: dir,
            repo,
            remote,
            gh_dir,
            gh_log,
        }
    }

    fn generate(&self, db: &Db, with_gh: bool) -> Output {
        self.generate_with(db, with_gh, &[])
    }

    fn generate_with(&self, db: &Db, with_gh: bool, extra: &[&str]) -> Output {
        let path = std::env::var("PATH").unwrap_or_default();
        let path = if with_gh {
            format!("{}:{path}", self.gh_dir.display())
        } else {
            path
        };
        Command::new(BIN)
            .args([
                "generate",
                "--table",
                "accounts",
                "--column",
                "legacy_kind",
                "--format",
                "sqlx",
                "--migrations-dir",
                "migrations",
                "--pr",
                "--repo",
                ".",
            ])
            .args(extra)
            .current_dir(&self.repo)
            .envs(service_env())
            .env("DATABASE_URL", &db.url)
            .env("PATH", path)
            .output()
            .unwrap()
    }

    fn gh_calls(&self) -> String {
        std::fs::read_to_string(&self.gh_log).unwrap_or_default()
    }
}

#[test]
fn the_branch_is_made_once_and_updated_in_place() {
    let db = Db::new("pr");
    db.exec(BASE);
    db.exec("CREATE INDEX kind_idx ON accounts (legacy_kind)");
    let project = Project::new();

    let first = project.generate(&db, true);
    assert!(first.status.success(), "{}", text(&first));
    assert!(
        text(&first).contains("pull request: draft opened at https://github.com/acme/app/pull/7"),
        "{}",
        text(&first)
    );
    assert_eq!(
        git(
            &project.repo,
            &["rev-list", "--count", &format!("main..{BRANCH}")]
        ),
        "1"
    );
    let files = git(&project.repo, &["ls-tree", "-r", "--name-only", BRANCH]);
    assert!(
        files
            .lines()
            .any(|f| f.starts_with("migrations/")
                && f.ends_with("_drop_accounts_legacy_kind.up.sql")),
        "{files}"
    );
    assert!(
        files
            .lines()
            .any(|f| f.ends_with("_drop_accounts_legacy_kind_index_1.up.sql")),
        "{files}"
    );
    let description = git(
        &project.repo,
        &["show", &format!("{BRANCH}:PULL_REQUEST.md")],
    );
    assert!(description.starts_with("# DO NOT MERGE"), "{description}");
    // The whole text, pinned; the version (the time of the first run) is the one moving part.
    expect_test::expect_file![format!("{}/pull_request.md", support::snapshots(&db))]
        .assert_eq(&without_versions(&description));
    for section in [
        "## Summary",
        "## Evidence",
        "## Hazards",
        "## Checklist",
        "## Rollback",
        "- [ ] ",
    ] {
        assert!(
            description.contains(section),
            "PULL_REQUEST.md has {section}"
        );
    }
    assert!(
        description.contains("public.kind_idx"),
        "hazards list the dependents"
    );
    // The user's checkout is untouched: still on main, no migrations in the working tree.
    assert_eq!(
        git(&project.repo, &["symbolic-ref", "--short", "HEAD"]),
        "main"
    );
    assert!(!project.repo.join("migrations").exists());
    assert_eq!(
        git(&project.remote, &["rev-parse", BRANCH]),
        git(&project.repo, &["rev-parse", BRANCH])
    );
    assert!(
        project
            .gh_calls()
            .contains(&format!("pr create --draft --head {BRANCH}")),
        "{}",
        project.gh_calls()
    );

    // The same run again: same branch, same commit, the draft updated, no second PR.
    let tip = git(&project.repo, &["rev-parse", BRANCH]);
    let second = project.generate(&db, true);
    assert!(second.status.success(), "{}", text(&second));
    assert!(
        text(&second).contains("already up to date"),
        "{}",
        text(&second)
    );
    assert_eq!(git(&project.repo, &["rev-parse", BRANCH]), tip);
    assert!(
        project.gh_calls().contains(&format!("pr edit {BRANCH}")),
        "{}",
        project.gh_calls()
    );
    assert_eq!(project.gh_calls().matches("pr create").count(), 1);

    // The schema changed: the branch's one commit is replaced, with the same file names.
    db.exec("COMMENT ON COLUMN accounts.legacy_kind IS 'the old kind'");
    let third = project.generate(&db, false);
    assert!(third.status.success(), "{}", text(&third));
    assert!(
        String::from_utf8_lossy(&third.stdout)
            .lines()
            .any(|line| line.starts_with(&format!("branch {BRANCH} at "))
                && line.ends_with("(updated)")),
        "says the branch was updated: {}",
        text(&third)
    );
    assert!(
        text(&third).contains("pull request: gh is not installed"),
        "{}",
        text(&third)
    );
    assert_eq!(
        git(
            &project.repo,
            &["rev-list", "--count", &format!("main..{BRANCH}")]
        ),
        "1"
    );
    assert_eq!(
        git(&project.repo, &["ls-tree", "-r", "--name-only", BRANCH]),
        files,
        "same files, same versions"
    );
    let down = files
        .lines()
        .find(|f| f.ends_with("_drop_accounts_legacy_kind.down.sql"))
        .unwrap();
    assert!(
        git(&project.repo, &["show", &format!("{BRANCH}:{down}")])
            .contains("COMMENT ON COLUMN public.accounts.legacy_kind IS 'the old kind'")
    );
    assert_eq!(
        git(&project.repo, &["branch", "--list", "sunset/*"])
            .lines()
            .count(),
        1
    );
}

/// `text` with every 14-digit migration version written as `YYYYMMDDHHMMSS`.
fn without_versions(text: &str) -> String {
    let mut out = String::new();
    let mut digits = String::new();
    for c in text.chars().chain(std::iter::once('\0')) {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        if digits.len() == 14 {
            out.push_str("YYYYMMDDHHMMSS");
        } else {
            out.push_str(&digits);
        }
        digits.clear();
        if c != '\0' {
            out.push(c);
        }
    }
    out
}

/// The scratch verification is generate's gate: when the down would not restore the schema (a
/// generated column that depends on the column carries a comment, which its re-creation on the
/// down does not bring back), generate exits 1 with the difference, writes no file, makes no
/// branch and opens no pull request.
#[test]
fn a_down_that_does_not_restore_the_schema_writes_nothing_and_makes_no_branch() {
    let db = Db::new("pr_unverified");
    db.exec(BASE);
    db.exec(
        "ALTER TABLE accounts ADD COLUMN kind_label text GENERATED ALWAYS AS (upper(legacy_kind)) STORED;
         COMMENT ON COLUMN accounts.kind_label IS 'shown in reports';",
    );
    let project = Project::new();
    let output = project.generate_with(&db, true, &["--allow", "generated_column"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        stderr.contains("the down migration does not restore the schema")
            && stderr.contains("kind_label"),
        "{stderr}"
    );
    assert!(!project.repo.join("migrations").exists(), "no file written");
    assert_eq!(
        git(&project.repo, &["branch", "--list", BRANCH]),
        "",
        "no branch"
    );
    assert_eq!(
        git(&project.repo, &["ls-remote", "--heads", "origin", BRANCH]),
        "",
        "nothing pushed"
    );
    assert_eq!(project.gh_calls(), "", "gh was not called");
    assert_eq!(git(&project.repo, &["status", "--porcelain"]), "");
    assert_eq!(git(&project.repo, &["worktree", "list"]).lines().count(), 1);
}
