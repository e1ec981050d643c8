//! Stage 4: `sunset-drop-column` proves `accounts.legacy_kind` can go, then writes a verified
//! sqlx migration and a Do Not Merge PR branch.

use std::process::Command;

use anyhow::{Context, Result, ensure};

use crate::{say, workspace_root};

use super::*;

/// After the backfill: `check` (the backfill's coverage trigger still reads the column, so it
/// blocks), then `generate --format sqlx --pr` into a demo git repository with that finding
/// acknowledged, and the pull request text.
pub(super) fn drop_column_stage(url: &str) -> Result<()> {
    let binary = crate::build_binary("sunset-drop-column", false)?;
    let demo = workspace_root().join("target/sunset-demo");
    let repo = demo.join("app");
    if repo.exists() {
        std::fs::remove_dir_all(&repo)?;
    }
    std::fs::create_dir_all(repo.join("app/models"))?;
    std::fs::create_dir_all(repo.join("db/migrations"))?;
    std::fs::write(
        repo.join("app/models/account.rb"),
        "class Account < ApplicationRecord\n  self.inheritance_column = :type\nend\n",
    )?;
    std::fs::write(
        repo.join("db/migrations/20190101000000_create_accounts.up.sql"),
        "CREATE TABLE accounts (id bigint PRIMARY KEY, legacy_kind text NOT NULL);\n",
    )?;
    let git = |args: &[&str]| -> Result<String> {
        let output = Command::new("git")
            .arg("-C")
            .arg(&repo)
            .args(args)
            .env("GIT_AUTHOR_NAME", "sunset demo")
            .env("GIT_AUTHOR_EMAIL", "demo@localhost")
            .env("GIT_COMMITTER_NAME", "sunset demo")
            .env("GIT_COMMITTER_EMAIL", "demo@localhost")
            .output()
            .context("running git")?;
        ensure!(
            output.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    };
    git(&["init", "-q", "-b", "main"])?;
    git(&["add", "."])?;
    git(&[
        "commit",
        "-q",
        "-m",
        "the application, already writing `type`",
    ])?;
    let plan = demo.join("accounts-sti.yaml");
    let plan = plan.to_str().context("a UTF-8 path")?;
    let repo_arg = repo.to_str().context("a UTF-8 path")?;
    let subject = [
        "--table",
        "accounts",
        "--column",
        "legacy_kind",
        "--backfill-plan",
        plan,
        "--repo",
        repo_arg,
    ];
    say!(
        "$ sunset-drop-column check --table accounts --column legacy_kind --backfill-plan {plan} --repo {repo_arg}"
    );
    let check = Command::new(&binary)
        .arg("check")
        .args(subject)
        .env("DATABASE_URL", url)
        .status()?;
    ensure!(
        check.code() == Some(1),
        "check should block on the backfill's coverage trigger, got {check}"
    );
    say!(
        "blocked (exit 1) as expected: the backfill's coverage trigger fires on and reads legacy_kind; the application writes `type` itself now, so both findings are acknowledged and the migration drops the trigger (--restore-data keeps the values for the down)"
    );
    let migrations = repo.join("db/migrations");
    let migrations = migrations.to_str().context("a UTF-8 path")?;
    say!(
        "$ sunset-drop-column generate ... --allow update_of_trigger --allow trigger_function_body --format sqlx --migrations-dir {migrations} --pr --restore-data"
    );
    let generate = Command::new(&binary)
        .arg("generate")
        .args(subject)
        .args([
            "--allow",
            "update_of_trigger",
            "--allow",
            "trigger_function_body",
            "--format",
            "sqlx",
            "--migrations-dir",
            migrations,
            "--pr",
            "--restore-data",
        ])
        .env("DATABASE_URL", url)
        .status()?;
    ensure!(generate.success(), "generate failed ({generate})");
    let branch = "sunset/drop-accounts-legacy_kind";
    say!("the pull request text (PULL_REQUEST.md on branch {branch}):");
    report(&git(&["show", &format!("{branch}:PULL_REQUEST.md")])?);
    say!(
        "files on the branch:\n{}",
        git(&["diff", "--stat", &format!("main..{branch}")])?
    );
    Ok(())
}
