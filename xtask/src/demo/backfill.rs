//! Stages 2 and 3: a 200k-row STI backfill with `sunset-backfill` (interrupted, resumed,
//! validated, finished), then a second runner refused by the run locks.

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
throttle: { lock_timeout: 2s, statement_timeout: 30s, max_replication_lag: 10s }
";

/// Runs the real binary: preflight, a run interrupted with SIGINT at 40% (exit 3), the same
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
