//! `apply --metrics-addr` scraped by the real Prometheus while a validation gate holds the run:
//! steps, gate polls and calls, judged against the emulator's own request log.

use std::time::Duration;

use sunset_test_support::harness::Running;
use sunset_test_support::prometheus::Prometheus;

use crate::support::World;

#[test]
fn apply_serves_steps_gate_polls_and_calls_to_prometheus_while_it_works() {
    let prometheus = Prometheus::from_env();
    let world = World::new("td-metrics");
    let host = world.instance(&format!("{}-host", world.prefix), &[], false);
    let flag = world.dir.path().join("drained");
    let sequence = world.sequence(
        "metrics",
        &format!(
            r#"allowed_accounts: ["{{account}}"]
region: {{region}}
decommission_sequence:
  stop:
    - action: stop_instances
      targets: [{host}]
  drain:
    - action: command
      command: "true"
      validation: {{ check: command_succeeds, command: "test -f {flag}", interval: 200ms, timeout: 120s }}
"#,
            flag = flag.display()
        ),
    );
    let seq = sequence.to_str().unwrap();
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let name = sunset_test_support::unique_name("teardown-metrics");
    let _target = prometheus.scrape(&name, addr);
    let mut apply = Running::spawn(
        &mut world.command(&["apply", seq, "--yes", "--metrics-addr", &addr.to_string()]),
        world.dir.path(),
    );
    let selector = format!("test=\"{name}\",command=\"apply\"");

    // The gate polls and does not hold: the run waits in step `drain`, and says so.
    prometheus.wait_for(
        &format!("sunset_teardown_gate_checks_total{{{selector},result=\"not_yet\"}} >= 3"),
        Duration::from_secs(60),
    );
    for (expr, expected) in [
        (format!("sunset_teardown_steps{{{selector}}}"), 2.0),
        (
            format!("sunset_teardown_steps_validated_total{{{selector}}}"),
            1.0,
        ),
        (
            format!("sunset_teardown_step_in_progress{{{selector},step=\"drain\"}}"),
            1.0,
        ),
        (
            format!(
                "sunset_teardown_api_calls_total{{{selector},service=\"ec2\",operation=\"StopInstances\",mutating=\"true\",result=\"ok\"}}"
            ),
            1.0,
        ),
    ] {
        let value = prometheus.value(&expr, Duration::from_secs(30));
        assert_eq!(value, expected, "{expr}");
    }
    // The emulator received the one StopInstances the metric counts.
    let stops = world
        .emulator
        .mutations()
        .iter()
        .filter(|operation| *operation == "StopInstances")
        .count();
    assert_eq!(stops, 1);

    std::fs::write(&flag, "").unwrap();
    let status = apply.wait().unwrap();
    assert!(status.success(), "{}", apply.stderr_text());
}
