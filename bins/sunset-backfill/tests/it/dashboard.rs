//! The Grafana dashboard under `dashboards/` against a real Prometheus scraping a real run: every
//! panel's every query must return a series, so a metric renamed in the binary (or mistyped in
//! the dashboard) fails here. The values that can be judged without the code under test are
//! judged against PostgreSQL.

use std::time::{Duration, Instant};

use sunset_test_support::prometheus::Prometheus;

use crate::support::{ACCOUNTS, Db, accounts_plan, code, stderr};

const DASHBOARD: &str = include_str!("../../../../dashboards/sunset-backfill.json");

fn dashboard() -> serde_json::Value {
    serde_json::from_str(DASHBOARD).expect("the dashboard is JSON")
}

/// Every (panel title, query) of the dashboard, in order.
fn panel_queries(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    let panels = dashboard["panels"].as_array().expect("panels");
    panels
        .iter()
        .flat_map(|panel| {
            let title = panel["title"].as_str().expect("a panel title").to_owned();
            let targets = panel["targets"].as_array().cloned().unwrap_or_default();
            assert!(!targets.is_empty(), "panel `{title}` has no query");
            targets.into_iter().map(move |target| {
                let expr = target["expr"].as_str().expect("a PromQL expr").to_owned();
                (title.clone(), expr)
            })
        })
        .collect()
}

/// The query as Grafana would send it for `run`, with a rate window that spans several of the
/// test Prometheus's one-second scrapes.
fn as_grafana_sends_it(expr: &str, run: &str) -> String {
    let expr = expr
        .replace("$__rate_interval", "30s")
        .replace("$run", &regex_literal(run));
    assert!(
        !expr.contains('$'),
        "a dashboard variable this test does not know: {expr}"
    );
    expr
}

fn regex_literal(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let special = ".+*?()|[]{}^$\\".contains(c);
            special.then_some('\\').into_iter().chain([c])
        })
        .collect::<String>()
        .replace('\\', "\\\\")
}

#[test]
fn the_dashboard_is_in_grafanas_format_with_its_data_source_a_variable() {
    let dashboard = dashboard();
    assert!(
        dashboard["schemaVersion"].as_i64().unwrap() >= 36,
        "schemaVersion"
    );
    assert!(dashboard["title"].is_string() && dashboard["uid"].is_string());
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    let datasource = variables
        .iter()
        .find(|v| v["type"] == "datasource")
        .expect("a data source variable");
    assert_eq!(datasource["query"], "prometheus");
    let name = datasource["name"].as_str().unwrap();
    let reference = serde_json::json!({ "type": "prometheus", "uid": format!("${{{name}}}") });
    assert!(
        variables.iter().any(|v| v["name"] == "run"),
        "a run variable"
    );
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 8, "the panels DBAs ask for");
    let mut ids = std::collections::BTreeSet::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap();
        assert!(
            ids.insert(panel["id"].as_i64().unwrap()),
            "panel ids unique"
        );
        assert_eq!(panel["datasource"], reference, "panel `{title}`");
        for target in panel["targets"].as_array().unwrap() {
            assert_eq!(target["datasource"], reference, "a query of `{title}`");
            assert!(target["refId"].is_string());
        }
        for key in ["h", "w", "x", "y"] {
            assert!(panel["gridPos"][key].is_u64(), "`{title}` gridPos.{key}");
        }
    }
    // No data source is named by uid anywhere: every `uid` but the dashboard's own is a variable.
    fn uids<'a>(value: &'a serde_json::Value, found: &mut Vec<&'a str>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, value) in map {
                    match value.as_str() {
                        Some(uid) if key == "uid" => found.push(uid),
                        _ => uids(value, found),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|item| uids(item, found)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    uids(&dashboard["panels"], &mut found);
    uids(&dashboard["templating"], &mut found);
    assert!(!found.is_empty());
    for uid in found {
        assert_eq!(uid, format!("${{{name}}}"), "a hard-coded data source uid");
    }
}

