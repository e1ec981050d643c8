//! Bad input: a clear error, exit 2, nothing written and nothing changed. A blocked generate
//! (exit 1) writes nothing either. And a generate SIGKILLed at random points leaves no torn file,
//! no scratch database and no stray worktree once it has been run again.

use crate::support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use sunset_test_support::service_env;
use support::{BASE, BIN, Db, text};

fn generate_args<'a>(dir: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["generate", "--format", "sqlx", "--migrations-dir", dir];
    args.extend_from_slice(extra);
    args
}

#[test]
fn bad_input_is_exit_2_and_writes_nothing() {
    let db = Db::new("bad_input");
    db.exec(BASE);
    db.exec(
        "CREATE TABLE events (id int, at date NOT NULL, kind text) PARTITION BY RANGE (at);
         CREATE TABLE no_key (a int, legacy text);
         CREATE TABLE \"a; drop table x\" (id int PRIMARY KEY, legacy text);
         CREATE TABLE \"Mixed\" (id int PRIMARY KEY, \"LegacyKind\" text);",
    );
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("drop-column.yaml");
    std::fs::write(
        &config,
        "allow:\n  - code: composite_indx\n    reason: reviewed\n",
    )
    .unwrap();
    let config = config.to_str().unwrap().to_owned();
    let dir = work.path().join("migrations");
    let dir = dir.to_str().unwrap().to_owned();
    let before = db.catalog();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--table", "nope", "--column", "legacy_kind"],
            "unknown table `nope`",
        ),
        (
            vec!["--table", "accounts", "--column", "nope"],
            "has no column `nope`; its columns are: id, tenant_id, type, legacy_kind",
        ),
        (
            vec!["--table", "\"Mixed\"", "--column", "LegacyKind"],
            "did you mean '\"LegacyKind\"'?",
        ),
        (
            vec!["--table", "accounts", "--column", "id"],
            "part of the primary key",
        ),
        (
            vec!["--table", "events", "--column", "at"],
            "part of the partition key",
        ),
        (
            vec![
                "--table",
                "accounts; drop table accounts",
                "--column",
                "legacy_kind",
            ],
            "is not a table name",
        ),
        (
            vec![
                "--table",
                "\"accounts; drop table accounts\"",
                "--column",
                "legacy_kind",
            ],
            "unknown table",
        ),
        (
            vec![
                "--table",
                "accounts",
                "--column",
                "legacy_kind; drop table accounts",
            ],
            "is not a column name",
        ),
        (
            vec![
                "--table",
                "public.accounts.extra.part",
                "--column",
                "legacy_kind",
            ],
            "dotted parts",
        ),
        (
            vec![
                "--table",
                "accounts",
                "--column",
                "legacy_kind",
                "--allow",
                "composite_indx",
            ],
            "did you mean `composite_index`",
        ),
        (
            vec![
                "--table",
                "accounts",
                "--column",
                "legacy_kind",
                "--config",
                &config,
            ],
            "drop-column.yaml:2:11: allow[0].code: unknown finding code `composite_indx`",
        ),
        (
            vec![
                "--table",
                "accounts",
                "--column",
                "legacy_kind",
                "--backfill-plan",
                "/nonexistent/plan.yaml",
            ],
            "cannot read it",
        ),
        (
            vec!["--table", "no_key", "--column", "legacy", "--restore-data"],
            "--restore-data needs a primary key",
        ),
        (
            vec!["--table", "accounts", "--column", "legacy_kind", "--pr"],
            "not a git repository",
        ),
        (
            vec![
                "--table",
                "accounts",
                "--column",
                "legacy_kind",
                "--timestamp",
                "yesterday",
            ],
            "expected YYYYMMDDHHMMSS",
        ),
        (
            vec![
                "--table",
                "accounts",
                "--column",
                "legacy_kind",
                "--lock-timeout",
                "5 parsecs",
            ],
            "--lock-timeout",
        ),
    ];
    for (extra, expected) in &cases {
        let output = db.run(&generate_args(&dir, extra), work.path());
        assert_eq!(
            output.status.code(),
            Some(2),
            "{extra:?}: {}",
            text(&output)
        );
        assert!(
            text(&output).contains(expected),
            "{extra:?}: expected `{expected}` in {}",
            text(&output)
        );
        assert!(!Path::new(&dir).exists(), "{extra:?} wrote migrations");
    }
    // The same through `check`, and an unknown format.
    let output = db.run(
        &["check", "--table", "accounts", "--column", "id"],
        work.path(),
    );
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let output = db.run(
        &[
            "generate",
            "--table",
            "accounts",
            "--column",
            "legacy_kind",
            "--format",
            "liquibase",
            "--migrations-dir",
            &dir,
        ],
        work.path(),
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output).contains("unknown migration format `liquibase`"),
        "{}",
        text(&output)
    );
    let output = Command::new(BIN)
        .args(["check", "--table", "accounts", "--column", "legacy_kind"])
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output).contains("pass --database-url or set DATABASE_URL"));
    assert_eq!(db.catalog(), before, "nothing changed in the database");
    assert!(!Path::new(&dir).exists());
}

