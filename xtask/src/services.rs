//! `cargo xtask services up | down | env | status`: real services for tests and the demo.
//!
//! Two PostgreSQL servers (the system's and 18 from PyPI), the AWS emulator and Prometheus.
//! State lives in `target/sunset-services/state.json` so that `up` is idempotent across
//! invocations, `down` stops only what `up` started, and tests run with plain `cargo test` can
//! find the services through `target/sunset-services/env` (see `sunset-test-support`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::exporters::Exporters;
use crate::moto::{self, Emulator};
use crate::postgres::{self, Binaries, Cluster};
use crate::prometheus::{self, Prometheus};
use crate::{say, services_dir};

/// The region every client uses against the emulator.
const REGION: &str = "us-east-1";

/// The two PostgreSQL servers the tests run on: catalog queries must hold on 15 and on 18.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Server {
    /// The system's server (15 on Debian 12), or `DATABASE_URL`.
    System,
    /// PostgreSQL 18 from PyPI, or `SUNSET_PG18_DATABASE_URL`.
    Pg18,
}

impl Server {
    const ALL: [Server; 2] = [Server::System, Server::Pg18];

    fn label(self) -> &'static str {
        match self {
            Server::System => "PostgreSQL",
            Server::Pg18 => "PostgreSQL 18",
        }
    }

    /// The variables a client of this server reads: URL, CA file, client programs' directory.
    pub(crate) fn vars(self) -> [&'static str; 3] {
        match self {
            Server::System => ["DATABASE_URL", "SUNSET_PG_CA_FILE", "SUNSET_PG_BIN_DIR"],
            Server::Pg18 => [
                "SUNSET_PG18_DATABASE_URL",
                "SUNSET_PG18_CA_FILE",
                "SUNSET_PG18_BIN_DIR",
            ],
        }
    }

    fn dir(self) -> &'static str {
        match self {
            Server::System => "postgres",
            Server::Pg18 => "postgres18",
        }
    }

    fn binaries(self) -> Binaries {
        match self {
            Server::System => Binaries::System,
            Server::Pg18 => Binaries::Embedded,
        }
    }
}

/// One PostgreSQL server: a cluster `up` started, or an external one it only uses.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Postgres {
    /// The cluster `up` started; `None` when an external URL is used instead.
    cluster: Option<Cluster>,
    /// An external server given through the environment; never started or stopped by us.
    external_url: Option<String>,
}

impl Postgres {
    fn url(&self) -> Option<String> {
        self.external_url
            .clone()
            .or_else(|| self.cluster.as_ref().map(Cluster::url))
    }
}

/// Everything `up` started or found, persisted between xtask invocations.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    postgres: Postgres,
    #[serde(default)]
    postgres18: Postgres,
    moto: Option<Emulator>,
    #[serde(default)]
    prometheus: Option<Prometheus>,
    #[serde(default)]
    exporters: Option<Exporters>,
    /// haproxy, which the traffic shift tests and the demo run on their own configurations.
    #[serde(default)]
    haproxy: Option<PathBuf>,
}

impl State {
    fn server(&mut self, server: Server) -> &mut Postgres {
        match server {
            Server::System => &mut self.postgres,
            Server::Pg18 => &mut self.postgres18,
        }
    }

    fn server_ref(&self, server: Server) -> &Postgres {
        match server {
            Server::System => &self.postgres,
            Server::Pg18 => &self.postgres18,
        }
    }

    fn is_empty(&self) -> bool {
        self.postgres.cluster.is_none()
            && self.postgres18.cluster.is_none()
            && self.moto.is_none()
            && self.prometheus.is_none()
            && self.exporters.is_none()
    }
}

/// What one `up` call started itself, so `cargo xtask test` stops only that.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Started {
    postgres: [bool; 2],
    moto: bool,
    prometheus: bool,
    exporters: bool,
}

/// A server `up` starts once and reuses while it answers: the emulator and Prometheus.
trait Daemon: Sized {
    const LABEL: &'static str;
    fn pid(&self) -> u32;
    fn port(&self) -> u16;
    fn is_running(&self) -> bool;
    fn stop(&self);
    fn start(root: &std::path::Path) -> Result<Self>;
}

