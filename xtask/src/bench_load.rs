//! `cargo xtask bench backfill --under-load`: what a live application feels while a backfill
//! runs. pgbench drives the same cluster at a fixed rate (its TPC-B-like script, 2 clients), once
//! alone and once during each contender's run; its per-transaction log gives p50 and p99 latency
//! for the transactions that ran while the backfill did, beside the backfill's own rows/s.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, ensure};

use crate::bench::{connect, fresh_database, reset, run_backfill};
use crate::{say, services, workspace_root};

/// How the DBA would start: the plan as written without tuning (1 and 2 workers), then with a
/// duty cycle, with a probe, and with small batches at a fixed pace.
const CONTENDERS: [(&str, &str, &str); 5] = [
    ("sunset-backfill, 1 worker", "1", ""),
    ("sunset-backfill, 2 workers", "2", ""),
    (
        "1 worker, duty_cycle 0.5",
        "1",
        "throttle: { duty_cycle: 0.5 }\n",
    ),
    (
        "1 worker, probe slowdown 1.5x",
        "1",
        "throttle: { max_probe_slowdown: 1.5 }\n",
    ),
    (
        "500-row batches at 20k rows/s",
        "1",
        "batch: { size: 500, max_size: 500 }\nthrottle: { max_rows_per_second: 20000 }\n",
    ),
];

/// How long pgbench runs beside each contender (the run must end within it).
const LOADED_SECONDS: u32 = 45;

pub(crate) fn under_load(rows: u64, tps: u32) -> Result<()> {
    let (admin_url, binary) = crate::bench::prepare()?;
    let pgbench = pg_program("pgbench")?;
    let dir = workspace_root().join("target/sunset-bench/under-load");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let url = runtime.block_on(fresh_database(&admin_url))?;
    say!("pgbench -i -s 10 (the application's tables)");
    crate::process::run(Command::new(&pgbench).args(["-i", "-q", "-s", "10", &url]))?;
    let client = runtime.block_on(connect(&url))?;

    say!("pgbench alone at {tps} tps for 20 s");
    let alone = latencies(&pgbench_run(&pgbench, &url, tps, 20, &dir.join("alone"))?.wait()?)?;
    let mut lines = vec![row("pgbench alone", &alone, None, None)];
    for (name, workers, throttle) in CONTENDERS {
        runtime.block_on(reset(&client, rows))?;
        let plan = dir.join(format!("plan-{}.yaml", lines.len()));
        std::fs::write(
            &plan,
            format!(
                "backfill: bench\ntable: accounts\nkey: id\ndiscriminator: type\nfrom: legacy_kind\n\
                 map: {{ personal: PersonalAccount, business: BusinessAccount, partner: PartnerAccount }}\n\
                 coverage: application\n{throttle}"
            ),
        )?;
        say!("{name}, with pgbench at {tps} tps");
        let log = dir.join(format!("during-{}", lines.len()));
        let load = pgbench_run(&pgbench, &url, tps, LOADED_SECONDS, &log)?;
        // pgbench's clients connect and settle first.
        std::thread::sleep(Duration::from_secs(3));
        let from = unix_now();
        let started = Instant::now();
        let status = run_backfill(&binary, &plan, workers, &url)?;
        let took = started.elapsed();
        let to = unix_now();
        ensure!(status.success(), "{name} failed");
        ensure!(
            took.as_secs() + 3 < u64::from(LOADED_SECONDS),
            "{name} took {took:?}, longer than the load lasts: use fewer --rows"
        );
        let window = load.wait()?;
        let during: Vec<u64> = window
            .into_iter()
            .filter(|(at, _)| (from..=to).contains(at))
            .map(|(_, latency)| latency)
            .collect();
        ensure!(
            !during.is_empty(),
            "pgbench logged no transaction during {name}"
        );
        lines.push(row(
            name,
            &sorted(during),
            Some(&alone),
            Some(rows as f64 / took.as_secs_f64()),
        ));
    }
    let mut out = format!(
        "p50/p99 latency of pgbench (TPC-B-like, 2 clients, {tps} tps) while a backfill of {rows} rows runs\n{:<32} {:>9} {:>9} {:>13} {:>16}\n",
        "", "p50 ms", "p99 ms", "p99 vs alone", "backfill rows/s"
    );
    out.push_str(&lines.concat());
    #[allow(clippy::print_stdout, reason = "the benchmark's report is its output")]
    {
        print!("{out}");
    }
    Ok(())
}

