//! `cargo xtask services up | down | env | status`: real services for tests and the demo.
//!
//! State lives in `target/sunset-services/state.json` so that `up` is idempotent across
//! invocations, `down` stops only what `up` started, and tests run with plain `cargo test` can
//! find the services through `target/sunset-services/env` (see `sunset-test-support`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::moto::{self, Emulator};
use crate::postgres::{self, Cluster};
use crate::{say, services_dir};

/// The region every client uses against the emulator.
const REGION: &str = "us-east-1";

/// Everything `up` started or found, persisted between xtask invocations.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    /// The cluster `up` started; `None` when an external `DATABASE_URL` is used instead.
    postgres: Option<Cluster>,
    /// An external server given through `DATABASE_URL`; never started or stopped by us.
    external_database_url: Option<String>,
    moto: Option<Emulator>,
}

/// What one `up` call started itself, so `cargo xtask test` stops only that.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Started {
    postgres: bool,
    moto: bool,
}

fn state_path() -> PathBuf {
    services_dir().join("state.json")
}

fn env_file_path() -> PathBuf {
    services_dir().join("env")
}

fn load_state() -> State {
    std::fs::read(state_path())
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

fn save_state(state: &State) -> Result<()> {
    std::fs::create_dir_all(services_dir())?;
    std::fs::write(state_path(), serde_json::to_vec_pretty(state)?)
        .context("writing the services state")?;
    // With one service stopped (or gone), there is no complete environment to offer.
    let Ok(vars) = env_vars(state) else {
        let _ = std::fs::remove_file(env_file_path());
        return Ok(());
    };
    let lines: String = vars
        .into_iter()
        .map(|(key, value)| format!("{key}={value}\n"))
        .collect();
    std::fs::write(env_file_path(), lines).context("writing the services env file")
}

/// Starts what is not running yet; reuses what is.
pub(crate) fn up() -> Result<Started> {
    let root = services_dir();
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let mut state = load_state();
    let mut started = Started::default();

    match std::env::var("DATABASE_URL")
        .ok()
        .filter(|url| !url.is_empty())
    {
        Some(url) => {
            check_postgres(&url).context("DATABASE_URL is set, but its server is not reachable")?;
            say!("PostgreSQL: using DATABASE_URL ({})", redact(&url));
            state.external_database_url = Some(url);
        }
        None => {
            state.external_database_url = None;
            match state.postgres.take().filter(Cluster::is_running) {
                Some(cluster) => {
                    say!("PostgreSQL: already running on port {}", cluster.port);
                    state.postgres = Some(cluster);
                }
                None => {
                    let cluster = postgres::start(&root.join("postgres"))?;
                    check_postgres(&cluster.url())
                        .context("the PostgreSQL cluster started but does not answer")?;
                    say!(
                        "PostgreSQL: started on port {} ({})",
                        cluster.port,
                        cluster.data_dir.display()
                    );
                    state.postgres = Some(cluster);
                    started.postgres = true;
                }
            }
        }
    }
    // Saved between the two services so a failing emulator start leaves a state `down` can use.
    save_state_if_possible(&state);

    let recorded = state.moto.take();
    let healthy = recorded.as_ref().is_some_and(Emulator::is_running);
    if let Some(stale) = recorded.as_ref().filter(|_| !healthy)
        && crate::process::is_alive(stale.pid)
    {
        // Alive but not answering: stop it rather than orphan it by starting another.
        say!(
            "AWS emulator: pid {} does not answer; restarting it",
            stale.pid
        );
        stale.stop();
    }
    match recorded.filter(|_| healthy) {
        Some(emulator) => {
            say!("AWS emulator: already running on port {}", emulator.port);
            state.moto = Some(emulator);
        }
        None => {
            let emulator = match moto::start(&root) {
                Ok(emulator) => emulator,
                Err(error) => {
                    // Leave nothing behind that this call started.
                    if started.postgres {
                        let _ = stop(Started {
                            postgres: true,
                            moto: false,
                        });
                    }
                    return Err(error);
                }
            };
            say!(
                "AWS emulator: {} started on port {}",
                moto::MOTO_REQUIREMENT,
                emulator.port
            );
            state.moto = Some(emulator);
            started.moto = true;
        }
    }
    save_state(&state)?;
    Ok(started)
}

fn save_state_if_possible(state: &State) {
    if let Err(error) = std::fs::create_dir_all(services_dir())
        .map_err(anyhow::Error::from)
        .and_then(|()| {
            Ok(std::fs::write(
                state_path(),
                serde_json::to_vec_pretty(state)?,
            )?)
        })
    {
        say!("could not save the services state: {error:#}");
    }
}

/// Stops everything `up` started in any invocation.
pub(crate) fn down() -> Result<()> {
    stop(Started {
        postgres: true,
        moto: true,
    })
}

/// Stops the services in `which` that `up` started; an external server is never touched.
pub(crate) fn stop(which: Started) -> Result<()> {
    let mut state = load_state();
    if which.postgres
        && let Some(cluster) = state.postgres.take()
        && cluster.is_running()
    {
        cluster.stop().context("stopping PostgreSQL")?;
        say!("PostgreSQL: stopped");
    }
    if which.moto
        && let Some(emulator) = state.moto.take()
    {
        emulator.stop();
        say!("AWS emulator: stopped");
    }
    if state.postgres.is_none() && state.moto.is_none() {
        let _ = std::fs::remove_file(state_path());
        let _ = std::fs::remove_file(env_file_path());
        Ok(())
    } else {
        save_state(&state)
    }
}

/// The environment a client of the services needs.
fn env_vars(state: &State) -> Result<Vec<(&'static str, String)>> {
    let database_url = match (&state.external_database_url, &state.postgres) {
        (Some(url), _) => url.clone(),
        (None, Some(cluster)) => cluster.url(),
        (None, None) => bail!("PostgreSQL is not up: run `cargo xtask services up` first"),
    };
    let Some(emulator) = &state.moto else {
        bail!("the AWS emulator is not up: run `cargo xtask services up` first")
    };
    let ca_file = match (&state.external_database_url, &state.postgres) {
        (None, Some(cluster)) => cluster.ca_file().display().to_string(),
        _ => String::new(),
    };
    Ok(vec![
        ("DATABASE_URL", database_url),
        // The CA of our cluster's TLS certificate (empty for an external server).
        ("SUNSET_PG_CA_FILE", ca_file),
        ("AWS_ENDPOINT_URL", emulator.url()),
        ("AWS_REGION", REGION.to_owned()),
        ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
        // The emulator is on loopback: a proxy configured for the internet must not intercept it.
        ("NO_PROXY", "127.0.0.1,localhost".to_owned()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
    ])
}

/// The environment for child processes (`cargo test`, the demo's binaries).
pub(crate) fn current_env() -> Result<Vec<(&'static str, String)>> {
    env_vars(&load_state())
}

/// The running AWS emulator's endpoint URL.
pub(crate) fn aws_endpoint() -> Result<String> {
    current_env()?
        .into_iter()
        .find(|(k, _)| *k == "AWS_ENDPOINT_URL")
        .map(|(_, v)| v)
        .context("the AWS emulator is not running")
}

/// The `DATABASE_URL` the services provide (ours or the external one).
pub(crate) fn database_url() -> Result<String> {
    current_env()?
        .into_iter()
        .find(|(key, _)| *key == "DATABASE_URL")
        .map(|(_, value)| value)
        .context("the services have no DATABASE_URL")
}

pub(crate) fn print_env() -> Result<()> {
    let mut out = String::new();
    for (key, value) in current_env()? {
        out.push_str(&format!(
            "export {key}='{}'\n",
            value.replace('\'', r"'\''")
        ));
    }
    #[allow(
        clippy::print_stdout,
        reason = "`services env` output is data for `eval`"
    )]
    {
        print!("{out}");
    }
    Ok(())
}

