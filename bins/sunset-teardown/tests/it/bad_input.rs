//! Malformed sequences and flags: each is a located error (file:line:col, the field, what was
//! expected), exit code 2, and not a single AWS call (no audit log is even opened).

use crate::support;

use support::{World, text};

const HEAD: &str = "allowed_accounts: [\"123456789012\"]\ndecommission_sequence:\n";

/// (what is wrong, the sequence, `line:col` of the error, a fragment of its message)
const CASES: &[(&str, &str, &str, &str)] = &[
    (
        "unknown action",
        "  s1:\n    - action: terminate_instance\n      targets: [i-1]\n",
        "4:15",
        "did you mean `terminate_instances`?",
    ),
    (
        "duration without unit",
        "  s1:\n    - action: stop_instances\n      targets: [i-1]\n      wait_time: 24\n",
        "6:18",
        "missing a unit",
    ),
    (
        "unknown duration unit",
        "  s1:\n    - action: stop_instances\n      targets: [i-1]\n      wait_time: 2w\n",
        "6:18",
        "unknown unit `w`",
    ),
    (
        "missing targets",
        "  s1:\n    - action: stop_instances\n",
        "4:7",
        "`stop_instances` needs `targets`",
    ),
    (
        "duplicate step names",
        "  s1:\n    - action: stop_instances\n      targets: [i-1]\n  s1:\n    - action: start_instances\n      targets: [i-1]\n",
        "6:3",
        "duplicate",
    ),
    (
        "unknown validation",
        "  s1:\n    - action: snapshot_volumes\n      targets: [v]\n      validation: snapshot_complete\n",
        "6:19",
        "did you mean `snapshot_completed`?",
    ),
    (
        "misspelt field",
        "  s1:\n    - action: stop_instances\n      targts: [i-1]\n",
        "5:7",
        "did you mean `targets`?",
    ),
    ("no steps", "  {}\n", "3:3", "expected at least one step"),
    (
        "a step without actions",
        "  s1: []\n",
        "3:7",
        "expected at least one action",
    ),
    (
        "detach first without targets",
        "  s1:\n    - action: detach_volumes\n",
        "4:7",
        "but it is the first action",
    ),
    (
        "malformed tag selector",
        "  s1:\n    - action: stop_instances\n      targets: [\"tag:Role\"]\n",
        "5:16",
        "expected a tag selector like `tag:Role=collector`",
    ),
    (
        "remove_dns without records",
        "  s1:\n    - action: remove_dns\n",
        "4:7",
        "`remove_dns` needs `records`",
    ),
    (
        "a validation that can not check its action",
        "  s1:\n    - action: stop_instances\n      targets: [i-1]\n      validation: snapshot_completed\n",
        "6:19",
        "`snapshot_completed` can not check the outcome of `stop_instances`",
    ),
    (
        "command without command",
        "  s1:\n    - action: command\n",
        "4:7",
        "`command` needs `command`",
    ),
    (
        "zero timeout",
        "  s1:\n    - action: stop_instances\n      targets: [i-1]\n      timeout: 0s\n",
        "6:16",
        "expected a duration above zero",
    ),
    (
        "two probes",
        "  s1:\n    - action: stop_instances\n      targets: [i-1]\n      validation: { check: no_active_connections, sql: \"select 0\", command: \"true\" }\n",
        "6:19",
        "takes one probe",
    ),
    (
        "records on the wrong action",
        "  s1:\n    - action: stop_instances\n      targets: [i-1]\n      records: [a.example.com]\n",
        "6:16",
        "`records` is only used by `remove_dns`",
    ),
    (
        "a probe-less connection check after a command",
        "  s1:\n    - action: stop_services\n      targets: [i-1]\n      command: \"systemctl stop collector\"\n      validation: no_active_connections\n",
        "7:19",
        "needs a probe",
    ),
    (
        "sql without sql",
        "  s1:\n    - action: sql\n",
        "4:7",
        "`sql` needs `sql`",
    ),
    (
        "http without url",
        "  s1:\n    - action: http\n",
        "4:7",
        "`http` needs `url`",
    ),
    (
        "expect_status not a number",
        "  s1:\n    - action: http\n      url: http://x\n      expect_status: ok\n",
        "6:22",
        "expected u16",
    ),
    (
        "a negative expect",
        "  s1:\n    - action: stop_instances\n      targets: [i-1]\n      expect: -1\n",
        "6:15",
        "not a negative one",
    ),
    (
        "an expect whose min is above its max",
        "  s1:\n    - action: stop_instances\n      targets: [i-1]\n      expect: {min: 5, max: 2}\n",
        "6:15",
        "`min` 5 is above `max` 2",
    ),
    (
        "an expect with an unknown bound",
        "  s1:\n    - action: stop_instances\n      targets: [i-1]\n      expect: {least: 2}\n",
        "6:15",
        "unknown field `least`",
    ),
    (
        "expect on an action without targets",
        "  s1:\n    - action: http\n      url: http://x\n      expect: 1\n",
        "6:15",
        "`expect` counts targets, and `http` has none",
    ),
    (
        "idempotent on an AWS action",
        "  s1:\n    - action: stop_instances\n      targets: [i-1]\n      idempotent: true\n",
        "6:19",
        "`idempotent` is for `command`, `sql` and `http` actions",
    ),
    (
        "env that is not a variable name",
        "  s1:\n    - action: command\n      command: \"true\"\n      env: [\"1BAD\"]\n",
        "6:12",
        "expected environment variable names, found `1BAD`",
    ),
    (
        "env on an action without a command",
        "  s1:\n    - action: stop_instances\n      targets: [i-1]\n      env: [HOME]\n",
        "6:12",
        "`env` is for actions that run a `command`",
    ),
    (
        "a metric pattern that is not one",
        "  s1:\n    - action: gate\n      validation:\n        metrics_match:\n          legacy: { prometheus: \"http://127.0.0.1:1\" }\n          new: { prometheus: \"http://127.0.0.1:1\" }\n          exact: [\"pg_stat[x]\"]\n",
        "9:19",
        "`pg_stat[x]` is not a metric name pattern",
    ),
    (
        "a tolerance out of range",
        "  s1:\n    - action: gate\n      validation:\n        metrics_match:\n          legacy: { prometheus: \"http://127.0.0.1:1\" }\n          new: { prometheus: \"http://127.0.0.1:1\" }\n          tolerance: { pg_up: 2 }\n",
        "9:31",
        "expected a relative difference from 0 up to (not including) 1",
    ),
    (
        "a gate's settings under another check",
        "  s1:\n    - action: gate\n      validation: { check: http_status, no_traffic: { prometheus: \"http://p:1\", query: q, below: 1, for: 1m } }\n",
        "5:19",
        "`no_traffic` is a probe of `no_active_connections` or a validation of its own",
    ),
];

