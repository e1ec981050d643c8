//! Stage 7: the whole cutover of `sequences/legacy-cutover/decommission.yaml`, end to end with
//! short holds: the services' two honest PostgreSQL collectors compared on a quiet demo database,
//! a real haproxy in front of two local HTTP servers under a steady loopback load, its traffic
//! moved to the new server 10/25/50/100 % while the gates watch haproxy's own metrics, the legacy
//! server's traffic proven gone, then the legacy fleet retired in the emulator.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use super::teardown::Fleet;
use super::*;
use crate::{process, say, workspace_root};

const QUIET_DATABASE: &str = "sunset_demo_cutover";
/// The parity window: short, so the demo waits seconds for settled samples.
const PARITY_RANGE_SECONDS: u64 = 10;

/// A local HTTP server standing for one backend: answers 200 and counts.
fn serve(stop: Arc<AtomicBool>) -> Result<(u16, Arc<AtomicUsize>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let port = listener.local_addr()?.port();
    let served = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&served);
    std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    let _ = stream.set_nonblocking(false);
                    let mut request = [0u8; 2048];
                    let _ = stream.read(&mut request);
                    count.fetch_add(1, Ordering::SeqCst);
                    let _ = stream.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                    );
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    Ok((port, served))
}

/// haproxy, stopped when dropped.
struct Haproxy(Child);

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !check() {
        if Instant::now() > deadline {
            bail!("{what} did not happen within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// A quiet database and table whose statistics both collectors report.
fn quiet_statistics(admin_url: &str) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let admin = connect(admin_url).await?;
        // Each on its own: DROP and CREATE DATABASE can not share a batch's transaction.
        admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {QUIET_DATABASE} WITH (FORCE)"
            ))
            .await?;
        admin
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS {QUIET_DATABASE}_jobs;
                 CREATE TABLE {QUIET_DATABASE}_jobs (id int PRIMARY KEY, state text)
                     WITH (autovacuum_enabled = off);
                 INSERT INTO {QUIET_DATABASE}_jobs SELECT g, 'done' FROM generate_series(1, 100) g;
                 UPDATE {QUIET_DATABASE}_jobs SET state = 'archived' WHERE id <= 10;"
            ))
            .await
            .context("writing the demo's quiet table")?;
        admin
            .batch_execute(&format!("CREATE DATABASE {QUIET_DATABASE}"))
            .await?;
        Ok::<_, anyhow::Error>(())
    })
}

pub(super) fn cutover_stage(admin_url: &str) -> Result<()> {
    let prometheus = services::prometheus()?;
    let client = prometheus.client();
    let env = services::current_env()?;
    let haproxy_binary = env
        .iter()
        .find(|(k, _)| *k == "SUNSET_HAPROXY")
        .map(|(_, v)| v.clone())
        .context("haproxy is not installed: `cargo xtask services up` installs it")?;
    let collectors = client
        .query(r#"pg_up{collector=~"legacy|new"} == 1"#)
        .unwrap_or_default();
    ensure!(
        collectors.len() == 2,
        "the legacy and new PostgreSQL collectors are not reporting: `cargo xtask services up` starts them"
    );
    quiet_statistics(admin_url)?;

    let stop = Arc::new(AtomicBool::new(false));
    let (legacy_port, legacy_served) = serve(Arc::clone(&stop))?;
    let (new_port, new_served) = serve(Arc::clone(&stop))?;
    let dir = workspace_root().join("target/sunset-demo/haproxy");
    std::fs::create_dir_all(&dir)?;
    let socket = dir.join("admin.sock");
    let _ = std::fs::remove_file(&socket);
    let (front, metrics) = (process::free_port()?, process::free_port()?);
    let config = dir.join("haproxy.cfg");
    std::fs::write(
        &config,
        format!(
            "global
    stats socket {socket} mode 600 level admin
defaults
    mode http
    timeout connect 2s
    timeout client 5s
    timeout server 5s
frontend app
    bind 127.0.0.1:{front}
    default_backend metrics
frontend exporter
    bind 127.0.0.1:{metrics}
    http-request use-service prometheus-exporter if {{ path /metrics }}
backend metrics
    balance roundrobin
    server legacy 127.0.0.1:{legacy_port} weight 100
    server new 127.0.0.1:{new_port} weight 0
",
            socket = socket.display()
        ),
    )?;
    let _haproxy = Haproxy(
        Command::new(&haproxy_binary)
            .args(["-db", "-f"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {haproxy_binary}"))?,
    );
    wait_for("haproxy listening", Duration::from_secs(10), || {
        socket.exists() && TcpStream::connect(("127.0.0.1", front)).is_ok()
    })?;
    let _scraped = prometheus.scrape("demo-haproxy", &format!("127.0.0.1:{metrics}"))?;
    // The application: a request through haproxy every 10 ms until the stage ends.
    let load = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", front)) {
                    let _ = stream
                        .write_all(b"GET / HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n");
                    let mut answer = Vec::new();
                    let _ = stream.read_to_end(&mut answer);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    say!(
        "haproxy on 127.0.0.1:{front} (runtime API {}), backend `metrics`: legacy 100, new 0, under a steady load",
        socket.display()
    );
    wait_for(
        "haproxy's metrics in Prometheus",
        Duration::from_secs(30),
        || {
            client
            .query(r#"haproxy_server_http_responses_total{demo="demo-haproxy", server="legacy"} > 0"#)
            .is_ok_and(|s| !s.is_empty())
        },
    )?;
    say!(
        "waiting {PARITY_RANGE_SECONDS} s so the parity window holds only settled samples of the quiet database"
    );
    std::thread::sleep(Duration::from_secs(PARITY_RANGE_SECONDS + 2));

    let url = prometheus.url();
    let settings: Vec<(&str, String)> = vec![
        ("LEGACY_PROMETHEUS", url.clone()),
        ("NEW_PROMETHEUS", url),
        // The quiet database, and the table statistics (no database label) of the quiet table.
        ("PARITY_DATABASES", format!("{QUIET_DATABASE}|")),
        ("PARITY_RANGE", format!("{PARITY_RANGE_SECONDS}s")),
        ("PARITY_STEP", "1s".to_owned()),
        ("PARITY_INTERVAL", "2s".to_owned()),
        ("PARITY_TIMEOUT", "90s".to_owned()),
        ("HAPROXY_API", socket.display().to_string()),
        ("SHIFT_HOLD", "6s".to_owned()),
        ("GATE_WINDOW", "3s".to_owned()),
        ("GATE_INTERVAL", "1s".to_owned()),
        ("RATE_WINDOW", "3s".to_owned()),
        // About 90 requests a second: the split is noisy over a few seconds.
        ("SPLIT_POINTS", "25".to_owned()),
        ("QUIET_FOR", "4s".to_owned()),
        ("QUIET_TIMEOUT", "60s".to_owned()),
    ];
    let fleet = Fleet::build()?;
    let outcome = fleet.plan_and_apply(
        "sequences/legacy-cutover/decommission.yaml",
        "cutover-state",
        &settings,
    );
    stop.store(true, Ordering::SeqCst);
    let _ = load.join();
    outcome?;
    say!(
        "requests served: legacy {}, new {}",
        legacy_served.load(Ordering::SeqCst),
        new_served.load(Ordering::SeqCst)
    );
    Ok(())
}
