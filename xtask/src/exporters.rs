//! Three collectors of the system PostgreSQL cluster for the metric parity gate's tests and the
//! demo: Debian's `prometheus-postgres-exporter`, run three times. `legacy` and `new` are
//! configured alike (two honest collectors of one cluster: their series must match); `skewed`
//! counts updates as inserts in `pg_stat_user_tables_n_tup_ins` and does not report
//! `pg_stat_user_tables_n_live_tup` at all, so a mismatch and a missing series are tested on
//! real series too. Prometheus scrapes each through a discovery file that labels its series
//! `collector="NAME"`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::process;

/// The table statistics every collector reports (the exporter's own default set has none).
const USER_TABLES: &str = "pg_stat_user_tables:
  query: |
    SELECT schemaname, relname, n_tup_ins, n_tup_upd, n_tup_del, n_live_tup, n_dead_tup
    FROM pg_stat_user_tables
  metrics:
    - schemaname: { usage: LABEL, description: schema }
    - relname: { usage: LABEL, description: table }
    - n_tup_ins: { usage: COUNTER, description: rows inserted }
    - n_tup_upd: { usage: COUNTER, description: rows updated }
    - n_tup_del: { usage: COUNTER, description: rows deleted }
    - n_live_tup: { usage: GAUGE, description: live rows (estimate) }
    - n_dead_tup: { usage: GAUGE, description: dead rows (estimate) }
";

/// The skewed collector's: inserts and updates summed as inserts, live rows not reported.
const USER_TABLES_SKEWED: &str = "pg_stat_user_tables:
  query: |
    SELECT schemaname, relname, n_tup_ins + n_tup_upd AS n_tup_ins, n_tup_upd, n_tup_del, n_dead_tup
    FROM pg_stat_user_tables
  metrics:
    - schemaname: { usage: LABEL, description: schema }
    - relname: { usage: LABEL, description: table }
    - n_tup_ins: { usage: COUNTER, description: rows inserted (and updated, wrongly) }
    - n_tup_upd: { usage: COUNTER, description: rows updated }
    - n_tup_del: { usage: COUNTER, description: rows deleted }
    - n_dead_tup: { usage: GAUGE, description: dead rows (estimate) }
";

/// The collectors, by the `collector` label their series carry.
pub(crate) const COLLECTORS: [(&str, &str); 3] = [
    ("legacy", USER_TABLES),
    ("new", USER_TABLES),
    ("skewed", USER_TABLES_SKEWED),
];

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Collector {
    pub(crate) name: String,
    pub(crate) pid: u32,
    pub(crate) port: u16,
    /// Its Prometheus discovery file, removed when it stops.
    pub(crate) target: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Exporters {
    pub(crate) collectors: Vec<Collector>,
}

impl Exporters {
    pub(crate) fn is_running(&self) -> bool {
        self.collectors
            .iter()
            .all(|c| process::is_alive(c.pid) && process::http_ok(c.port, "/metrics"))
    }

    pub(crate) fn stop(&self) {
        for collector in &self.collectors {
            let _ = std::fs::remove_file(&collector.target);
            process::terminate(collector.pid, Duration::from_secs(5));
        }
    }
}

/// The exporter binary, installed with apt-get on first use.
fn binary() -> Result<PathBuf> {
    process::apt_program(
        "prometheus-postgres-exporter",
        "prometheus-postgres-exporter",
        "the metric parity gate's tests and the demo",
    )
}

/// lib/pq (the exporter's driver) requires TLS unless told otherwise; the test clusters
/// accept plain connections on loopback.
fn exporter_dsn(database_url: &str) -> String {
    if database_url.contains("sslmode=") {
        database_url.to_owned()
    } else if database_url.contains('?') {
        format!("{database_url}&sslmode=disable")
    } else {
        format!("{database_url}?sslmode=disable")
    }
}

/// Starts the three collectors of `database_url`, each published to Prometheus through a
/// discovery file in `targets`.
pub(crate) fn start(root: &Path, database_url: &str, targets: &Path) -> Result<Exporters> {
    let binary = binary()?;
    let dir = root.join("exporters");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut exporters = Exporters {
        collectors: Vec::new(),
    };
    for (name, queries) in COLLECTORS {
        match start_one(&binary, &dir, name, queries, database_url, targets) {
            Ok(collector) => exporters.collectors.push(collector),
            Err(error) => {
                exporters.stop();
                return Err(error);
            }
        }
    }
    Ok(exporters)
}

fn start_one(
    binary: &Path,
    dir: &Path,
    name: &str,
    queries: &str,
    database_url: &str,
    targets: &Path,
) -> Result<Collector> {
    let queries_path = dir.join(format!("{name}.queries.yaml"));
    std::fs::write(&queries_path, queries)
        .with_context(|| format!("writing {}", queries_path.display()))?;
    let port = process::free_port()?;
    let log_path = dir.join(format!("{name}.log"));
    let log =
        File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let child = process::detached(binary)
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg(format!("--extend.query-path={}", queries_path.display()))
        .arg("--disable-settings-metrics")
        .env("DATA_SOURCE_NAME", exporter_dsn(database_url))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("could not start {}", binary.display()))?;
    let target = targets.join(format!("collector-{name}.json"));
    let collector = Collector {
        name: name.to_owned(),
        pid: child.id(),
        port,
        target: target.clone(),
    };
    if !process::wait_until(Duration::from_secs(30), || {
        process::http_ok(port, "/metrics")
    }) {
        process::terminate(collector.pid, Duration::from_secs(5));
        bail!(
            "the `{name}` collector did not answer on port {port} within 30s; its log is {}",
            log_path.display()
        );
    }
    let body = serde_json::json!([{
        "targets": [format!("127.0.0.1:{port}")],
        "labels": { "collector": name },
    }]);
    let partial = targets.join(format!(".collector-{name}.partial"));
    std::fs::write(&partial, body.to_string())
        .and_then(|()| std::fs::rename(&partial, &target))
        .with_context(|| format!("publishing {}", target.display()))?;
    Ok(collector)
}