impl Daemon for Emulator {
    const LABEL: &'static str = "AWS emulator";
    fn pid(&self) -> u32 {
        self.pid
    }
    fn port(&self) -> u16 {
        self.port
    }
    fn is_running(&self) -> bool {
        Emulator::is_running(self)
    }
    fn stop(&self) {
        Emulator::stop(self);
    }
    fn start(root: &std::path::Path) -> Result<Self> {
        let emulator = moto::start(root)?;
        say!("AWS emulator: {}", moto::MOTO_REQUIREMENT);
        Ok(emulator)
    }
}

impl Daemon for Prometheus {
    const LABEL: &'static str = "Prometheus";
    fn pid(&self) -> u32 {
        self.pid
    }
    fn port(&self) -> u16 {
        self.port
    }
    fn is_running(&self) -> bool {
        Prometheus::is_running(self)
    }
    fn stop(&self) {
        Prometheus::stop(self);
    }
    fn start(root: &std::path::Path) -> Result<Self> {
        prometheus::start(root)
    }
}

/// Reuses the daemon in `slot` if it answers, else (stopping one that is alive but mute)
/// starts a new one. Whether this call started it.
fn daemon_up<D: Daemon>(slot: &mut Option<D>, root: &std::path::Path) -> Result<bool> {
    let recorded = slot.take();
    let healthy = recorded.as_ref().is_some_and(D::is_running);
    if let Some(stale) = recorded.as_ref().filter(|_| !healthy)
        && crate::process::is_alive(stale.pid())
    {
        // Alive but not answering: stop it rather than orphan it by starting another.
        say!(
            "{}: pid {} does not answer; restarting it",
            D::LABEL,
            stale.pid()
        );
        stale.stop();
    }
    if let Some(daemon) = recorded.filter(|_| healthy) {
        say!("{}: already running on port {}", D::LABEL, daemon.port());
        *slot = Some(daemon);
        return Ok(false);
    }
    let daemon = D::start(root)?;
    say!("{}: started on port {}", D::LABEL, daemon.port());
    *slot = Some(daemon);
    Ok(true)
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
    for (index, server) in Server::ALL.into_iter().enumerate() {
        match postgres_up(&mut state, server, &root) {
            Ok(new) => started.postgres[index] = new,
            Err(error) => {
                let _ = stop(started);
                return Err(error);
            }
        }
        // Saved after each service so a failing start leaves a state `down` can use.
        save_state_if_possible(&state);
    }

    let daemons = daemon_up(&mut state.moto, &root).and_then(|new| {
        started.moto = new;
        save_state_if_possible(&state);
        daemon_up(&mut state.prometheus, &root).map(|new| started.prometheus = new)
    });
    if let Err(error) = daemons {
        // Leave nothing behind that this call started.
        save_state_if_possible(&state);
        let _ = stop(started);
        return Err(error);
    }
    // Only the metric parity tests need them: without them the rest still runs, and those
    // tests say what is missing.
    match crate::process::apt_program("haproxy", "haproxy", "the traffic shift tests and the demo")
    {
        Ok(path) => state.haproxy = Some(path),
        Err(error) => say!(
            "haproxy: not installed ({error:#}); the traffic shift tests will fail until it is"
        ),
    }
    match exporters_up(&mut state, &root) {
        Ok(new) => started.exporters = new,
        Err(error) => say!(
            "PostgreSQL collectors: not started ({error:#}); the metric parity tests will fail until `cargo xtask services up` can start them"
        ),
    }
    save_state(&state)?;
    Ok(started)
}

/// The three collectors of the system cluster, reused while they all answer.
fn exporters_up(state: &mut State, root: &std::path::Path) -> Result<bool> {
    if let Some(exporters) = state.exporters.take() {
        if exporters.is_running() {
            say!("PostgreSQL collectors: already running");
            state.exporters = Some(exporters);
            return Ok(false);
        }
        exporters.stop();
    }
    let url = state
        .postgres
        .url()
        .context("the system PostgreSQL is not up")?;
    let targets = state
        .prometheus
        .as_ref()
        .map(|p| p.targets.clone())
        .context("Prometheus is not up")?;
    let exporters = crate::exporters::start(root, &url, &targets)?;
    say!(
        "PostgreSQL collectors: {} started",
        exporters
            .collectors
            .iter()
            .map(|c| format!("{} on port {}", c.name, c.port))
            .collect::<Vec<_>>()
            .join(", ")
    );
    state.exporters = Some(exporters);
    Ok(true)
}

