//! The cutover gates against the real thing: three `prometheus-postgres-exporter` collectors of
//! the test cluster (`legacy` and `new` alike, `skewed` miscounting inserts and dropping live
//! rows) scraped by the services' Prometheus. Verdicts are judged against PostgreSQL's own
//! statistics and Prometheus's answers to the test's own queries.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sunset_test_support::harness::{Db, runtime, text};
use sunset_test_support::prometheus::Prometheus;

use crate::support::World;

/// The window each comparison reads: short, so a test waits seconds for settled samples.
const RANGE_SECONDS: u64 = 8;

/// The services' Prometheus, with the three collectors reporting; panics with how to get them.
fn collectors() -> (Prometheus, String) {
    let prometheus = Prometheus::from_env();
    let url = sunset_test_support::service_var("SUNSET_PROMETHEUS_URL")
        .unwrap_or_else(|message| panic!("{message}"));
    let up = prometheus
        .query(r#"pg_up{collector=~"legacy|new|skewed"} == 1"#)
        .unwrap_or_default();
    assert_eq!(
        up.len(),
        3,
        "the three PostgreSQL collectors are not all reporting to Prometheus ({up:?}): \
         `cargo xtask services up` starts them (Debian package prometheus-postgres-exporter, installed with apt-get)"
    );
    (prometheus, url)
}

/// The database the collectors watch (`DATABASE_URL`'s): their table statistics are its.
fn collectors_database() -> Db {
    let runtime = runtime();
    let url = sunset_test_support::database_url();
    let client = runtime.block_on(sunset_test_support::connect(&url));
    Db {
        runtime,
        client,
        url,
    }
}

fn gate_report(world: &World, verdict: &str) -> serde_json::Value {
    let dir = std::fs::read_dir(world.state.path().join("teardown"))
        .expect("the runs' state")
        .filter_map(Result::ok)
        .map(|run| run.path().join("gates"))
        .filter(|gates| gates.is_dir())
        .collect::<Vec<PathBuf>>();
    for gates in dir {
        for entry in std::fs::read_dir(&gates).unwrap().filter_map(Result::ok) {
            if entry.path().extension().is_some_and(|e| e == "json") {
                let report: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(entry.path()).unwrap()).unwrap();
                if report["verdict"] == verdict {
                    assert!(
                        entry.path().with_extension("md").is_file(),
                        "the Markdown report beside {}",
                        entry.path().display()
                    );
                    return report;
                }
            }
        }
    }
    panic!(
        "no `{verdict}` gate report under {}",
        world.state.path().display()
    )
}

fn parity_sequence(world: &World, name: &str, prometheus: &str, new: &str, body: &str) -> String {
    let table = format!("parity_{}", world.prefix.replace('-', "_"));
    let side = |collector: &str| {
        format!(
            r#"{{ prometheus: "{prometheus}", match: '{{collector="{collector}", relname="{table}"}}' }}"#
        )
    };
    world
        .sequence(
            name,
            &format!(
                r#"allowed_accounts: ["{{account}}"]
region: {{region}}
decommission_sequence:
  parity:
    - action: gate
      validation:
        metrics_match:
          legacy: {legacy}
          new: {new}
          range: {RANGE_SECONDS}s
          step: 1s
{body}
          ignore_labels: [instance, job, collector]
        timeout: 4s
        interval: 1s
"#,
                legacy = side("legacy"),
                new = side(new),
            ),
        )
        .display()
        .to_string()
}

