//! `cargo xtask demo`: the end-to-end story on demo data, against the real services.
//!
//! Each binary's issue adds its stage here. So far: the services, a decommission sequence loaded
//! and rendered as a dry run, a 200k-row STI backfill with `sunset-backfill` (interrupted,
//! resumed, validated, finished), a second runner refused by the run lock, and an archive of a
//! config directory and the table to S3 with `sunset-archive` (verified, restored, compared), and
//! a decommission of a legacy fleet in the emulator with `sunset-teardown`.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use sunset_checkpoint::{FileStore, PgRunLock};
use sunset_plan::format::SequenceFile;
use sunset_plan::{StepState, StepView, render_steps};
use tokio_postgres::{Client, NoTls};

use crate::{say, services, workspace_root};

const DEMO_DATABASE: &str = "sunset_demo";
const DEMO_ROWS: i64 = 200_000;
/// The run stage 3 locks to show a second runner being refused.
const RUN: &str = "demo-lock";

pub(crate) fn run() -> Result<()> {
    services::up()?;
    services::print_status()?;
    let admin_url = services::database_url()?;

    say!("stage 1: a decommission sequence, loaded and rendered as a dry run");
    show_sequence()?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let demo_url = recreate_demo_database(&admin_url).await?;
        say!("stage 2: sunset-backfill over {DEMO_ROWS} legacy accounts, interrupted at 40% and resumed");
        backfill_stage(&demo_url).await?;
        say!("stage 3: one runner per run");
        second_runner_refused(&demo_url).await?;
        say!("stage 4: sunset-drop-column: prove `accounts.legacy_kind` can go, then a verified sqlx migration and a Do Not Merge PR branch");
        drop_column_stage(&demo_url)?;
        say!("stage 5: sunset-archive: the legacy config directory and the accounts table to S3 (the emulator), verified, restored and compared");
        archive_stage(&demo_url).await
    })?;
    say!(
        "stage 6: sunset-teardown: a legacy fleet in the emulator, planned, then applied step by step through its wait gates"
    );
    teardown_stage()?;
    say!(
        "demo complete: services stay up for exploration (`cargo xtask services env`, `cargo xtask services down`)"
    );
    Ok(())
}

fn show_sequence() -> Result<()> {
    let path = workspace_root().join("sequences/legacy-metrics/decommission.yaml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let loaded = sunset_plan::load_sequence(
        "sequences/legacy-metrics/decommission.yaml",
        &text,
        &sunset_plan::process_env,
    )
    .map_err(|diagnostics| anyhow::anyhow!("{diagnostics}"))?;
    let steps = step_views(&loaded.plan);
    report(&format!(
        "plan fingerprint {}\n{}",
        loaded.fingerprint.short(),
        render_steps(&steps)
    ));
    Ok(())
}

/// A summary of each step from the file alone; `sunset-teardown plan` resolves targets for real.
fn step_views(sequence: &SequenceFile) -> Vec<StepView> {
    sequence
        .decommission_sequence
        .iter()
        .map(|(name, actions)| StepView {
            name: name.to_string(),
            state: StepState::Pending,
            summary: actions
                .iter()
                .map(|a| {
                    let action = a.action.as_str();
                    let targets: Vec<&str> = a
                        .targets
                        .iter()
                        .chain(&a.records)
                        .map(|t| t.as_str())
                        .collect();
                    if targets.is_empty() {
                        action.to_owned()
                    } else {
                        format!("{action} {}", targets.join(","))
                    }
                })
                .collect::<Vec<_>>()
                .join("; "),
            validation: actions
                .iter()
                .filter_map(|a| a.validation.as_ref())
                .map(|v| v.check.as_str().to_owned())
                .reduce(|a, b| format!("{a}, {b}")),
            irreversible: actions.iter().any(|a| a.is_irreversible()),
            details: actions
                .iter()
                .filter_map(|a| a.wait_time)
                .map(|w| format!("wait {}", sunset_plan::format_duration(w.0)))
                .collect(),
        })
        .collect()
}

async fn connect(url: &str) -> Result<Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .context("connecting to PostgreSQL")?;
    tokio::spawn(connection);
    Ok(client)
}