/// Brings one server up: the external one its URL variable names, the running cluster, or a
/// new one. Whether this call started it.
fn postgres_up(state: &mut State, server: Server, root: &std::path::Path) -> Result<bool> {
    let label = server.label();
    let [url_var, ..] = server.vars();
    let slot = state.server(server);
    if let Some(url) = std::env::var(url_var).ok().filter(|url| !url.is_empty()) {
        check_postgres(&url)
            .with_context(|| format!("{url_var} is set, but its server is not reachable"))?;
        say!("{label}: using {url_var} ({})", redact(&url));
        slot.external_url = Some(url);
        return Ok(false);
    }
    slot.external_url = None;
    if let Some(cluster) = slot.cluster.take().filter(Cluster::is_running) {
        say!("{label}: already running on port {}", cluster.port);
        slot.cluster = Some(cluster);
        return Ok(false);
    }
    let cluster = postgres::start(&root.join(server.dir()), server.binaries())?;
    if let Err(error) = check_postgres(&cluster.url()) {
        let _ = cluster.stop();
        return Err(error.context(format!("the {label} cluster started but does not answer")));
    }
    say!(
        "{label}: started on port {} ({})",
        cluster.port,
        cluster.data_dir.display()
    );
    slot.cluster = Some(cluster);
    Ok(true)
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
        postgres: [true; 2],
        moto: true,
        prometheus: true,
        exporters: true,
    })
}

/// Stops the services in `which` that `up` started; an external server is never touched.
pub(crate) fn stop(which: Started) -> Result<()> {
    let mut state = load_state();
    for (index, server) in Server::ALL.into_iter().enumerate() {
        if which.postgres[index]
            && let Some(cluster) = state.server(server).cluster.take()
            && cluster.is_running()
        {
            cluster
                .stop()
                .with_context(|| format!("stopping {}", server.label()))?;
            say!("{}: stopped", server.label());
        }
    }
    if which.moto
        && let Some(emulator) = state.moto.take()
    {
        emulator.stop();
        say!("AWS emulator: stopped");
    }
    if which.exporters
        && let Some(exporters) = state.exporters.take()
    {
        exporters.stop();
        say!("PostgreSQL collectors: stopped");
    }
    if which.prometheus
        && let Some(prometheus) = state.prometheus.take()
    {
        prometheus.stop();
        say!("Prometheus: stopped");
    }
    if state.is_empty() {
        let _ = std::fs::remove_file(state_path());
        let _ = std::fs::remove_file(env_file_path());
        Ok(())
    } else {
        save_state(&state)
    }
}

