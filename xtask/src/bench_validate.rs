//! `cargo xtask bench backfill --validate`: `sunset-backfill validate` of a copy-mode run
//! (every mapped column of every copied row against its source) side by side with the one
//! `EXCEPT` query a DBA would write to compare the same columns, on the same tables, in one run.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};

use crate::bench::{connect, fresh_database};
use crate::{say, workspace_root};

const RUNS: usize = 3;

/// What a DBA would run: the source rows, mapped, that have no equal row among the copies.
const EXCEPT: &str = "SELECT count(*) FROM (
    SELECT id, full_name, email, created_at, 'PersonalAccount'::text FROM legacy_accounts
    EXCEPT
    SELECT id, name, email, created_at, type FROM accounts) differing";

pub(crate) fn validate(rows: u64) -> Result<()> {
    let (admin_url, binary) = crate::bench::prepare()?;
    let dir = workspace_root().join("target/sunset-bench");
    std::fs::create_dir_all(&dir)?;
    let plan = dir.join("copy.yaml");
    std::fs::write(
        &plan,
        "backfill: bench-copy\nmode: copy\ntable: accounts\nkey: id\ndiscriminator: type\n\
         coverage: trigger\nsources:\n  - table: legacy_accounts\n    type: PersonalAccount\n\
         \x20   columns: { name: full_name }\n",
    )?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let url = fresh_database(&admin_url).await?;
        let client = connect(&url).await?;
        say!("building legacy_accounts ({rows} rows) and copying them with sunset-backfill run");
        client
            .batch_execute(&format!(
                "CREATE TABLE legacy_accounts (id bigint PRIMARY KEY, full_name text NOT NULL,
                     email text NOT NULL, created_at timestamptz NOT NULL);
                 INSERT INTO legacy_accounts
                 SELECT g, 'User ' || g, 'u' || g || '@example.com', '2020-01-01'::timestamptz + g * interval '1 minute'
                 FROM generate_series(1, {rows}) g;
                 CREATE TABLE accounts (id bigint PRIMARY KEY, type text, name text, email text,
                     created_at timestamptz);"
            ))
            .await
            .context("building the benchmark tables")?;
        // VACUUM can not share the implicit transaction of a multi-statement batch.
        client.batch_execute("VACUUM ANALYZE legacy_accounts").await?;
        ensure!(
            crate::bench::run_backfill(&binary, &plan, "1", &url)?.success(),
            "the copy run failed"
        );
        client.batch_execute("VACUUM ANALYZE accounts").await?;
        let validate = |expected: i32| -> Result<Duration> {
            let started = Instant::now();
            let output = Command::new(&binary)
                .arg("validate")
                .arg(&plan)
                .arg("--json")
                .env("DATABASE_URL", &url)
                .output()
                .context("running sunset-backfill validate")?;
            let elapsed = started.elapsed();
            ensure!(
                output.status.code() == Some(expected),
                "validate exited {:?}, expected {expected}: {}",
                output.status.code(),
                String::from_utf8_lossy(&output.stderr)
            );
            Ok(elapsed)
        };
        let mut ours = Vec::new();
        let mut theirs = Vec::new();
        for _ in 0..RUNS {
            ours.push(validate(0)?);
            let started = Instant::now();
            let differing: i64 = client.query_one(EXCEPT, &[]).await?.get(0);
            theirs.push(started.elapsed());
            ensure!(differing == 0, "EXCEPT found {differing} rows on an exact copy");
        }
        // The same comparison must see one corrupted value (and name it, which EXCEPT does not).
        client
            .batch_execute("UPDATE accounts SET name = 'CORRUPTED' WHERE id = 42")
            .await?;
        let corrupted = validate(1)?;
        ours.sort();
        theirs.sort();
        let (ours, theirs) = (ours[RUNS / 2], theirs[RUNS / 2]);
        #[allow(clippy::print_stdout, reason = "the benchmark's report is its output")]
        {
            println!(
                "validate of {rows} copied rows (every mapped column against its source), median of {RUNS} runs, release build\n\
                 {:<56} {:>8.2} s\n{:<56} {:>8.2} s\n{:<56} {:>8.2} s\n\
                 sunset-backfill validate runs at {:.2}x the speed of the EXCEPT query, and names the keys and columns that differ",
                "sunset-backfill validate (counts, keys, every value)",
                ours.as_secs_f64(),
                "sunset-backfill validate, one value corrupted (exit 1)",
                corrupted.as_secs_f64(),
                "one EXCEPT query over the same columns (a count only)",
                theirs.as_secs_f64(),
                theirs.as_secs_f64() / ours.as_secs_f64()
            );
        }
        Ok(())
    })
}
