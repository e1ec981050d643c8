//! `cargo xtask bench backfill`: sunset-backfill side by side with what a DBA would otherwise run,
//! in one run, on the same freshly built table, reported as rows/s and ratios. Speed is measured
//! here, never asserted in tests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use tokio_postgres::{Client, NoTls};

use crate::{build_binary, say, services, workspace_root};

const BATCH: u64 = 1_000;
const CASE: &str = "CASE legacy_kind WHEN 'personal' THEN 'PersonalAccount' WHEN 'business' THEN 'BusinessAccount' \
                    WHEN 'partner' THEN 'PartnerAccount' END";

/// What every backfill bench starts from: the services up, their admin URL, and the release
/// build of sunset-backfill.
pub(crate) fn prepare() -> Result<(String, PathBuf)> {
    services::up()?;
    let admin_url = services::database_url()?;
    say!("building sunset-backfill (release)");
    Ok((admin_url, build_binary("sunset-backfill", true)?))
}

pub(crate) fn backfill(rows: u64, rounds: usize) -> Result<()> {
    let (admin_url, binary) = prepare()?;
    let dir = workspace_root().join("target/sunset-bench");
    std::fs::create_dir_all(&dir)?;
    let plan = dir.join("bench.yaml");
    std::fs::write(
        &plan,
        format!(
            "backfill: bench\ntable: accounts\nkey: id\ndiscriminator: type\nfrom: legacy_kind\n\
             map: {{ personal: PersonalAccount, business: BusinessAccount, partner: PartnerAccount }}\n\
             coverage: application\nbatch: {{ size: {BATCH}, min_size: {BATCH}, max_size: {BATCH} }}\n"
        ),
    )?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let url = fresh_database(&admin_url).await?;
        let client = connect(&url).await?;
        let contenders = [
            "sunset-backfill, 1 worker",
            "sunset-backfill, 2 workers",
            "PL/pgSQL keyset loop",
            "single UPDATE",
        ];
        // Interleaved rounds: a slow spell of the machine hits every contender alike, and the
        // median of each is reported (one run alone varied by 20% here).
        let mut timings: Vec<Vec<Duration>> = vec![Vec::new(); contenders.len()];
        let mut waits: Vec<Waits> = vec![Waits::default(); contenders.len()];
        for round in 1..=rounds.max(1) {
            for (n, contender) in contenders.iter().enumerate() {
                reset(&client, rows).await?;
                say!("round {round}: {contender}");
                let started = Instant::now();
                match *contender {
                    "PL/pgSQL keyset loop" => client.batch_execute(&plpgsql_loop()).await?,
                    "single UPDATE" => {
                        client
                            .batch_execute(&format!("UPDATE accounts SET type = {CASE}"))
                            .await?
                    }
                    _ => {
                        let workers = if contender.contains('2') { "2" } else { "1" };
                        let (status, sampled) =
                            run_sampled(&binary, &plan, workers, &url, &client).await?;
                        ensure!(status.success(), "{contender} failed");
                        waits[n].merge(sampled);
                    }
                }
                let elapsed = started.elapsed();
                let untyped: i64 = client
                    .query_one("SELECT count(*) FROM accounts WHERE type IS NULL", &[])
                    .await?
                    .get(0);
                ensure!(untyped == 0, "{contender} left {untyped} rows untyped");
                timings[n].push(elapsed);
            }
        }
        let results: Vec<(&str, Duration)> = contenders
            .iter()
            .zip(&mut timings)
            .map(|(name, times)| {
                times.sort();
                (*name, times[times.len() / 2])
            })
            .collect();
        report(rows, &results);
        for (name, sampled) in contenders.iter().zip(&waits) {
            if sampled.total > 0 {
                #[allow(clippy::print_stdout, reason = "the benchmark's report is its output")]
                {
                    println!("{name}: {}", sampled.render());
                }
            }
        }
        Ok(())
    })
}

/// What the backfill's sessions were doing, sampled from `pg_stat_activity` every few
/// milliseconds: where a second worker's time goes (running, waiting for sunset's own process,
/// a lock, WAL, I/O).
#[derive(Debug, Clone, Default)]
struct Waits {
    total: u64,
    by_kind: std::collections::BTreeMap<String, u64>,
}

impl Waits {
    fn merge(&mut self, other: Waits) {
        self.total += other.total;
        for (kind, count) in other.by_kind {
            *self.by_kind.entry(kind).or_default() += count;
        }
    }

    /// The kinds by share of samples, largest first.
    fn render(&self) -> String {
        let mut kinds: Vec<(&String, &u64)> = self.by_kind.iter().collect();
        kinds.sort_by(|a, b| b.1.cmp(a.1));
        let shares: Vec<String> = kinds
            .iter()
            .take(6)
            .map(|(kind, count)| {
                format!("{kind} {:.0}%", **count as f64 * 100.0 / self.total as f64)
            })
            .collect();
        format!("{} session samples: {}", self.total, shares.join(", "))
    }
}

