//! Prometheus for the tests and the demo: Debian's package (which brings `promtool`), installed
//! with apt-get on first use, run from a configuration of ours under `target/` on a free port.
//!
//! It scrapes whatever a test or the demo starts: each writes a file-based service discovery
//! file (`targets/<name>.json`) naming its `--metrics-addr`, which Prometheus acts on within
//! five seconds (its discovery manager batches updates), and removes it when done. It loads the alert rules under `dashboards/`, so a test can
//! read `ALERTS` as well as the series.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::{process, say, workspace_root};

/// What `up` recorded about the Prometheus it runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Prometheus {
    pub(crate) pid: u32,
    pub(crate) port: u16,
    /// Where scrape targets are dropped as `*.json` files.
    pub(crate) targets: PathBuf,
}

impl Prometheus {
    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub(crate) fn is_running(&self) -> bool {
        process::is_alive(self.pid)
            && process::wait_until(Duration::from_secs(5), || ready(self.port))
    }

    pub(crate) fn stop(&self) {
        process::terminate(self.pid, Duration::from_secs(10));
    }

    /// Scrapes `addr` every second from now until the guard drops.
    pub(crate) fn scrape(&self, name: &str, addr: &str) -> Result<sunset_promql::FileTarget> {
        sunset_promql::FileTarget::publish(&self.targets, name, addr, ("demo", name))
            .with_context(|| format!("publishing a scrape target in {}", self.targets.display()))
    }

    pub(crate) fn client(&self) -> sunset_promql::Client {
        sunset_promql::Client::new(&self.url()).expect("our own URL is a Prometheus URL")
    }
}

/// The queries of a dashboard panel under `dashboards/`, by its title.
pub(crate) fn panel_queries(dashboard: &str, title: &str) -> Result<Vec<String>> {
    let path = workspace_root().join("dashboards").join(dashboard);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let panel = json["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|panel| panel["title"] == title)
        .with_context(|| format!("{} has no panel `{title}`", path.display()))?;
    Ok(panel["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|target| target["expr"].as_str().map(str::to_owned))
        .collect())
}

/// The server binary, installed on first use.
pub(crate) fn server() -> Result<PathBuf> {
    process::apt_program("prometheus", "prometheus", "the metrics tests and the demo")
}

/// `promtool`, from the same package.
pub(crate) fn promtool() -> Result<PathBuf> {
    server()?;
    process::apt_program("prometheus", "promtool", "checking the alert rules")
}

/// The alert rule files under `dashboards/` (not their tests).
pub(crate) fn rule_files() -> Result<Vec<PathBuf>> {
    let dir = workspace_root().join("dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.ends_with(".rules.yml"))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Writes the configuration and starts Prometheus, detached, on a free loopback port.
pub(crate) fn start(root: &Path) -> Result<Prometheus> {
    let binary = server()?;
    let dir = root.join("prometheus");
    let targets = dir.join("targets");
    std::fs::create_dir_all(&targets).with_context(|| format!("creating {}", targets.display()))?;
    let rules: Vec<String> = rule_files()?
        .iter()
        .map(|path| format!("  - {}\n", yaml_string(&path.display().to_string())))
        .collect();
    // Scraped and evaluated every second: a test waits seconds, not minutes, for its series.
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nrule_files:\n{}scrape_configs:\n  - job_name: sunset\n    file_sd_configs:\n      - files:\n          - {}\n        refresh_interval: 1s\n",
        rules.concat(),
        yaml_string(&targets.join("*.json").display().to_string()),
    );
    let config_path = dir.join("prometheus.yml");
    std::fs::write(&config_path, config)
        .with_context(|| format!("writing {}", config_path.display()))?;
    let port = process::free_port()?;
    let log_path = dir.join("prometheus.log");
    let log =
        File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let mut command = process::detached(&binary);
    let child = command
        .arg(format!("--config.file={}", config_path.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg("--storage.tsdb.retention.time=1d")
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("could not start {}", binary.display()))?;
    let prometheus = Prometheus {
        pid: child.id(),
        port,
        targets,
    };
    if !process::wait_until(Duration::from_secs(60), || ready(port)) {
        prometheus.stop();
        bail!(
            "Prometheus did not become ready on port {port} within 60s; its log is {}",
            log_path.display()
        );
    }
    Ok(prometheus)
}

/// `promtool check rules` and `promtool test rules` on what `dashboards/` ships.
pub(crate) fn check_rules() -> Result<bool> {
    let promtool = promtool()?;
    let rules = rule_files()?;
    if rules.is_empty() {
        bail!("no *.rules.yml under dashboards/");
    }
    say!("running promtool check rules");
    let checked = Command::new(&promtool)
        .args(["check", "rules"])
        .args(&rules)
        .status()
        .context("running promtool check rules")?
        .success();
    let tests: Vec<PathBuf> = rules
        .iter()
        .map(|rule| rule.with_extension("test.yml"))
        .collect();
    if let Some(missing) = tests.iter().find(|test| !test.is_file()) {
        bail!(
            "every rule file has its unit tests beside it: {} is missing",
            missing.display()
        );
    }
    say!("running promtool test rules");
    let tested = Command::new(&promtool)
        .args(["test", "rules"])
        .args(&tests)
        .current_dir(workspace_root().join("dashboards"))
        .status()
        .context("running promtool test rules")?
        .success();
    Ok(checked && tested)
}

/// A double-quoted YAML scalar (paths may hold anything).
fn yaml_string(value: &str) -> String {
    serde_json::to_string(value).expect("a string serializes")
}

/// Whether Prometheus says it is ready to serve queries.
fn ready(port: u16) -> bool {
    process::http_ok(port, "/-/ready")
}
