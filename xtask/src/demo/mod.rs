//! `cargo xtask demo`: the end-to-end story on demo data, against the real services.
//!
//! Each binary's issue adds its stage here. So far: the services, a decommission sequence loaded
//! and rendered as a dry run, a 200k-row STI backfill with `sunset-backfill` (interrupted,
//! resumed, validated, finished), a second runner refused by the run lock, and an archive of a
//! config directory and the table to S3 with `sunset-archive` (verified, restored, compared), a
//! decommission of a legacy fleet in the emulator with `sunset-teardown`, and the whole cutover of
//! another (metric parity, a gated traffic shift through haproxy, zero traffic, then teardown).

use anyhow::{Context, Result, ensure};
use sunset_plan::format::SequenceFile;
use sunset_plan::{StepState, StepView, render_steps};
use tokio_postgres::{Client, NoTls};

use crate::{say, services, workspace_root};

mod archive;
mod backfill;
mod cutover;
mod drop_column;
mod teardown;

use archive::archive_stage;
use backfill::{backfill_stage, second_runner_refused};
use cutover::cutover_stage;
use drop_column::drop_column_stage;
use teardown::teardown_stage;

pub(super) const DEMO_DATABASE: &str = "sunset_demo";
pub(super) const DEMO_ROWS: i64 = 200_000;

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
        say!("stage 2: sunset-backfill over {DEMO_ROWS} legacy accounts, scraped by Prometheus, interrupted past 40% and resumed");
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
        "stage 7: the cutover: metric parity of the legacy and new collectors, traffic shifted 10/25/50/100% through haproxy under gates, zero traffic on the legacy server, then the legacy fleet retired"
    );
    cutover_stage(&admin_url)?;
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

pub(super) async fn connect(url: &str) -> Result<Client> {
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

pub(super) fn report(text: &str) {
    #[allow(clippy::print_stdout, reason = "the demo's story is its output")]
    {
        println!("{text}");
    }
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
