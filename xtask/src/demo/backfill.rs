//! Stages 2 and 3: a 200k-row STI backfill with `sunset-backfill` (scraped by Prometheus and
//! asked the dashboard's questions, interrupted, resumed, validated, finished), then a second
//! runner refused by the run locks.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};

use crate::{say, workspace_root};

use super::*;
use sunset_checkpoint::{FileStore, PgRunLock};

/// The run stage 3 locks to show a second runner being refused.
const RUN: &str = "demo-lock";

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
# Paced, as on a live database: 200k rows take about 13 seconds, long enough to watch.
throttle: { lock_timeout: 2s, statement_timeout: 30s, max_replication_lag: 10s, max_rows_per_second: 15000 }
";

/// Runs the real binary: preflight, a run scraped by Prometheus and interrupted with SIGINT
/// past 40% (exit 3), the same
/// command again (resumes), `validate`, then `finish` (NOT NULL without a long lock).
pub(super) async fn backfill_stage(url: &str) -> Result<()> {
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
    // Scraped by the services' Prometheus, as a DBA's would (the target is known before the run
    // starts, so discovery has picked it up); interrupted once it is past 40% and Prometheus has
    // answered the dashboard's own rows/s and ETA queries.
    let prometheus = crate::services::prometheus()?;
    let metrics_addr = format!("127.0.0.1:{}", crate::process::free_port()?);
    let _scraped = prometheus.scrape("demo-backfill", &metrics_addr)?;
    say!("$ sunset-backfill preflight {plan}");
    ensure!(
        backfill(&["preflight", &plan]).status()?.success(),
        "preflight failed"
    );

    say!(
        "$ sunset-backfill run {plan} --workers 2 --metrics-addr {metrics_addr}   (interrupted with Ctrl-C past 40%)"
    );
    let mut run = backfill(&[
        "run",
        &plan,
        "--workers",
        "2",
        "--metrics-addr",
        &metrics_addr,
    ])
    .spawn()
    .context("starting sunset-backfill")?;
    let client = connect(url).await?;
    let questions = DashboardQuestions::load(&prometheus)?;
    let mut answered = false;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some(exit) = run.try_wait()? {
            anyhow::bail!("the run ended before it could be interrupted ({exit})");
        }
        if !answered {
            answered = questions.ask()?;
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
        if answered && progress.is_some_and(|p| p >= 0.4) {
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

/// The dashboard's rows/s and ETA questions about the demo run, read from its file once, and
/// the live Prometheus to ask them.
struct DashboardQuestions {
    client: sunset_promql::Client,
    url: String,
    dashboard: std::path::PathBuf,
    rate: String,
    eta: String,
}

impl DashboardQuestions {
    fn load(prometheus: &crate::prometheus::Prometheus) -> Result<DashboardQuestions> {
        let dashboard = "sunset-backfill.json";
        let as_sent = |expr: &str| {
            expr.replace("$run", "accounts-sti")
                .replace("$__rate_interval", "5s")
        };
        Ok(DashboardQuestions {
            client: prometheus.client(),
            url: prometheus.url(),
            dashboard: workspace_root().join("dashboards").join(dashboard),
            rate: as_sent(&crate::prometheus::panel_queries(dashboard, "Rows per second")?[0]),
            eta: as_sent(&crate::prometheus::panel_queries(dashboard, "ETA")?[0]),
        })
    }

    /// Prints the answers once both have one (false until then: too few scrapes for a rate).
    fn ask(&self) -> Result<bool> {
        let first = |expr: &str| {
            self.client
                .query(expr)
                .map(|series| series.first().map(|sample| sample.value))
                .with_context(|| format!("asking Prometheus `{expr}`"))
        };
        let (rate, eta) = (&self.rate, &self.eta);
        let (Some(rows_per_second), Some(eta_seconds)) = (first(rate)?, first(eta)?) else {
            return Ok(false);
        };
        if !(rows_per_second > 0.0 && eta_seconds.is_finite()) {
            return Ok(false);
        }
        say!(
            "dashboard for Grafana: {} (import it; alert rules beside it)",
            self.dashboard.display()
        );
        say!(
            "Prometheus at {} answers the dashboard's queries:\n  {rate}\n    = {rows_per_second:.0} rows/s\n  {eta}\n    = {eta_seconds:.1} s left",
            self.url
        );
        Ok(true)
    }
}

pub(super) async fn second_runner_refused(url: &str) -> Result<()> {
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