pub(crate) fn print_status() -> Result<()> {
    let state = load_state();
    let mut lines = Vec::new();
    match (&state.external_database_url, &state.postgres) {
        (Some(url), _) => {
            let reachable = if check_postgres(url).is_ok() {
                "reachable"
            } else {
                "NOT reachable"
            };
            lines.push(format!("postgres  external  {}  {reachable}", redact(url)));
        }
        (None, Some(cluster)) => {
            let running = if cluster.is_running() {
                "running"
            } else {
                "NOT running"
            };
            let pid = cluster
                .pid()
                .map(|p| p.to_string())
                .unwrap_or_else(|| "-".into());
            lines.push(format!(
                "postgres  {running}  {}  pid {pid}  data {}",
                cluster.url(),
                cluster.data_dir.display()
            ));
        }
        (None, None) => lines.push("postgres  not started".to_owned()),
    }
    match &state.moto {
        Some(emulator) => {
            let running = if emulator.is_running() {
                "running"
            } else {
                "NOT running"
            };
            lines.push(format!(
                "aws       {running}  {}  pid {}  ({})",
                emulator.url(),
                emulator.pid,
                moto::MOTO_REQUIREMENT
            ));
        }
        None => lines.push("aws       not started".to_owned()),
    }
    #[allow(
        clippy::print_stdout,
        reason = "`services status` output is the report"
    )]
    {
        println!("{}", lines.join("\n"));
    }
    Ok(())
}

/// Connects and runs `SELECT 1`, so "up" means "answers queries", not "port open".
pub(crate) fn check_postgres(url: &str) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let connect = tokio_postgres::connect(url, tokio_postgres::NoTls);
        let (client, connection) = tokio::time::timeout(Duration::from_secs(10), connect)
            .await
            .context("timed out connecting to PostgreSQL")??;
        let connection = tokio::spawn(connection);
        client.simple_query("SELECT 1").await?;
        drop(client);
        let _ = connection.await;
        Ok(())
    })
}

/// A URL without its password, for messages.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}