/// [`run_backfill`] while sampling its sessions' wait events on `client`'s connection.
async fn run_sampled(
    binary: &Path,
    plan: &Path,
    workers: &str,
    url: &str,
    client: &Client,
) -> Result<(std::process::ExitStatus, Waits)> {
    let mut child = backfill_command(binary, plan, workers, url)
        .spawn()
        .context("running sunset-backfill")?;
    let mut waits = Waits::default();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok((status, waits));
        }
        // Sessions in a transaction or running a statement: idle in transaction is the worker's
        // own process between its statements.
        let rows = client
            .query(
                "SELECT CASE WHEN state = 'idle in transaction' THEN 'sunset process (idle in transaction)'
                             WHEN wait_event IS NULL THEN 'running (CPU)'
                             ELSE wait_event_type || ':' || wait_event END
                 FROM pg_stat_activity
                 WHERE application_name = 'sunset-backfill' AND pid <> pg_backend_pid()
                   AND state IN ('active', 'idle in transaction')",
                &[],
            )
            .await?;
        for row in rows {
            waits.total += 1;
            *waits.by_kind.entry(row.get(0)).or_default() += 1;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `sunset-backfill run PLAN --workers N` against `url`, its progress display discarded.
fn backfill_command(binary: &Path, plan: &Path, workers: &str, url: &str) -> Command {
    let mut command = Command::new(binary);
    command
        .arg("run")
        .arg(plan)
        .args(["--workers", workers])
        .env("DATABASE_URL", url)
        .stderr(std::process::Stdio::null());
    command
}

/// [`backfill_command`] to completion.
pub(crate) fn run_backfill(
    binary: &Path,
    plan: &Path,
    workers: &str,
    url: &str,
) -> Result<std::process::ExitStatus> {
    backfill_command(binary, plan, workers, url)
        .status()
        .context("running sunset-backfill")
}

pub(crate) async fn connect(url: &str) -> Result<Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

pub(crate) async fn fresh_database(admin_url: &str) -> Result<String> {
    let admin = connect(admin_url).await?;
    admin
        .batch_execute("DROP DATABASE IF EXISTS sunset_bench WITH (FORCE)")
        .await?;
    admin.batch_execute("CREATE DATABASE sunset_bench").await?;
    let (base, _) = admin_url
        .rsplit_once('/')
        .context("DATABASE_URL has no database name")?;
    Ok(format!("{base}/sunset_bench"))
}

/// The same table for every contender, built fresh (no bloat or hint bits carried over), and the
/// backfill's own state cleared.
pub(crate) async fn reset(client: &Client, rows: u64) -> Result<()> {
    client
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS accounts;
             CREATE TABLE accounts (id bigint PRIMARY KEY, legacy_kind text NOT NULL, type text, email text NOT NULL);
             INSERT INTO accounts SELECT g, (ARRAY['personal', 'business', 'partner'])[1 + g % 3], NULL, 'u' || g || '@example.com'
             FROM generate_series(1, {rows}) g;"
        ))
        .await?;
    // VACUUM and CHECKPOINT can not share the implicit transaction of a multi-statement batch.
    client.batch_execute("VACUUM ANALYZE accounts").await?;
    client
        .batch_execute(
            "DO $$ BEGIN
                 IF to_regclass('sunset.backfill_runs') IS NOT NULL THEN
                     DELETE FROM sunset.backfill_undo; DELETE FROM sunset.backfill_ranges;
                     DELETE FROM sunset.backfill_runs; DELETE FROM sunset.checkpoints;
                 END IF;
             END $$;",
        )
        .await?;
    client.batch_execute("CHECKPOINT").await?;
    Ok(())
}

/// What a DBA writes by hand: a server-side keyset loop, one transaction per batch.
fn plpgsql_loop() -> String {
    format!(
        "DO $$
         DECLARE last_id bigint := 0; upper_id bigint; batch_last bigint;
         BEGIN
             SELECT max(id) INTO upper_id FROM accounts;
             LOOP
                 WITH batch AS (SELECT id FROM accounts WHERE id > last_id AND id <= upper_id ORDER BY id LIMIT {BATCH}),
                      changed AS (UPDATE accounts a SET type = {CASE} FROM batch b WHERE a.id = b.id RETURNING a.id)
                 SELECT max(id) INTO batch_last FROM batch;
                 EXIT WHEN batch_last IS NULL;
                 last_id := batch_last;
                 COMMIT;
             END LOOP;
         END $$"
    )
}

fn report(rows: u64, results: &[(&str, Duration)]) {
    let baseline = results
        .iter()
        .find(|(name, _)| *name == "PL/pgSQL keyset loop")
        .map(|(_, d)| *d);
    let mut out = format!(
        "backfill of {rows} rows, batch size {BATCH}, median of interleaved rounds (sunset also writes its undo journal and checkpoints)\n"
    );
    out.push_str(&format!(
        "{:<28} {:>10} {:>12} {:>18}\n",
        "contender", "seconds", "rows/s", "vs PL/pgSQL loop"
    ));
    for (name, elapsed) in results {
        let rate = rows as f64 / elapsed.as_secs_f64();
        let ratio = baseline.map_or("-".to_owned(), |b| {
            format!("{:.2}x", b.as_secs_f64() / elapsed.as_secs_f64())
        });
        out.push_str(&format!(
            "{name:<28} {:>10.2} {rate:>12.0} {ratio:>18}\n",
            elapsed.as_secs_f64()
        ));
    }
    #[allow(clippy::print_stdout, reason = "the benchmark's report is its output")]
    {
        print!("{out}");
    }
}