#[test]
fn metrics_match_passes_on_honest_collectors_fails_on_a_skewed_one_and_never_passes_a_missing_series()
 {
    let (prometheus, url) = collectors();
    let world = World::new("td-parity");
    let table = format!("parity_{}", world.prefix.replace('-', "_"));
    let db = collectors_database();
    db.exec(&format!(
        "CREATE TABLE {table} (id int PRIMARY KEY, v int) WITH (autovacuum_enabled = off);
         INSERT INTO {table} SELECT g, 0 FROM generate_series(1, 10) g;
         UPDATE {table} SET v = 1 WHERE id <= 3;"
    ));
    // The oracle: PostgreSQL's own counters, once the backend has flushed them.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (inserted, updated) = loop {
        let inserted = db.int(&format!(
            "SELECT n_tup_ins FROM pg_stat_user_tables WHERE relname = '{table}'"
        ));
        if inserted == 10 || Instant::now() > deadline {
            break (
                inserted,
                db.int(&format!(
                    "SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = '{table}'"
                )),
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!((inserted, updated), (10, 3), "PostgreSQL's own statistics");
    for (collector, expected) in [("legacy", 10), ("new", 10), ("skewed", 13)] {
        let query = format!(
            r#"pg_stat_user_tables_n_tup_ins{{collector="{collector}", relname="{table}"}} == {expected}"#
        );
        prometheus.wait_for(&query, Duration::from_secs(30));
    }
    // Every sample of the window compared must be one taken after the writes.
    std::thread::sleep(Duration::from_secs(RANGE_SECONDS + 2));

    let honest = parity_sequence(
        &world,
        "honest",
        &url,
        "new",
        r#"          exact: ["pg_stat_user_tables_n_tup_*", pg_stat_user_tables_n_live_tup]
          tolerance: { pg_stat_user_tables_n_dead_tup: 0.5 }
          derived: { dead_per_update: "n_dead_tup / n_tup_upd" }"#,
    );
    let plan = world.run(&["plan", &honest]);
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan));
    assert!(
        String::from_utf8_lossy(&plan.stdout).contains(&format!(
            r#"every series of 3 metric patterns and 1 derived metrics matches between {url} `{{collector="legacy", relname="{table}"}}`"#
        )),
        "{}",
        text(&plan)
    );
    let out = world.run(&["apply", &honest, "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("metrics match: 6 metrics, 6 series"),
        "{}",
        text(&out)
    );
    let report = gate_report(&world, "pass");
    let metrics: Vec<(&str, u64)> = report["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["metric"].as_str().unwrap(), m["series"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        metrics,
        [
            ("dead_per_update", 1),
            ("pg_stat_user_tables_n_dead_tup", 1),
            ("pg_stat_user_tables_n_live_tup", 1),
            ("pg_stat_user_tables_n_tup_del", 1),
            ("pg_stat_user_tables_n_tup_ins", 1),
            ("pg_stat_user_tables_n_tup_upd", 1),
        ]
    );

    // The skewed collector counts the 3 updates as inserts too: named, with the worst series.
    let skewed = parity_sequence(
        &world,
        "skewed",
        &url,
        "skewed",
        r#"          exact: [pg_stat_user_tables_n_tup_ins, pg_stat_user_tables_n_tup_upd]"#,
    );
    let out = world.run(&["apply", &skewed, "--yes"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("`pg_stat_user_tables_n_tup_ins` differs by")
            && said.contains(&format!(r#"relname="{table}""#))
            && said.contains(&format!("legacy {inserted}, new {}", inserted + updated))
            && said.contains("1 of 2 metrics fail"),
        "{said}"
    );
    let report = gate_report(&world, "fail");
    let failing: Vec<&serde_json::Value> = report["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["verdict"] == "fail")
        .collect();
    assert_eq!(failing.len(), 1, "{report}");
    assert_eq!(failing[0]["worst"]["legacy"], 10.0);
    assert_eq!(failing[0]["worst"]["new"], 13.0);

    // It does not report live rows at all: inconclusive, and never a pass.
    let missing = parity_sequence(
        &world,
        "missing",
        &url,
        "skewed",
        r#"          exact: [pg_stat_user_tables_n_live_tup]"#,
    );
    let out = world.run(&["apply", &missing, "--yes"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("metrics inconclusive (missing data never passes): `pg_stat_user_tables_n_live_tup`: series on one side only: 1 legacy, 0 new"),
        "{}",
        text(&out)
    );

    let status = world.run(&["status", &skewed]);
    assert_eq!(status.status.code(), Some(0), "{}", text(&status));
    assert!(
        String::from_utf8_lossy(&status.stdout)
            .contains("fail (2 metrics); differ: pg_stat_user_tables_n_tup_ins; report: "),
        "{}",
        text(&status)
    );
    db.exec(&format!("DROP TABLE {table}"));
}

/// A sequence of one `gate` step, `quiet`, with `no_traffic: SETTINGS`.
fn quiet_gate(world: &World, name: &str, settings: &str, timeout: &str) -> String {
    world
        .sequence(
            name,
            &format!(
                r#"allowed_accounts: ["{{account}}"]
region: {{region}}
decommission_sequence:
  quiet:
    - action: gate
      validation:
        no_traffic: {settings}
        timeout: {timeout}
        interval: 1s
"#
            ),
        )
        .display()
        .to_string()
}

#[test]
fn no_traffic_holds_only_once_the_legacy_database_is_quiet() {
    let (prometheus, url) = collectors();
    let world = World::new("td-traffic");
    let legacy = Db::new("td-traffic");
    let datname = legacy.text("SELECT current_database()").unwrap();
    // The legacy application: a transaction every 20 ms until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (stop, url) = (Arc::clone(&stop), legacy.url.clone());
        std::thread::spawn(move || {
            let runtime = runtime();
            let client = runtime.block_on(sunset_test_support::connect(&url));
            while !stop.load(Ordering::SeqCst) {
                runtime.block_on(client.batch_execute("SELECT 1")).unwrap();
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let rate = format!(
        r#"sum(rate(pg_stat_database_xact_commit{{collector="legacy", datname="{datname}"}}[4s]))"#
    );
    prometheus.wait_for(&format!("{rate} > 5"), Duration::from_secs(30));
    let sequence = |name: &str, timeout: &str| {
        quiet_gate(
            &world,
            name,
            &format!(r#"{{ prometheus: "{url}", query: '{rate}', below: 0.5, for: 4s }}"#),
            timeout,
        )
    };
    let busy = sequence("busy", "3s");
    let out = world.run(&["apply", &busy, "--yes"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("(not below 0.5) within the last 4s"),
        "{}",
        text(&out)
    );

    stop.store(true, Ordering::SeqCst);
    traffic.join().unwrap();
    let stopped = Instant::now();
    let quiet = sequence("quiet", "60s");
    let out = world.run(&["apply", &quiet, "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("stayed below 0.5 for 4s"),
        "{}",
        text(&out)
    );
    assert!(
        stopped.elapsed() >= Duration::from_secs(4),
        "held after {:?}: before the traffic had been gone for the whole window",
        stopped.elapsed()
    );
    // The oracle: Prometheus itself saw no traffic over the last window.
    let recent = prometheus
        .query(&format!("max_over_time(({rate})[4s:1s])"))
        .unwrap();
    assert!(recent.iter().all(|s| s.value < 0.5), "{recent:?}");
}

/// `no_traffic` on a load balancer through CloudWatch (the emulator's): a busy minute in the
/// window keeps the gate shut, a quiet window (a busy minute before it does not count) opens
/// it, and a name that names no load balancer is an error, never a quiet one.
#[test]
fn no_traffic_on_a_load_balancer_reads_its_cloudwatch_requests() {
    use aws_sdk_cloudwatch::primitives::DateTime;
    use aws_sdk_cloudwatch::types::{Dimension, MetricDatum};
    let world = World::new("td-cloudwatch");
    let (busy, _) = world.load_balancer("busy");
    let (quiet, _) = world.load_balancer("quiet");
    let cloudwatch = world.runtime.block_on(async {
        let config = sunset_test_support::aws_config().await;
        let config = config
            .to_builder()
            .region(aws_config::Region::new(world.region.clone()))
            .build();
        aws_sdk_cloudwatch::Client::new(&config)
    });
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let requests = |arn: &str, ago: u64, sum: f64| {
        let dimension = arn.split_once(":loadbalancer/").unwrap().1.to_owned();
        world.runtime.block_on(async {
            cloudwatch
                .put_metric_data()
                .namespace("AWS/ApplicationELB")
                .metric_data(
                    MetricDatum::builder()
                        .metric_name("RequestCount")
                        .dimensions(
                            Dimension::builder()
                                .name("LoadBalancer")
                                .value(dimension)
                                .build(),
                        )
                        .timestamp(DateTime::from_secs(i64::try_from(now - ago).unwrap()))
                        .value(sum)
                        .build(),
                )
                .send()
                .await
                .unwrap();
        });
    };
    requests(&busy, 20, 120.0);
    requests(&quiet, 600, 500.0);
    requests(&quiet, 30, 0.0);
    let gate = |name: &str, balancer: &str| {
        quiet_gate(
            &world,
            name,
            &format!(
                r#"{{ cloudwatch: {{ load_balancer: "{balancer}", metric: RequestCount }}, below: 1, for: 2m }}"#
            ),
            "2s",
        )
    };
    let busy_name = busy.split('/').nth(2).unwrap().to_owned();
    let out = world.run(&["apply", &gate("busy", &busy_name), "--yes"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("RequestCount of {busy_name} was 120")),
        "{}",
        text(&out)
    );
    let out = world.run(&["apply", &gate("quiet", &quiet), "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("stayed below 1 for 2m"),
        "{}",
        text(&out)
    );
    let out = world.run(&["apply", &gate("nothing", "no-such-lb"), "--yes"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("no load balancer `no-such-lb`"),
        "{}",
        text(&out)
    );
    assert!(
        world
            .audit()
            .iter()
            .any(|r| r.service == "cloudwatch" && r.operation == "GetMetricStatistics"),
        "read through the audited door"
    );
}
