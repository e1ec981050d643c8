//! `create --metrics-addr` scraped by the real Prometheus while it works: bytes through each
//! stage and parts uploaded, judged against the object S3 holds afterwards.

use std::time::Duration;

use sunset_test_support::harness::Running;
use sunset_test_support::prometheus::Prometheus;

use crate::{World, segments};

const PART: u64 = 5 << 20;

#[test]
fn create_serves_bytes_and_parts_to_prometheus_while_it_works() {
    let prometheus = Prometheus::from_env();
    let world = World::new("arc-metrics");
    let tree = world.path("bulk");
    // About 12 MiB once compressed: two whole parts go up before the slow export starts.
    segments(&tree, 6, 4 << 20, 11);
    let name = sunset_test_support::unique_name("metrics");
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let _target = prometheus.scrape(&name, addr);
    let mut create = world.command(&[
        "create",
        "--dest",
        &world.dest(),
        "--name",
        &name,
        "--dir",
        tree.to_str().unwrap(),
        // Written after the files, one row each half second: the run stays up to be scraped.
        "--query",
        "slow=SELECT g, pg_sleep(0.5)::text AS s FROM generate_series(1, 30) g",
        "--part-size",
        "5MiB",
        "--json",
        "--metrics-addr",
        &addr.to_string(),
    ]);
    let mut running = Running::spawn(&mut create, world.scratch.path());
    let selector = format!("{{command=\"create\",archive=\"{}/{name}\"}}", world.dest());
    prometheus.wait_for(
        &format!("sunset_archive_parts_uploaded_total{selector} >= 2"),
        Duration::from_secs(120),
    );
    prometheus.wait_for(
        &format!("sunset_archive_read_bytes_total{selector} >= {}", 24 << 20),
        Duration::from_secs(30),
    );
    for name in [
        "source_bytes",
        "compressed_bytes_total",
        "parts_reused_total",
    ] {
        prometheus.wait_for(
            &format!("sunset_archive_{name}{selector}"),
            Duration::from_secs(10),
        );
    }
    let status = running.wait().unwrap();
    assert!(status.success(), "{}", running.stderr_text());

    let value = |expr: &str| prometheus.value(expr, Duration::from_secs(10));
    let parts = value(&format!(
        "max_over_time(sunset_archive_parts_uploaded_total{selector}[10m])"
    ));
    let uploaded = value(&format!(
        "max_over_time(sunset_archive_uploaded_bytes_total{selector}[10m])"
    ));
    let (head, _) = world.object_meta(&format!("archives/{name}/archive.tar.gz"));
    let size = head.content_length().unwrap() as f64;
    // The most Prometheus saw: every acknowledged part whole but perhaps the last (the object's
    // short tail), and never more than the object S3 ends up holding.
    let part = PART as f64;
    assert!(parts >= 2.0, "{parts} parts seen");
    assert!(
        uploaded > (parts - 1.0) * part && uploaded <= parts * part,
        "{uploaded} bytes uploaded in {parts} parts of {part}"
    );
    assert!(uploaded <= size, "{uploaded} of {size} bytes");
}