async fn recreate_demo_database(admin_url: &str) -> Result<String> {
    let admin = connect(admin_url).await?;
    admin
        .batch_execute(&format!(
            "DROP DATABASE IF EXISTS {DEMO_DATABASE} WITH (FORCE)"
        ))
        .await?;
    admin
        .batch_execute(&format!("CREATE DATABASE {DEMO_DATABASE}"))
        .await?;
    let url = match admin_url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{DEMO_DATABASE}"),
        None => anyhow::bail!("DATABASE_URL has no database name"),
    };
    let client = connect(&url).await?;
    client
        .batch_execute(&format!(
            "CREATE TABLE accounts (id bigint PRIMARY KEY, legacy_kind text NOT NULL, type text,
                                    email text NOT NULL, deleted_at timestamptz);
             INSERT INTO accounts (id, legacy_kind, email, deleted_at)
             SELECT g * 3, (ARRAY['personal', 'personal', 'business', 'partner'])[1 + g % 4], 'user' || g || '@example.com',
                    CASE WHEN g % 40 = 0 THEN now() END
             FROM generate_series(1, {DEMO_ROWS}) g;
             ANALYZE accounts;"
        ))
        .await
        .context("loading demo data")?;
    Ok(url)
}

const DEMO_PLAN: &str =
    "# The demo's backfill: derive the STI `type` of every account from `legacy_kind`.
backfill: accounts-sti
table: public.accounts
key: id
discriminator: type
from: legacy_kind
map: { personal: PersonalAccount, business: BusinessAccount, partner: PartnerAccount }
unmapped: fail
coverage: trigger
batch: { size: 500, max_size: 2000, target_duration: 100ms }
throttle: { lock_timeout: 2s, statement_timeout: 30s, max_replication_lag: 10s }
";

/// Runs the real binary: preflight, a run interrupted with SIGINT at 40% (exit 3), the same
/// command again (resumes), `validate`, then `finish` (NOT NULL without a long lock).
async fn backfill_stage(url: &str) -> Result<()> {
    let binary = crate::build_binary("sunset-backfill", false)?;
    let dir = workspace_root().join("target/sunset-demo");
    std::fs::create_dir_all(&dir)?;
    let plan = dir.join("accounts-sti.yaml");
    std::fs::write(&plan, DEMO_PLAN)?;
    let plan = plan.to_str().context("a UTF-8 path")?.to_owned();
    let backfill = |args: &[&str]| {
        let mut command = Command::new(&binary);
        command.args(args).env("DATABASE_URL", url);
        command
    };
    say!("$ sunset-backfill preflight {plan}");
    ensure!(
        backfill(&["preflight", &plan]).status()?.success(),
        "preflight failed"
    );

    say!("$ sunset-backfill run {plan} --workers 2   (interrupted with Ctrl-C at 40%)");
    let mut run = backfill(&["run", &plan, "--workers", "2"])
        .spawn()
        .context("starting sunset-backfill")?;
    let client = connect(url).await?;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some(exit) = run.try_wait()? {
            anyhow::bail!("the run ended before it could be interrupted ({exit})");
        }
        let progress = client
            .query_opt(
                "SELECT COALESCE(sum(g.rows_seen), 0)::float8 / greatest(max(r.total_rows), 1)
                 FROM sunset.backfill_runs r JOIN sunset.backfill_ranges g USING (run) WHERE r.run = 'accounts-sti'",
                &[],
            )
            .await
            .ok()
            .flatten()
            .and_then(|row| row.get::<_, Option<f64>>(0));
        if progress.is_some_and(|p| p >= 0.4) {
            break;
        }
    }
    Command::new("kill")
        .args(["-INT", &run.id().to_string()])
        .status()?;
    let interrupted = run.wait()?;
    ensure!(
        interrupted.code() == Some(3),
        "an interrupted run exits 3, got {interrupted}"
    );
    say!("interrupted (exit 3); running the same command again resumes from the checkpoint");
    ensure!(
        backfill(&["run", &plan, "--workers", "2"])
            .status()?
            .success(),
        "the resumed run failed"
    );
    say!("$ sunset-backfill validate {plan}");
    ensure!(
        backfill(&["validate", &plan]).status()?.success(),
        "validation failed"
    );
    say!("$ sunset-backfill finish {plan}");
    ensure!(
        backfill(&["finish", &plan]).status()?.success(),
        "finish failed"
    );
    let row = client
        .query_one(
            "SELECT count(*) FROM sunset.backfill_journal WHERE run = 'accounts-sti'",
            &[],
        )
        .await?;
    say!(
        "verified: every account has its type, {} journal entries keep the old values for `rollback`",
        row.get::<_, i64>(0)
    );
    Ok(())
}

