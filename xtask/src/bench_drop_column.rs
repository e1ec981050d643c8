//! `cargo xtask bench drop-column`: `sunset-drop-column check` on a schema of 2,000 tables and
//! 500 views, side by side with what a release engineer would otherwise do by hand:
//! `pg_dump --schema-only | grep -n <column>` (which finds mentions, not the dependency closure).
//! `check --probe` adds the behavioural probe on a scratch copy of the schema.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};

use crate::{say, services};

const TABLES: u32 = 2_000;
const VIEWS: u32 = 500;
const RUNS: usize = 3;

pub(crate) fn drop_column() -> Result<()> {
    services::up()?;
    let admin_url = services::database_url()?;
    say!("building sunset-drop-column (release)");
    let binary = crate::build_binary("sunset-drop-column", true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let url = runtime.block_on(async {
        let url = crate::bench::fresh_database(&admin_url).await?;
        let client = crate::bench::connect(&url).await?;
        say!("building a schema of {TABLES} tables and {VIEWS} views");
        client
            .batch_execute(&format!(
                "CREATE TABLE accounts (id bigint PRIMARY KEY, tenant_id int, type text, legacy_kind text);
                 CREATE INDEX accounts_kind ON accounts (legacy_kind);
                 CREATE INDEX accounts_tenant_kind ON accounts (tenant_id, legacy_kind);
                 DO $$ BEGIN
                   FOR i IN 1..{TABLES} LOOP
                     EXECUTE format('CREATE TABLE t_%s (id bigint PRIMARY KEY, account_id bigint REFERENCES accounts, name text, legacy_kind text, created_at timestamptz)', i);
                     EXECUTE format('CREATE INDEX ON t_%s (account_id, name)', i);
                   END LOOP;
                   FOR i IN 1..{VIEWS} LOOP
                     IF i % 50 = 0 THEN
                       EXECUTE format('CREATE VIEW v_%s AS SELECT a.id, a.legacy_kind, t.name FROM accounts a JOIN t_%s t ON t.account_id = a.id', i, i);
                     ELSE
                       EXECUTE format('CREATE VIEW v_%s AS SELECT id, name, legacy_kind FROM t_%s', i, i);
                     END IF;
                   END LOOP;
                 END $$;
                 ANALYZE;"
            ))
            .await
            .context("building the benchmark schema")?;
        anyhow::Ok(url)
    })?;
    let check = |extra: &[&str]| -> Result<Duration> {
        let started = Instant::now();
        let output = Command::new(&binary)
            .args([
                "check",
                "--table",
                "accounts",
                "--column",
                "legacy_kind",
                "--json",
            ])
            .args(extra)
            .env("DATABASE_URL", &url)
            .output()?;
        let elapsed = started.elapsed();
        ensure!(
            output.status.code() == Some(1),
            "check should block on the views: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(elapsed)
    };
    let pg_dump = crate::postgres::find_bin_dir()?.join("pg_dump");
    let dump_and_grep = || -> Result<Duration> {
        let started = Instant::now();
        let mut dump = Command::new(&pg_dump)
            .args(["--schema-only", &url])
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {}", pg_dump.display()))?;
        let grep = Command::new("grep")
            .args(["-n", "-w", "legacy_kind"])
            .stdin(dump.stdout.take().context("pg_dump's stdout")?)
            .stdout(Stdio::null())
            .status()?;
        ensure!(
            dump.wait()?.success() && grep.success(),
            "pg_dump | grep failed"
        );
        Ok(started.elapsed())
    };
    let median = |f: &dyn Fn() -> Result<Duration>| -> Result<Duration> {
        let mut times = (0..RUNS).map(|_| f()).collect::<Result<Vec<_>>>()?;
        times.sort();
        Ok(times[RUNS / 2])
    };
    let ours = median(&|| check(&[]))?;
    let probed = median(&|| check(&["--probe"]))?;
    let theirs = median(&dump_and_grep)?;
    #[allow(clippy::print_stdout, reason = "the benchmark's report is its output")]
    {
        println!(
            "check on {TABLES} tables and {VIEWS} views (median of {RUNS} runs, release build)\n\
             {:<44} {:>8.2} s\n{:<44} {:>8.2} s\n{:<44} {:>8.2} s\nsunset-drop-column check runs at {:.2}x the speed of pg_dump | grep, and finds the dependency closure, not only mentions",
            "sunset-drop-column check (every finding)",
            ours.as_secs_f64(),
            "sunset-drop-column check --probe",
            probed.as_secs_f64(),
            "pg_dump --schema-only | grep -n -w legacy_kind",
            theirs.as_secs_f64(),
            theirs.as_secs_f64() / ours.as_secs_f64()
        );
    }
    Ok(())
}
