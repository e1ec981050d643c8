//! `cargo xtask demo`: the end-to-end story on demo data, against the real services.
//!
//! Each binary's issue adds its stage here. So far the story shows the foundation every binary
//! stands on: the services, a decommission sequence loaded and rendered as a dry run, and a
//! checkpointed batch job that is interrupted, resumed, and proven to have processed every row
//! exactly once.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use indicatif::{ProgressBar, ProgressStyle};
use sunset_checkpoint::{FileStore, PgRunLock, PgStore};
use sunset_plan::format::SequenceFile;
use sunset_plan::{StepState, StepView, render_steps};
use tokio_postgres::{Client, NoTls};

use crate::{say, services, workspace_root};

const DEMO_DATABASE: &str = "sunset_demo";
const DEMO_ROWS: i64 = 200_000;
const BATCH_ROWS: i64 = 5_000;
const RUN: &str = "demo-mark-processed";

pub(crate) fn run() -> Result<()> {
    services::up()?;
    services::print_status()?;
    let env = services::current_env()?;
    let admin_url = env
        .iter()
        .find(|(k, _)| *k == "DATABASE_URL")
        .map(|(_, v)| v.clone())
        .context("no DATABASE_URL")?;

    say!("stage 1: a decommission sequence, loaded and rendered as a dry run");
    show_sequence()?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let demo_url = recreate_demo_database(&admin_url).await?;
        say!("stage 2: a checkpointed batch job over {DEMO_ROWS} rows, interrupted and resumed");
        checkpointed_job(&demo_url).await?;
        say!("stage 3: one runner per run");
        second_runner_refused(&demo_url).await
    })?;
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
                    let action = serde_json::to_value(a.action)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned));
                    let targets: Vec<&str> = a
                        .targets
                        .iter()
                        .chain(&a.records)
                        .map(|t| t.as_str())
                        .collect();
                    let action = action.unwrap_or_default();
                    if targets.is_empty() {
                        action
                    } else {
                        format!("{action} {}", targets.join(","))
                    }
                })
                .collect::<Vec<_>>()
                .join("; "),
            validation: actions
                .iter()
                .filter_map(|a| a.validation.as_ref())
                .map(|v| {
                    serde_json::to_value(v.check)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default()
                })
                .reduce(|a, b| format!("{a}, {b}")),
            irreversible: actions.iter().any(|a| {
                matches!(
                    a.action,
                    sunset_plan::format::ActionKind::TerminateInstances
                        | sunset_plan::format::ActionKind::DeleteVolumes
                        | sunset_plan::format::ActionKind::DeleteLoadBalancers
                        | sunset_plan::format::ActionKind::CleanSecurityGroups
                        | sunset_plan::format::ActionKind::DeleteSecurityGroups
                )
            }),
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
            "CREATE TABLE legacy_events (id bigint PRIMARY KEY, payload text NOT NULL, times_processed int NOT NULL DEFAULT 0);
             INSERT INTO legacy_events (id, payload) SELECT g, md5(g::text) FROM generate_series(1, {DEMO_ROWS}) g;"
        ))
        .await
        .context("loading demo data")?;
    Ok(url)
}

/// Marks rows processed in keyset batches; each batch commits together with its checkpoint.
/// Stops after `stop_after` batches, as an interrupted runner would.
async fn process_batches(url: &str, stop_after: Option<usize>, bar: &ProgressBar) -> Result<i64> {
    let lock = PgRunLock::acquire(url, RUN).await?;
    let mut client = connect(url).await?;
    let store = PgStore::open(&mut client, RUN).await?;
    let mut last_id: i64 = store
        .resume::<serde_json::Value>(&client, "demo-plan-v1", false)
        .await?
        .and_then(|c| c.state["last_id"].as_i64())
        .unwrap_or(0);
    if last_id > 0 {
        say!("resuming from the checkpoint: last processed id {last_id}");
    }
    bar.set_position(u64::try_from(last_id)?);
    let mut batches = 0;
    while last_id < DEMO_ROWS && stop_after.is_none_or(|limit| batches < limit) {
        let upper = (last_id + BATCH_ROWS).min(DEMO_ROWS);
        let transaction = client.transaction().await?;
        transaction
            .execute(
                "UPDATE legacy_events SET times_processed = times_processed + 1 WHERE id > $1 AND id <= $2",
                &[&last_id, &upper],
            )
            .await?;
        store
            .save(
                &transaction,
                "demo-plan-v1",
                &serde_json::json!({ "last_id": upper }),
            )
            .await?;
        transaction.commit().await?;
        last_id = upper;
        batches += 1;
        bar.set_position(u64::try_from(last_id)?);
        if !bar.is_hidden() {
            // Slow enough to watch the bar move; the real work is a few milliseconds per batch.
            tokio::time::sleep(Duration::from_millis(40)).await;
        } else if batches % 10 == 0 {
            say!("processed {last_id}/{DEMO_ROWS} rows");
        }
    }
    lock.release().await?;
    Ok(last_id)
}

async fn checkpointed_job(url: &str) -> Result<()> {
    let bar = progress_bar(u64::try_from(DEMO_ROWS)?);
    let total_batches = usize::try_from(DEMO_ROWS / BATCH_ROWS)?;
    let reached = process_batches(url, Some(total_batches * 2 / 5), &bar).await?;
    bar.abandon_with_message("interrupted");
    say!(
        "interrupted at {reached}/{DEMO_ROWS} rows (as a Ctrl-C or crash would); running the same job again"
    );
    let bar = progress_bar(u64::try_from(DEMO_ROWS)?);
    process_batches(url, None, &bar).await?;
    bar.finish_with_message("done");

    let client = connect(url).await?;
    let row = client
        .query_one("SELECT count(*) FILTER (WHERE times_processed = 1), count(*) FILTER (WHERE times_processed <> 1) FROM legacy_events", &[])
        .await?;
    let (once, not_once): (i64, i64) = (row.get(0), row.get(1));
    ensure!(
        not_once == 0 && once == DEMO_ROWS,
        "{not_once} rows were not processed exactly once"
    );
    say!("verified: all {once} rows processed exactly once across the interruption");
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

fn progress_bar(total: u64) -> ProgressBar {
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::new(total)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} rows {per_sec} eta {eta} {msg}")
            .expect("a valid progress template"),
    );
    bar
}

fn report(text: &str) {
    #[allow(clippy::print_stdout, reason = "the demo's story is its output")]
    {
        println!("{text}");
    }
}