#[test]
fn every_panel_of_the_dashboard_finds_its_series_in_a_real_run_scraped_by_prometheus() {
    let prometheus = Prometheus::from_env();
    let db = Db::new("bf-dashboard");
    db.exec(&ACCOUNTS.replace("ROWS", "30000"));
    db.slow_down_each_statement("accounts", "UPDATE");
    let run = sunset_test_support::unique_name("dashboard");
    let plan = db.plan(
        "plan.yaml",
        // A probe limit no run reaches, so the probe's latency is served as well.
        &accounts_plan(
            "batch: { size: 40, min_size: 10, max_size: 40, target_duration: 1s }\nthrottle: { max_probe_latency: 30s }\n",
        )
            .replace("backfill: accounts-sti", &format!("backfill: {run}")),
    );
    let plan = plan.to_str().unwrap();
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let _target = prometheus.scrape(&run, addr);
    let mut child = db.spawn(&["run", plan, "--metrics-addr", &addr.to_string()]);
    let selector = format!("{{run=\"{run}\"}}");
    // Paused as soon as it has committed batches: a paused run stays alive to be scraped for as
    // long as the test needs (Prometheus takes up to five seconds to act on a new target), and
    // the throttle panels show the operator's reason.
    let deadline = Instant::now() + Duration::from_secs(60);
    while db.int("SELECT count(*) FROM pg_tables WHERE schemaname = 'sunset' AND tablename = 'backfill_runs'") == 0
        || db.int(&format!("SELECT count(*) FROM sunset.backfill_runs WHERE run = '{run}'")) == 0
        || db.status(plan)["rows_seen"].as_i64().unwrap_or_default() == 0
    {
        assert!(Instant::now() < deadline, "the run never made progress");
        std::thread::sleep(Duration::from_millis(50));
    }
    let pause = db.backfill(&["pause", plan]);
    assert_eq!(code(&pause), 0, "{}", stderr(&pause));
    // First that Prometheus scrapes the run at all (a failure here is discovery or the
    // endpoint, not the run).
    prometheus.wait_for(
        &format!("up{{test=\"{run}\"}} == 1"),
        Duration::from_secs(60),
    );
    prometheus.wait_for(
        &format!("sunset_backfill_rows_processed_total{selector} > 0"),
        Duration::from_secs(30),
    );
    prometheus.wait_for(
        &format!("sunset_backfill_throttle_reason{{run=\"{run}\",reason=\"paused\"}} == 1"),
        Duration::from_secs(30),
    );
    // Half done, validate finds the rest wrong and records it; the run's metrics show it.
    let validate = db.backfill(&["validate", plan, "--json"]);
    assert_eq!(code(&validate), 1, "{}", stderr(&validate));
    let verdict: serde_json::Value = serde_json::from_slice(&validate.stdout).unwrap();
    let failures = ["mismatched", "untyped", "missing", "differing"]
        .iter()
        .map(|key| verdict[key].as_i64().unwrap_or_default())
        .sum::<i64>();
    assert!(failures > 0, "{verdict}");
    prometheus.wait_for(
        &format!("sunset_backfill_validation_failures{selector} == {failures}"),
        Duration::from_secs(30),
    );
    // Enough scrapes for every rate window of the dashboard.
    prometheus.wait_for(
        &format!("count_over_time(sunset_backfill_rows_total{selector}[30s]) >= 10"),
        Duration::from_secs(60),
    );

    let mut empty = Vec::new();
    for (title, expr) in panel_queries(&dashboard()) {
        let query = as_grafana_sends_it(&expr, &run);
        match prometheus.query(&query) {
            Ok(series) if series.is_empty() => {
                empty.push(format!("{title}: `{query}` (no series)"))
            }
            Ok(_) => {}
            Err(error) => empty.push(format!("{title}: `{query}`: {error}")),
        }
    }
    assert!(
        empty.is_empty(),
        "dashboard queries without data:\n{}",
        empty.join("\n")
    );

    // The values PostgreSQL can vouch for.
    let value = |expr: &str| prometheus.value(expr, Duration::from_secs(10));
    let in_scope = db.int("SELECT count(*) FROM accounts WHERE deleted_at IS NULL");
    assert_eq!(
        value(&format!("sunset_backfill_rows_total{selector}")),
        in_scope as f64
    );
    let (_, progress) = panel_queries(&dashboard())
        .into_iter()
        .find(|(title, _)| title == "Progress")
        .expect("a Progress panel");
    let progress = value(&as_grafana_sends_it(&progress, &run));
    assert!(
        progress > 0.0 && progress < 1.0,
        "a paused run is part way: {progress}"
    );
    let journalled = db.int(&format!(
        "SELECT count(*) FROM sunset.backfill_journal WHERE run = '{run}'"
    ));
    assert!(journalled > 0);
    prometheus.wait_for(
        &format!("sunset_backfill_journal_rows{selector} == {journalled}"),
        Duration::from_secs(30),
    );
    assert_eq!(
        value(&format!("sunset_backfill_rollback_ready{selector}")),
        1.0
    );

    // Resumed, the run finishes; the stalled and throttled alerts never fired for it.
    assert_eq!(code(&db.backfill(&["resume", plan])), 0);
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the resumed run did not finish");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{}", child.stderr_text());
    let alerts = prometheus
        .query(&format!("ALERTS{selector}"))
        .expect("ALERTS");
    assert!(alerts.is_empty(), "{alerts:?}");
}