#[test]
fn every_malformed_sequence_is_a_located_error_and_calls_nothing() {
    let world = World::new("td-bad");
    let mut failures = Vec::new();
    for (what, body, at, fragment) in CASES {
        let path = world.sequence(&what.replace(' ', "-"), &format!("{HEAD}{body}"));
        for command in ["plan", "apply"] {
            let out = world.run(&[command, path.to_str().unwrap(), "--yes"]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            let location = format!("{}:{at}: ", path.display());
            if out.status.code() != Some(2)
                || !stderr.contains(&location)
                || !stderr.contains(fragment)
            {
                failures.push(format!(
                    "{what} ({command}): expected exit 2 at {at} with `{fragment}`\n{}",
                    text(&out)
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(world.audit().is_empty(), "no AWS call was made");
}

#[test]
fn other_bad_input_is_refused_before_any_call() {
    let world = World::new("td-badflags");
    let id = world.instance(&format!("{}-idle", world.prefix), &[], false);
    let good = world.sequence("good", &format!("region: {{region}}\n{HEAD}  step_one:\n    - action: stop_instances\n      targets: [{id}]\n"));
    let good = good.to_str().unwrap();
    // A validation whose database URL libpq would reject: refused when the sequence loads, not
    // after the step stopped the instance (nor retried as a probe until its timeout).
    let bad_url = world.sequence("bad-url", &format!("region: {{region}}\n{HEAD}  step_one:\n    - action: stop_instances\n      targets: [{id}]\n      validation: {{ check: no_active_connections, sql: \"select 0\", database_url: \"postgres://localhost/app?sslmode=verify-ful\", timeout: 5s }}\n"));
    let bad_url = bad_url.to_str().unwrap();
    // A gate whose Prometheus does not answer: refused at plan time, at the URL's place.
    let unreachable = world.sequence("unreachable", &format!("region: {{region}}\n{HEAD}  step_one:\n    - action: stop_instances\n      targets: [{id}]\n  step_two:\n    - action: gate\n      validation: {{ no_traffic: {{ prometheus: \"http://127.0.0.1:9\", query: up, below: 1, for: 1m }} }}\n"));
    let unreachable = unreachable.to_str().unwrap();
    let unreachable_at = format!(
        "{unreachable}:9:47: decommission_sequence.step_two[0].validation.no_traffic.prometheus: Prometheus does not answer its API"
    );
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["apply", bad_url, "--yes"],
            "step `step_one`: `database_url`: invalid database URL",
        ),
        (
            vec!["plan", bad_url],
            "step `step_one`: `database_url`: invalid database URL",
        ),
        (
            vec!["plan", good, "--step", "step_onee"],
            "did you mean `step_one`?",
        ),
        (
            vec!["apply", good, "--max-wait", "soon"],
            "expected a duration",
        ),
        (
            vec!["plan", "/nonexistent/sequence.yaml"],
            "cannot read sequence /nonexistent/sequence.yaml",
        ),
        (vec!["apply", good], "stdin is not a terminal: pass --yes"),
        (vec!["plan", unreachable], &unreachable_at),
        (vec!["apply", unreachable, "--yes"], &unreachable_at),
        (
            vec!["apply", good, "--yes", "--rerun", "step_on"],
            "--rerun `step_on` is not a step",
        ),
    ];
    for (args, fragment) in cases {
        let out = world.run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(
            stderr.contains(fragment),
            "{args:?}: expected `{fragment}`: {}",
            text(&out)
        );
    }
    assert!(
        world.audit().iter().all(|r| !r.mutating),
        "nothing but reads"
    );
    assert_eq!(world.instance_state(&id), "running");
}

#[test]
fn help_of_every_command_is_pinned() {
    expect_test::expect_file!["snapshots/help.txt"]
        .assert_eq(&sunset_test_support::help_text(support::BIN));
}