#[test]
fn a_blocked_generate_writes_nothing() {
    let db = Db::new("blocked");
    db.exec(BASE);
    db.exec("CREATE VIEW account_kinds AS SELECT id, legacy_kind FROM accounts");
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("migrations");
    let output = db.run(
        &generate_args(
            dir.to_str().unwrap(),
            &["--table", "accounts", "--column", "legacy_kind"],
        ),
        work.path(),
    );
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(text(&output).contains("BLOCKING view"), "{}", text(&output));
    assert!(
        text(&output).contains("nothing was written"),
        "{}",
        text(&output)
    );
    assert!(!dir.exists());
}

/// Waits until `seen` holds, panicking if `child` ends first or a minute passes.
fn wait_for(child: &mut std::process::Child, what: &str, mut seen: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !seen() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "generate ended before {what} was seen"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "{what} was not seen within 60 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `program` as PATH finds it.
fn which(program: &str) -> std::path::PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("no {program} on PATH"))
}

fn scratch_databases(db: &Db) -> Vec<String> {
    db.strings("SELECT datname::text FROM pg_database WHERE datname LIKE 'sunset\\_scratch\\_%'")
}

#[test]
fn a_generate_killed_at_random_points_leaves_nothing_behind_once_rerun() {
    let db = Db::new("killed");
    db.exec(BASE);
    // Enough schema that dumping and loading it takes a while.
    db.exec(
        "DO $$ BEGIN FOR i IN 1..150 LOOP
           EXECUTE format('CREATE TABLE filler_%s (id int PRIMARY KEY, a text, b int)', i);
           EXECUTE format('CREATE VIEW filler_view_%s AS SELECT id, a FROM filler_%s', i, i);
         END LOOP; END $$;
         CREATE INDEX kind_idx ON accounts (legacy_kind);",
    );
    let work = tempfile::tempdir().unwrap();
    let repo = work.path();
    let git = |args: &[&str]| support::git(repo, args);
    git(&["init", "-q", "-b", "main"]);
    git(&["commit", "-q", "--allow-empty", "-m", "initial"]);
    let args = [
        "generate",
        "--table",
        "accounts",
        "--column",
        "legacy_kind",
        "--format",
        "diesel",
        "--migrations-dir",
        "migrations",
        "--pr",
    ];
    // A `git` in front of the real one that holds every commit for 2 s: the worktree then
    // exists long enough to be seen, and killed in, however fast the machine.
    let real_git = which("git");
    let shim_dir = tempfile::tempdir().unwrap();
    let shim = shim_dir.path();
    std::fs::write(
        shim.join("git"),
        format!(
            "#!/bin/sh\n[ \"$3\" = commit ] && sleep 2\nexec '{}' \"$@\"\n",
            real_git.display()
        ),
    )
    .unwrap();
    Command::new("chmod")
        .arg("+x")
        .arg(shim.join("git"))
        .status()
        .unwrap();
    let path = format!(
        "{}:{}",
        shim.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let tmp = tempfile::tempdir().unwrap();
    let spawn = || {
        Command::new(BIN)
            .args(args)
            .current_dir(repo)
            .envs(service_env())
            .env("DATABASE_URL", &db.url)
            .env("PATH", &path)
            .env("TMPDIR", tmp.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut killed = Vec::new();
    let mut worktrees = Vec::new();
    for attempt in 0..8 {
        let mut child = spawn();
        let pid = child.id();
        match attempt {
            // Once while the scratch database exists, once while the worktree does: both seen.
            0 => wait_for(&mut child, "the run's scratch database", || {
                scratch_databases(&db)
                    .iter()
                    .any(|name| name.contains(&format!("_{pid}_")))
            }),
            1 => wait_for(&mut child, "the run's worktree", || {
                let found: Vec<_> = std::fs::read_dir(tmp.path())
                    .unwrap()
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name().is_some_and(|n| {
                            n.to_string_lossy()
                                .starts_with(&format!("sunset-pr-{pid}-"))
                        })
                    })
                    .collect();
                let seen = !found.is_empty();
                worktrees.extend(found);
                seen
            }),
            _ => {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                std::thread::sleep(Duration::from_millis(20 + seed % 900));
            }
        }
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            killed.push(pid);
        }
        child.wait().unwrap();
        // Whatever the kill interrupted, the branch has at most sunset's one commit.
        let count = Command::new("git")
            .arg("-C")
            .arg(repo)
            .args([
                "rev-list",
                "--count",
                "main..sunset/drop-accounts-legacy_kind",
            ])
            .output()
            .unwrap();
        let count = String::from_utf8_lossy(&count.stdout).trim().to_owned();
        assert!(count.is_empty() || count == "1", "branch commits: {count}");
    }
    assert!(
        killed.len() >= 2 && !worktrees.is_empty(),
        "killed {killed:?}, worktrees seen {worktrees:?}"
    );
    let output = Command::new(BIN)
        .args(args)
        .current_dir(repo)
        .envs(service_env())
        .env("DATABASE_URL", &db.url)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let remaining = scratch_databases(&db);
    assert!(
        killed.iter().all(|pid| remaining
            .iter()
            .all(|name| !name.contains(&format!("_{pid}_")))),
        "a killed run's scratch database survived the next run: {remaining:?}"
    );
    assert!(
        worktrees.iter().all(|w| !w.exists()),
        "a killed run's worktree survived the next run: {worktrees:?}"
    );
    let leftovers: Vec<String> = scratch_databases(&db)
        .into_iter()
        .filter(|name| {
            let pid = name.split('_').nth(3).unwrap_or_default();
            !Path::new(&format!("/proc/{pid}")).exists()
        })
        .collect();
    assert!(
        leftovers.is_empty(),
        "abandoned scratch databases: {leftovers:?}"
    );
    assert_eq!(
        git(&[
            "rev-list",
            "--count",
            "main..sunset/drop-accounts-legacy_kind"
        ]),
        "1"
    );
    assert_eq!(
        git(&["worktree", "list"]).lines().count(),
        1,
        "no stray worktrees"
    );
    let files = git(&[
        "ls-tree",
        "-r",
        "--name-only",
        "sunset/drop-accounts-legacy_kind",
    ]);
    assert!(
        files.contains("up.sql")
            && files.contains("metadata.toml")
            && files.contains("PULL_REQUEST.md"),
        "{files}"
    );
    assert_eq!(
        git(&["status", "--porcelain"]),
        "",
        "the checkout is untouched"
    );
}