/// After the backfill: `check` (the backfill's coverage trigger still reads the column, so it
/// blocks), then `generate --format sqlx --pr` into a demo git repository with that finding
/// acknowledged, and the pull request text.
fn drop_column_stage(url: &str) -> Result<()> {
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

async fn second_runner_refused(url: &str) -> Result<()> {
    let _first = PgRunLock::acquire(url, RUN).await?;
    match PgRunLock::acquire(url, RUN).await {
        Err(error) => say!("a second runner is refused: {error}"),
        Ok(_) => anyhow::bail!("a second runner was not refused"),
    }
    let dir = workspace_root().join("target/sunset-demo");
    let store = FileStore::in_dir(&dir, RUN);
    let _file_lock = store.lock()?;
    match store.lock() {
        Err(error) => say!("and with the file store: {error}"),
        Ok(_) => anyhow::bail!("a second file-store runner was not refused"),
    }
    Ok(())
}

fn report(text: &str) {
    #[allow(clippy::print_stdout, reason = "the demo's story is its output")]
    {
        println!("{text}");
    }
}

/// Archives a legacy config directory and the accounts table to the emulator's S3 with progress
/// bars, verifies it deeply, restores it into a scratch schema and directory, and compares.
async fn archive_stage(url: &str) -> Result<()> {
    let binary = crate::build_binary("sunset-archive", false)?;
    let dir = workspace_root().join("target/sunset-demo");
    let config = dir.join("legacy-collector");
    let restored = dir.join("restored");
    for old in [&config, &restored, &dir.join("state")] {
        if old.exists() {
            std::fs::remove_dir_all(old)?;
        }
    }
    std::fs::create_dir_all(config.join("conf.d"))?;
    std::fs::write(
        config.join("collector.yaml"),
        "interval: 10s\noutputs: [graphite]\n",
    )?;
    std::fs::write(
        config.join("conf.d/hosts.list"),
        (1..=5000)
            .map(|n| format!("legacy-host-{n}.internal\n"))
            .collect::<String>(),
    )?;
    #[cfg(unix)]
    std::os::unix::fs::symlink("collector.yaml", config.join("current.yaml"))?;
    let env = services::current_env()?;
    let endpoint = env
        .iter()
        .find(|(k, _)| *k == "AWS_ENDPOINT_URL")
        .map(|(_, v)| v.clone())
        .context("the AWS emulator is not running")?;
    let bucket = "sunset-demo-archive";
    create_bucket(&endpoint, bucket)?;
    let name = format!("legacy-{}", std::process::id());
    let archive = format!("s3://{bucket}/legacy-metrics/{name}");
    let run = |args: &[&str]| -> Result<()> {
        say!("$ sunset-archive {}", args.join(" "));
        let status = Command::new(&binary)
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("DATABASE_URL", url)
            .env("SUNSET_STATE_DIR", dir.join("state"))
            .status()
            .context("running sunset-archive")?;
        ensure!(
            status.success(),
            "sunset-archive {} failed ({status})",
            args[0]
        );
        Ok(())
    };
    let config_arg = config.to_str().context("a UTF-8 path")?;
    run(&[
        "create",
        "--dest",
        &format!("s3://{bucket}/legacy-metrics"),
        "--name",
        &name,
        "--dir",
        config_arg,
        "--table",
        "public.accounts",
        "--part-size",
        "5MiB",
    ])?;
    run(&["verify", &archive, "--deep"])?;
    run(&["list", &format!("s3://{bucket}/legacy-metrics")])?;
    let restored_arg = restored.to_str().context("a UTF-8 path")?;
    run(&[
        "restore",
        &archive,
        "--to",
        restored_arg,
        "--into-schema",
        "restored",
    ])?;
    let client = connect(url).await?;
    let differing: i64 = client
        .query_one(
            "SELECT count(*) FROM ((SELECT * FROM public.accounts EXCEPT ALL SELECT * FROM restored.accounts)
             UNION ALL (SELECT * FROM restored.accounts EXCEPT ALL SELECT * FROM public.accounts)) d",
            &[],
        )
        .await?
        .get(0);
    ensure!(differing == 0, "{differing} rows differ after the restore");
    for file in ["collector.yaml", "conf.d/hosts.list"] {
        let original = std::fs::read(config.join(file))?;
        let back = std::fs::read(restored.join("files/legacy-collector").join(file))?;
        ensure!(original == back, "{file} differs after the restore");
    }
    say!(
        "compared: the restored table equals public.accounts row for row, and the config files byte for byte"
    );
    Ok(())
}

