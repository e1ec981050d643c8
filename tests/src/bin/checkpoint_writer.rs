//! A fixture process for the checkpoint crash tests: it makes progress and checkpoints it as fast
//! as it can, printing `saved N` after each durable checkpoint, until it is SIGKILLed.
//!
//! Usage:
//!   sunset-checkpoint-writer file DIR RUN        checkpoints to a file store
//!   sunset-checkpoint-writer pg URL RUN TABLE    inserts a row and checkpoints it in one transaction
//!   sunset-checkpoint-writer hold-pg-lock URL RUN  takes the run's advisory lock and waits

use std::io::Write;

use anyhow::{Context, Result, bail};
use sunset_checkpoint::{FileStore, PgRunLock, PgStore};
use sunset_tests::{CRASH_FINGERPRINT, CrashState};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["file", dir, run] => write_file_checkpoints(dir, run),
        ["pg", url, run, table] => write_pg_checkpoints(url, run, table).await,
        ["hold-pg-lock", url, run] => {
            let _lock = PgRunLock::acquire(url, run).await?;
            report("locked")?;
            std::future::pending::<()>().await;
            Ok(())
        }
        _ => bail!(
            "usage: sunset-checkpoint-writer file DIR RUN | pg URL RUN TABLE | hold-pg-lock URL RUN"
        ),
    }
}

fn report(line: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")?;
    stdout.flush().context("stdout closed")
}

fn write_file_checkpoints(dir: &str, run: &str) -> Result<()> {
    let store = FileStore::in_dir(dir, run);
    let _lock = store.lock()?;
    let mut counter = store
        .resume::<CrashState>(CRASH_FINGERPRINT, false)?
        .map_or(0, |c| c.state.counter);
    report("locked")?;
    loop {
        counter += 1;
        store.save(CRASH_FINGERPRINT, &CrashState::new(counter))?;
        report(&format!("saved {counter}"))?;
    }
}

/// Takes the run lock, waiting a little for PostgreSQL to notice that the previous (SIGKILLed)
/// holder's connection is gone: the server frees the lock when it reads EOF from that socket.
async fn acquire_when_released(url: &str, run: &str) -> Result<PgRunLock> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match PgRunLock::acquire(url, run).await {
            Err(sunset_checkpoint::Error::Locked { .. })
                if std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            other => return Ok(other?),
        }
    }
}

async fn write_pg_checkpoints(url: &str, run: &str, table: &str) -> Result<()> {
    let _lock = acquire_when_released(url, run).await?;
    let (mut client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let store = PgStore::open(&mut client, run).await?;
    let mut counter = store
        .resume::<serde_json::Value>(&client, CRASH_FINGERPRINT, false)
        .await?
        .map_or(0, |c| c.state["counter"].as_u64().unwrap_or_default());
    report("locked")?;
    loop {
        counter += 1;
        let transaction = client.transaction().await?;
        let row = i64::try_from(counter)?;
        transaction
            .execute(&format!("INSERT INTO {table} (n) VALUES ($1)"), &[&row])
            .await?;
        store
            .save(
                &transaction,
                CRASH_FINGERPRINT,
                &serde_json::json!({ "counter": counter }),
            )
            .await?;
        transaction.commit().await?;
        report(&format!("saved {counter}"))?;
    }
}