#[test]
fn ctrl_c_during_generate_stops_with_exit_3_and_writes_nothing() {
    let db = Db::new("dc-ctrlc");
    // Every DDL statement sleeps, so the scratch verification is still running when the
    // interrupt comes; pg_dump carries the event trigger into the scratch database.
    db.exec(
        "CREATE TABLE accounts (id bigint PRIMARY KEY, legacy_kind text);
         CREATE FUNCTION slow_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(5); END $$;
         CREATE EVENT TRIGGER slow_ddl ON ddl_command_end EXECUTE FUNCTION slow_ddl();",
    );
    let dir = tempfile::tempdir().unwrap();
    let migrations = dir.path().join("migrations");
    let mut child = Command::new(BIN)
        .args(generate_args(
            migrations.to_str().unwrap(),
            &["--table", "accounts", "--column", "legacy_kind"],
        ))
        .envs(service_env())
        .env("DATABASE_URL", &db.url)
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let sleeping = db.strings(
            "SELECT datname::text FROM pg_stat_activity WHERE datname LIKE 'sunset_scratch_%' AND query LIKE '%DROP COLUMN%'",
        );
        if !sleeping.is_empty() {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "generate ended before the scratch verification was seen"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the scratch verification never ran"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("interrupted before anything was written"),
        "{stderr}"
    );
    assert!(!migrations.exists() || std::fs::read_dir(&migrations).unwrap().next().is_none());
}

#[test]
fn help_of_every_command_is_pinned() {
    expect_test::expect_file!["snapshots/help.txt"].assert_eq(&sunset_test_support::help_text(BIN));
}