/// The environment a client of the services needs.
fn env_vars(state: &State) -> Result<Vec<(&'static str, String)>> {
    let mut vars = Vec::new();
    for server in Server::ALL {
        let postgres = state.server_ref(server);
        let Some(url) = postgres.url() else {
            bail!(
                "{} is not up: run `cargo xtask services up` first",
                server.label()
            )
        };
        let [url_var, ca_var, bin_var] = server.vars();
        // The CA of our cluster's TLS certificate, and the client programs (pg_dump) matching
        // the server; both empty for an external server (pg_dump is then taken from PATH).
        let (ca_file, bin_dir) = match (&postgres.external_url, &postgres.cluster) {
            (None, Some(cluster)) => (
                if cluster.has_tls() {
                    cluster.ca_file().display().to_string()
                } else {
                    String::new()
                },
                cluster.bin_dir.display().to_string(),
            ),
            _ => (String::new(), String::new()),
        };
        vars.extend([(url_var, url), (ca_var, ca_file), (bin_var, bin_dir)]);
    }
    let Some(emulator) = &state.moto else {
        bail!("the AWS emulator is not up: run `cargo xtask services up` first")
    };
    vars.extend([
        ("AWS_ENDPOINT_URL", emulator.url()),
        ("AWS_REGION", REGION.to_owned()),
        ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
        // The emulator is on loopback: a proxy configured for the internet must not intercept it.
        ("NO_PROXY", "127.0.0.1,localhost".to_owned()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
    ]);
    let Some(prometheus) = &state.prometheus else {
        bail!("Prometheus is not up: run `cargo xtask services up` first")
    };
    if let Some(haproxy) = &state.haproxy {
        vars.push(("SUNSET_HAPROXY", haproxy.display().to_string()));
    }
    vars.extend([
        ("SUNSET_PROMETHEUS_URL", prometheus.url()),
        (
            "SUNSET_PROMETHEUS_TARGETS",
            prometheus.targets.display().to_string(),
        ),
    ]);
    Ok(vars)
}

/// The environment for child processes (`cargo test`, the demo's binaries).
pub(crate) fn current_env() -> Result<Vec<(&'static str, String)>> {
    env_vars(&load_state())
}

/// The same environment with `server` as the one `DATABASE_URL` (and its CA file and client
/// programs) point at: how the tests run a second time on the other major.
pub(crate) fn env_for(server: Server) -> Result<Vec<(&'static str, String)>> {
    let mut env = current_env()?;
    let values: Vec<String> = server
        .vars()
        .iter()
        .map(|var| lookup(&env, var))
        .collect::<Result<_>>()?;
    let no_tls = values[1].is_empty();
    for (var, value) in Server::System.vars().into_iter().zip(values) {
        if let Some(entry) = env.iter_mut().find(|(key, _)| *key == var) {
            entry.1 = value;
        }
    }
    if no_tls {
        env.push((
            "SUNSET_PG_NO_TLS",
            format!("{} was built without OpenSSL", server.label()),
        ));
    }
    Ok(env)
}

fn lookup(env: &[(&'static str, String)], var: &str) -> Result<String> {
    env.iter()
        .find(|(key, _)| *key == var)
        .map(|(_, value)| value.clone())
        .with_context(|| format!("the services have no {var}"))
}

/// Turns the emulator's request recorder off (and empties it), if the emulator runs.
pub(crate) fn stop_emulator_recording() -> Result<()> {
    match load_state().moto {
        Some(emulator) => moto::stop_recording(emulator.port),
        None => Ok(()),
    }
}

/// The running AWS emulator's endpoint URL.
pub(crate) fn aws_endpoint() -> Result<String> {
    lookup(&current_env()?, "AWS_ENDPOINT_URL").context("the AWS emulator is not running")
}

/// The running Prometheus.
pub(crate) fn prometheus() -> Result<Prometheus> {
    load_state()
        .prometheus
        .filter(Prometheus::is_running)
        .context("Prometheus is not running: `cargo xtask services up`")
}

/// The `DATABASE_URL` the services provide (ours or the external one).
pub(crate) fn database_url() -> Result<String> {
    lookup(&current_env()?, "DATABASE_URL")
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
    for server in Server::ALL {
        let label = server.label();
        let postgres = state.server_ref(server);
        match (&postgres.external_url, &postgres.cluster) {
            (Some(url), _) => {
                let reachable = if check_postgres(url).is_ok() {
                    "reachable"
                } else {
                    "NOT reachable"
                };
                lines.push(format!(
                    "{label:<14} external  {}  {reachable}",
                    redact(url)
                ));
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
                    "{label:<14} {running}  {}  pid {pid}  data {}",
                    cluster.url(),
                    cluster.data_dir.display()
                ));
            }
            (None, None) => lines.push(format!("{label:<14} not started")),
        }
    }
    match &state.moto {
        Some(emulator) => {
            let running = if emulator.is_running() {
                "running"
            } else {
                "NOT running"
            };
            lines.push(format!(
                "{:<14} {running}  {}  pid {}  ({})",
                "AWS emulator",
                emulator.url(),
                emulator.pid,
                moto::MOTO_REQUIREMENT
            ));
        }
        None => lines.push(format!("{:<14} not started", "AWS emulator")),
    }
    match &state.prometheus {
        Some(prometheus) => {
            let running = if prometheus.is_running() {
                "running"
            } else {
                "NOT running"
            };
            lines.push(format!(
                "{:<14} {running}  {}  pid {}  targets {}",
                "Prometheus",
                prometheus.url(),
                prometheus.pid,
                prometheus.targets.display()
            ));
        }
        None => lines.push(format!("{:<14} not started", "Prometheus")),
    }
    match &state.exporters {
        Some(exporters) => {
            for collector in &exporters.collectors {
                let running = if crate::process::is_alive(collector.pid) {
                    "running"
                } else {
                    "NOT running"
                };
                lines.push(format!(
                    "{:<14} {running}  http://127.0.0.1:{}/metrics  pid {}  collector {}",
                    "pg collector", collector.port, collector.pid, collector.name
                ));
            }
        }
        None => lines.push(format!("{:<14} not started", "pg collectors")),
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