fn teardown_stage() -> Result<()> {
    let binary = crate::build_binary("sunset-teardown", false)?;
    let fleet_builder = crate::build_example("sunset-teardown", "demo_fleet", false)?;
    let env = services::current_env()?;
    let built = Command::new(&fleet_builder)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .context("running the demo fleet builder")?;
    ensure!(
        built.status.success(),
        "building the demo fleet failed: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let stdout = String::from_utf8_lossy(&built.stdout);
    let region = stdout
        .lines()
        .find_map(|line| line.strip_prefix("region="))
        .context("the fleet builder named no region")?
        .to_owned();
    say!(
        "built in region {region}: legacy-collector-1 and -2 (tag Group=legacy-collector-instances), prometheus-data-vol-1, an Elastic IP, legacy-metrics-lb, legacy-metrics.internal"
    );
    let state = workspace_root().join("target/sunset-demo/teardown-state");
    if state.exists() {
        std::fs::remove_dir_all(&state)?;
    }
    let sequence = "sequences/legacy-metrics/decommission.yaml";
    let run = |args: &[&str]| -> Result<Option<i32>> {
        say!("$ sunset-teardown {}", args.join(" "));
        let status = Command::new(&binary)
            .args(args)
            .current_dir(workspace_root())
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("AWS_REGION", &region)
            .env("SUNSET_STATE_DIR", &state)
            .status()
            .context("running sunset-teardown")?;
        Ok(status.code())
    };
    ensure!(run(&["plan", sequence])? == Some(0), "plan failed");
    // The sequence waits 24h and 1h between steps; --max-wait caps that for the demo.
    let wait = Duration::from_secs(3);
    for _ in 0..5 {
        match run(&["apply", sequence, "--yes", "--max-wait", "3s"])? {
            Some(0) => {
                ensure!(run(&["status", sequence])? == Some(0), "status failed");
                say!(
                    "audit log and inventory: {}",
                    state.join("teardown").display()
                );
                return Ok(());
            }
            Some(3) => {
                say!("exit 3: a wait gate; the demo waits {wait:?} and runs apply again");
                std::thread::sleep(wait);
            }
            other => anyhow::bail!("apply failed (exit {other:?})"),
        }
    }
    anyhow::bail!("apply did not finish within 5 runs")
}

/// moto takes unsigned requests: one PUT makes the bucket (and an existing one is fine).
pub(crate) fn create_bucket(endpoint: &str, bucket: &str) -> Result<()> {
    use std::io::{Read, Write};
    let authority = endpoint
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default();
    let mut stream =
        std::net::TcpStream::connect(authority).context("connecting to the AWS emulator")?;
    write!(
        stream,
        "PUT /{bucket} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    ensure!(
        response.starts_with("HTTP/1.1 200") || response.contains("BucketAlreadyOwnedByYou"),
        "creating bucket {bucket}: {}",
        response.lines().next().unwrap_or_default()
    );
    Ok(())
}