/// The server's own client program (the cluster's bin directory), else the one on PATH.
fn pg_program(name: &str) -> Result<PathBuf> {
    let env = services::current_env()?;
    let dir = env
        .iter()
        .find(|(key, _)| *key == "SUNSET_PG_BIN_DIR")
        .map(|(_, value)| value.clone())
        .unwrap_or_default();
    let candidate = Path::new(&dir).join(name);
    if !dir.is_empty() && candidate.is_file() {
        return Ok(candidate);
    }
    ensure!(
        crate::process::on_path(name),
        "{name} is needed for the load (it comes with the PostgreSQL server: `apt-get install postgresql`)"
    );
    Ok(PathBuf::from(name))
}

/// pgbench at a fixed rate with a per-transaction log under `prefix`.
struct Load {
    child: Child,
    prefix: PathBuf,
}

impl Load {
    /// Waits for pgbench to end (a killed pgbench loses the tail of its buffered log) and
    /// reads what it logged.
    fn wait(mut self) -> Result<Vec<(u64, u64)>> {
        let status = self.child.wait()?;
        ensure!(status.success(), "pgbench failed ({status})");
        read_log(&self.prefix)
    }
}

fn pgbench_run(pgbench: &Path, url: &str, tps: u32, seconds: u32, prefix: &Path) -> Result<Load> {
    std::fs::create_dir_all(prefix)?;
    let child = Command::new(pgbench)
        .args(["-n", "-c", "2", "-j", "2", "-R", &tps.to_string()])
        .args(["-T", &seconds.to_string(), "-l"])
        .arg(format!("--log-prefix={}", prefix.join("pgbench").display()))
        .arg(url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting pgbench")?;
    Ok(Load {
        child,
        prefix: prefix.to_owned(),
    })
}

/// (unix seconds, latency in microseconds) of every transaction in the logs under `prefix`:
/// pgbench writes `client_id transaction_no time script_no time_epoch time_us [schedule_lag]`.
fn read_log(prefix: &Path) -> Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(prefix)? {
        let text = std::fs::read_to_string(entry?.path())?;
        for line in text.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if let (Some(latency), Some(epoch)) = (fields.get(2), fields.get(4))
                && let (Ok(latency), Ok(epoch)) = (latency.parse(), epoch.parse())
            {
                out.push((epoch, latency));
            }
        }
    }
    Ok(out)
}

fn latencies(log: &[(u64, u64)]) -> Result<Vec<u64>> {
    ensure!(!log.is_empty(), "pgbench logged no transaction");
    Ok(sorted(log.iter().map(|(_, latency)| *latency).collect()))
}

fn sorted(mut values: Vec<u64>) -> Vec<u64> {
    values.sort_unstable();
    values
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)] as f64 / 1000.0
}

fn row(name: &str, sorted: &[u64], alone: Option<&[u64]>, rows_per_second: Option<f64>) -> String {
    let p99 = percentile(sorted, 0.99);
    let ratio = alone.map_or("-".to_owned(), |alone| {
        format!("{:.2}x", p99 / percentile(alone, 0.99))
    });
    let rate = rows_per_second.map_or("-".to_owned(), |r| format!("{r:.0}"));
    format!(
        "{name:<32} {:>9.2} {p99:>9.2} {ratio:>13} {rate:>16}\n",
        percentile(sorted, 0.5)
    )
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
