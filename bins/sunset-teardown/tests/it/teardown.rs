//! `sunset-teardown` as operators run it: the built binary against moto's EC2, ELBv2, Route 53
//! and STS. moto completes state changes at once and allows what AWS refuses, so the runner's
//! own rules are what these tests hold it to.
//!
//! Longer than ~600 lines: the end-to-end scenarios (apply, kill, resume, rollback, the shipped
//! sequences), each a whole story.

use crate::support;

use std::time::Duration;

use support::{
    ACCOUNT, Names, World, assert_each_once, assert_emulator_saw_each_audited_mutation_once,
    metrics_sequence, mutations, text, wait_until,
};

#[test]
fn the_whole_sequence_runs_step_by_step_through_wait_gates_and_a_second_apply_does_nothing() {
    let world = World::new("td-e2e");
    let names = Names::prefixed(&world.prefix);
    let fleet = world.fleet(&names);
    let sequence = world.sequence("metrics", &metrics_sequence(&names, "2s"));
    let seq = sequence.to_str().unwrap();

    let plan = world.run(&["plan", seq]);
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan));
    let shown = String::from_utf8_lossy(&plan.stdout);
    for expected in [
        fleet.collectors[0].as_str(),
        fleet.collectors[1].as_str(),
        fleet.data_volume.as_str(),
        "running",
        "[irreversible]",
        "targets: the targets of `snapshot_volumes` before it",
        "the security groups of the instances and load balancers this sequence removes",
        &fleet.group_id,
        &format!("tag Group={}", names.group_tag),
        "then: no active connections: every instance is off the network",
        "then: every snapshot is `completed`",
    ] {
        assert!(
            shown.contains(expected),
            "plan lacks `{expected}`:\n{shown}"
        );
    }
    assert!(
        world.audit().iter().all(|r| !r.mutating),
        "plan made a mutating call"
    );
    // The emulator's own log: plan's requests reached it, and none of them was a mutation.
    let received = world.emulator.requests();
    assert!(
        received.iter().any(|r| r.service == "ec2"),
        "the emulator saw none of plan's requests: {received:?}"
    );
    assert!(
        received.iter().all(|r| !r.mutating),
        "plan sent a mutating request: {received:?}"
    );

    // Step 1, then the 2 s wait gate: exit 3 with the time; again before then: still waiting.
    let first = world.run(&["apply", seq, "--yes"]);
    assert_eq!(first.status.code(), Some(3), "{}", text(&first));
    assert!(
        String::from_utf8_lossy(&first.stdout).contains("becomes eligible at"),
        "{}",
        text(&first)
    );
    assert_eq!(world.instance_state(&fleet.collectors[0]), "stopped");
    let early = world.run(&["apply", seq, "--yes"]);
    assert_eq!(early.status.code(), Some(3), "{}", text(&early));
    std::thread::sleep(Duration::from_secs(2));

    // Steps 2 and 3, then the second gate; then step 4.
    let second = world.run(&["apply", seq, "--yes"]);
    assert_eq!(second.status.code(), Some(3), "{}", text(&second));
    assert_eq!(world.instance_state(&fleet.collectors[1]), "terminated");
    std::thread::sleep(Duration::from_secs(2));
    let last = world.run(&["apply", seq, "--yes"]);
    assert_eq!(last.status.code(), Some(0), "{}", text(&last));

    assert!(world.volume_attachments(&fleet.data_volume).is_empty());
    assert_eq!(world.snapshots_of(&fleet.data_volume).len(), 1);
    assert!(
        world
            .record_values(&fleet.zone_id, &fleet.record)
            .is_empty()
    );
    assert!(!world.load_balancer_exists(&fleet.lb_arn));
    assert!(!world.group_exists(&fleet.group_id));

    let status = world.run(&["status", seq, "--json"]);
    let json: serde_json::Value =
        serde_json::from_slice(&status.stdout).unwrap_or_else(|_| panic!("{}", text(&status)));
    let states: Vec<&str> = json["state"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["validated"; 4]);

    // Each resource was changed exactly once; a second apply changes nothing.
    let before = mutations(&world.audit());
    assert_each_once(&before);
    let again = world.run(&["apply", seq, "--yes"]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    assert_eq!(
        mutations(&world.audit()),
        before,
        "the second apply changed something"
    );
    assert_emulator_saw_each_audited_mutation_once(&world);

    // Rollback: only reversible actions are undone; irreversible ones are listed.
    let rollback = world.run(&["rollback", seq, "--yes"]);
    assert_eq!(rollback.status.code(), Some(0), "{}", text(&rollback));
    let out = String::from_utf8_lossy(&rollback.stdout);
    assert!(
        out.lines()
            .any(|line| line.contains("terminate_instances") && line.contains("not undone")),
        "the termination is listed as not undone: {out}"
    );
    for collector in &fleet.collectors {
        assert_eq!(
            world.instance_state(collector),
            "terminated",
            "a terminated instance stays terminated"
        );
    }
    assert_eq!(
        world.record_values(&fleet.zone_id, &fleet.record),
        ["10.1.2.3"],
        "the DNS record is recreated from the inventory"
    );
}

#[test]
fn plan_is_refused_in_an_account_the_sequence_does_not_allow() {
    let world = World::new("td-account");
    let names = Names::prefixed(&world.prefix);
    world.fleet(&names);
    let yaml = metrics_sequence(&names, "1s").replace("{account}", "111111111111");
    let sequence = world.sequence("other-account", &yaml);
    let seq = sequence.to_str().unwrap();
    for command in ["plan", "apply"] {
        let out = world.run(&[command, seq, "--yes"]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("AWS account {ACCOUNT} is not allowed")),
            "{stderr}"
        );
    }
    let calls: Vec<String> = world.audit().iter().map(|r| r.operation.clone()).collect();
    assert!(
        calls.iter().all(|c| c == "GetCallerIdentity"),
        "only the identity was asked: {calls:?}"
    );
    let allowed = world.run(&["plan", seq, "--allow-account", ACCOUNT]);
    assert_eq!(allowed.status.code(), Some(0), "{}", text(&allowed));
}

#[test]
fn a_protected_instance_stops_its_step_before_any_change() {
    let world = World::new("td-protect");
    let tagged = world.instance(
        &format!("{}-tagged", world.prefix),
        &[("sunset:protect", "legal hold")],
        false,
    );
    let guarded = world.instance(&format!("{}-guarded", world.prefix), &[], true);
    let sequence = world.sequence(
        "protected",
        &format!(
            r#"allowed_accounts: ["{{account}}"]
region: {{region}}
decommission_sequence:
  stop_tagged:
    - action: stop_instances
      targets: [{tagged}]
  terminate_guarded:
    - action: terminate_instances
      targets: [{guarded}]
"#
        ),
    );
    let seq = sequence.to_str().unwrap();
    let out = world.run(&["apply", seq, "--yes"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("step `stop_tagged` stopped before any change: {tagged} carries the protection tag `sunset:protect`")), "{stderr}");
    assert_eq!(world.instance_state(&tagged), "running");

    let out = world.run(&["apply", seq, "--yes", "--step", "terminate_guarded"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "the step order is kept: {}",
        text(&out)
    );
    let only_guarded = world.sequence("guarded", &format!(
        "allowed_accounts: [\"{{account}}\"]\nregion: {{region}}\ndecommission_sequence:\n  terminate_guarded:\n    - action: terminate_instances\n      targets: [{guarded}]\n"));
    let out = world.run(&["apply", only_guarded.to_str().unwrap(), "--yes"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains(&format!("instance {guarded} has termination protection on")),
        "{}",
        text(&out)
    );
    assert_eq!(world.instance_state(&guarded), "running");
    assert!(mutations(&world.audit()).is_empty(), "nothing was changed");
}

#[test]
fn rules_aws_enforces_and_the_emulator_does_not_are_enforced_by_the_runner() {
    let world = World::new("td-rules");
    let names = Names::prefixed(&world.prefix);
    let fleet = world.fleet(&names);
    // The group is still used by a running collector and the load balancer.
    let in_use = world.sequence("in-use", &format!(
        "allowed_accounts: [\"{{account}}\"]\nregion: {{region}}\ndecommission_sequence:\n  groups:\n    - action: delete_security_groups\n      targets: [{}]\n", fleet.group_id));
    let out = world.run(&["apply", in_use.to_str().unwrap(), "--yes"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("security groups still in use")
            && stderr.contains(&format!("instance {}", fleet.collectors[0]))
            && stderr.contains(&format!("load balancer {}", names.lb)),
        "{stderr}"
    );
    assert!(world.group_exists(&fleet.group_id));

    // The address is still associated with the second collector.
    let associated = world.sequence("associated", &format!(
        "allowed_accounts: [\"{{account}}\"]\nregion: {{region}}\ndecommission_sequence:\n  addresses:\n    - action: release_addresses\n      targets: [{}]\n", fleet.address));
    let out = world.run(&["apply", associated.to_str().unwrap(), "--yes"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is still associated with"),
        "{}",
        text(&out)
    );

    // A terminated instance can not be stopped.
    let doomed = world.instance(&format!("{}-doomed", world.prefix), &[], false);
    world
        .runtime
        .block_on(world.ec2.terminate_instances().instance_ids(&doomed).send())
        .unwrap();
    let stop_dead = world.sequence("stop-dead", &format!(
        "allowed_accounts: [\"{{account}}\"]\nregion: {{region}}\ndecommission_sequence:\n  stop:\n    - action: stop_instances\n      targets: [{doomed}]\n"));
    let out = world.run(&["apply", stop_dead.to_str().unwrap(), "--yes"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is terminated: it can not be stopped"),
        "{}",
        text(&out)
    );
    assert!(
        mutations(&world.audit()).is_empty(),
        "nothing was changed: {:?}",
        mutations(&world.audit())
    );
}

#[test]
fn targets_that_resolve_differently_after_the_plan_are_refused_until_replanned() {
    let world = World::new("td-pins");
    let name = format!("{}-worker", world.prefix);
    let first = world.instance(&name, &[("Role", "worker")], false);
    let sequence = world.sequence("pins", &format!(
        "allowed_accounts: [\"{{account}}\"]\nregion: {{region}}\ndecommission_sequence:\n  stop:\n    - action: stop_instances\n      targets: [{name}]\n"));
    let seq = sequence.to_str().unwrap();
    assert_eq!(world.run(&["plan", seq]).status.code(), Some(0));
    let second = world.instance(&name, &[], false);
    let out = world.run(&["apply", seq, "--yes"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("resolve differently") && stderr.contains(&second),
        "{stderr}"
    );
    assert_eq!(world.instance_state(&first), "running");

    let replanned = world.run(&["plan", seq]);
    assert!(
        String::from_utf8_lossy(&replanned.stdout).contains(&second),
        "{}",
        text(&replanned)
    );
    let out = world.run(&["apply", seq, "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        (world.instance_state(&first), world.instance_state(&second)),
        ("stopped".into(), "stopped".into())
    );
}

#[test]
fn a_selector_that_matches_nothing_is_an_error_not_a_no_op() {
    let world = World::new("td-nothing");
    let sequence = world.sequence("nothing", &format!(
        "allowed_accounts: [\"{{account}}\"]\nregion: {{region}}\ndecommission_sequence:\n  stop:\n    - action: stop_instances\n      targets: [\"tag:Role={}-nobody\"]\n", world.prefix));
    let out = world.run(&["plan", sequence.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("matches no instance"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_validation_that_never_holds_fails_its_step_after_its_timeout() {
    let world = World::new("td-timeout");
    let id = world.instance(&format!("{}-slow", world.prefix), &[], false);
    let sequence = world.sequence("timeout", &format!(
        r#"allowed_accounts: ["{{account}}"]
region: {{region}}
decommission_sequence:
  drain:
    - action: stop_instances
      targets: [{id}]
      validation: {{ check: no_active_connections, command: "exit 1", interval: 200ms, timeout: 1s }}
"#));
    let seq = sequence.to_str().unwrap();
    let out = world.run(&["apply", seq, "--yes"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("did not hold within 1s"),
        "{}",
        text(&out)
    );
    let status = world.run(&["status", seq]);
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("failed"),
        "{}",
        text(&status)
    );
}

#[test]
fn rollback_starts_what_was_stopped_and_reattaches_what_was_detached() {
    let world = World::new("td-rollback");
    let names = Names::prefixed(&world.prefix);
    let fleet = world.fleet(&names);
    let sequence = world.sequence(
        "reversible",
        &format!(
            r#"allowed_accounts: ["{{account}}"]
region: {{region}}
decommission_sequence:
  quiesce:
    - action: stop_instances
      targets: [{c1}]
    - action: detach_volumes
  dns:
    - action: remove_dns
      records: [{record}]
"#,
            c1 = names.collectors[0],
            record = names.record
        ),
    );
    let seq = sequence.to_str().unwrap();
    let out = world.run(&["apply", seq, "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(world.volume_attachments(&fleet.data_volume).is_empty());
    let out = world.run(&["rollback", seq, "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(world.instance_state(&fleet.collectors[0]), "running");
    assert_eq!(
        world.volume_attachments(&fleet.data_volume),
        [fleet.collectors[0].clone()]
    );
    assert_eq!(
        world.record_values(&fleet.zone_id, &fleet.record),
        ["10.1.2.3"]
    );
    let again = world.run(&["apply", seq, "--yes"]);
    assert_eq!(
        again.status.code(),
        Some(2),
        "a rolled-back run needs --restart: {}",
        text(&again)
    );
}

#[test]
fn sigkill_between_an_action_and_its_validation_resumes_without_repeating_a_call() {
    let world = World::new("td-chaos");
    let names = Names::prefixed(&world.prefix);
    let fleet = world.fleet(&names);
    let gate = |n: usize| world.dir.path().join(format!("gate-{n}"));
    let probe = |n: usize| {
        format!(
            "{{ check: no_active_connections, command: \"test -f {}\", interval: 100ms, timeout: 10m }}",
            gate(n).display()
        )
    };
    let sequence = world.sequence(
        "chaos",
        &format!(
            r#"allowed_accounts: ["{{account}}"]
region: {{region}}
decommission_sequence:
  step_1:
    - action: stop_instances
      targets: [{c1}, {c2}]
      validation: {p1}
  step_2:
    - action: snapshot_volumes
      targets: [{volume}]
    - action: detach_volumes
      validation: {p2}
  step_3:
    - action: terminate_instances
      targets: [{group}]
      validation: {p3}
    - action: release_addresses
  step_4:
    - action: remove_dns
      records: [{record}]
    - action: delete_load_balancers
      targets: [{lb}]
    - action: clean_security_groups
"#,
            c1 = names.collectors[0],
            c2 = names.collectors[1],
            volume = names.volume,
            group = names.group_tag,
            record = names.record,
            lb = names.lb,
            p1 = probe(1),
            p2 = probe(2),
            p3 = probe(3)
        ),
    );
    let seq = sequence.to_str().unwrap();
    for (n, operation) in [
        (1, "StopInstances"),
        (2, "DetachVolume"),
        (3, "TerminateInstances"),
    ] {
        // Killed while polling the validation, after the action; then killed again while the
        // resumed run re-validates; then the gate opens and the resumed run goes on.
        let polls = || {
            world
                .audit()
                .iter()
                .filter(|r| r.service == "command" && r.operation.contains(&format!("gate-{n}")))
                .count()
        };
        for _ in 0..2 {
            // Two polls of this run's own: the lines of the killed run before do not count.
            let before = polls();
            let mut child = world.spawn(&["apply", seq, "--yes"]);
            wait_until(
                &format!("{operation} is in the audit log and this run polls the validation"),
                Duration::from_secs(60),
                || {
                    world
                        .audit()
                        .iter()
                        .any(|r| r.operation == operation && r.result == "ok")
                        && polls() >= before + 2
                },
            );
            child.kill().unwrap();
            child.wait().unwrap();
        }
        std::fs::write(gate(n), "").unwrap();
    }
    let last = world.run(&["apply", seq, "--yes"]);
    assert_eq!(last.status.code(), Some(0), "{}", text(&last));

    let done = mutations(&world.audit());
    assert_each_once(&done);
    assert_emulator_saw_each_audited_mutation_once(&world);
    let operations: Vec<&str> = done.iter().map(|(op, _)| op.as_str()).collect();
    for expected in [
        "StopInstances",
        "CreateSnapshot",
        "DetachVolume",
        "TerminateInstances",
        "ChangeResourceRecordSets",
        "DeleteLoadBalancer",
        "DeleteSecurityGroup",
    ] {
        assert!(
            operations.contains(&expected),
            "{expected} never ran: {done:?}"
        );
    }
    assert_eq!(
        world.snapshots_of(&fleet.data_volume).len(),
        1,
        "one snapshot, however often the run was killed"
    );
    assert_eq!(world.instance_state(&fleet.collectors[0]), "terminated");
    assert!(!world.group_exists(&fleet.group_id));
}

#[test]
fn the_example_sequences_plan_against_their_fleets() {
    // The shipped sequences name their fleets: a region where neither fleet exists yet.
    let world = World::where_unused(
        "td-examples",
        &["legacy-collectors", "legacy-queue-workers"],
    );
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sequences");
    let prometheus = sunset_test_support::service_var("SUNSET_PROMETHEUS_URL")
        .unwrap_or_else(|message| panic!("{message}"));
    let queue = Names {
        collectors: vec![
            "legacy-queue-worker-1".into(),
            "legacy-queue-worker-2".into(),
        ],
        group_tag: "legacy-queue-workers".into(),
        volume: "legacy-queue-spool-1".into(),
        lb: "legacy-queue-lb".into(),
        zone: "internal".into(),
        record: "legacy-queue.internal".into(),
        security_group: "legacy-queue-workers".into(),
    };
    let mut tested = Vec::new();
    let mut built: Option<(String, support::Fleet)> = None;
    // One hosted zone `internal.` at a time: each fleet replaces the previous one's zone.
    for (names, file, expected) in [
        (
            Names::legacy_metrics(),
            "legacy-metrics/decommission.yaml",
            vec![
                "stop 2 instances",
                "snapshot 1 volume",
                "detach 1 volume",
                "terminate 2 instances",
                "remove 1 DNS record set",
                "delete 1 load balancer",
                "delete 1 security group once unused",
            ],
        ),
        (
            Names::legacy_metrics(),
            "legacy-cutover/decommission.yaml",
            vec![
                "change nothing; wait for the validation",
                "shift haproxy backend `metrics` from `legacy` to `new` through 10%, 25%, 50%, 100% (each held 30m, 3 gates watched)",
                "change nothing; wait for the validation",
                "stop 2 instances",
                "terminate 2 instances",
                "remove 1 DNS record set",
                "delete 1 load balancer",
                "delete 1 security group once unused",
            ],
        ),
        (
            queue,
            "legacy-queue/decommission.yaml",
            vec![
                "POST http://legacy-queue.internal:8080/admin/drain",
                "archive",
                "stop 2 instances",
                "snapshot 1 volume",
                "terminate 2 instances",
                "release 1 address",
                "remove 1 DNS record set",
                "delete 1 security group once unused",
            ],
        ),
    ] {
        // The cutover retires the legacy-metrics fleet: built once, for both.
        if built
            .as_ref()
            .is_none_or(|(key, _)| *key != names.security_group)
        {
            built = Some((names.security_group.clone(), world.fleet(&names)));
        }
        let fleet = &built.as_ref().expect("built above").1;
        let path = repo.join(file);
        let plan_command = |json: bool| {
            let mut command = world.command(&["plan", path.to_str().unwrap()]);
            if json {
                command.arg("--json");
            }
            // The cutover's gates read the services' Prometheus (checked when the plan is made).
            command
                .env("LEGACY_PROMETHEUS", &prometheus)
                .env("NEW_PROMETHEUS", &prometheus)
                .output()
                .unwrap()
        };
        let out = plan_command(true);
        assert_eq!(out.status.code(), Some(0), "{file}: {}", text(&out));
        let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let summaries: Vec<&str> = plan["steps"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["actions"].as_array().unwrap())
            .map(|a| a["summary"].as_str().unwrap())
            .collect();
        for want in expected {
            assert!(
                summaries.iter().any(|s| s.starts_with(want)),
                "{file}: no `{want}` in {summaries:?}"
            );
        }
        let ids = plan.to_string();
        assert!(
            fleet.collectors.iter().all(|c| ids.contains(c.as_str())),
            "{file}: both instances resolved"
        );
        assert!(
            world.audit().iter().all(|r| !r.mutating),
            "{file}: plan changed nothing"
        );
        // What the operator reads, pinned; the emulator's ids, the test's region and paths are
        // the moving parts.
        let out = plan_command(false);
        assert_eq!(out.status.code(), Some(0), "{file}: {}", text(&out));
        let run = plan["run"].as_str().expect("the plan names its run");
        let rendered = stable(&world, &String::from_utf8_lossy(&out.stdout))
            .replace(run, "$RUN")
            .replace(&prometheus, "$PROMETHEUS")
            .replace(repo.to_str().unwrap(), "sequences");
        let snapshot = format!("snapshots/plans/{}.txt", file.replace('/', "-"));
        expect_test::expect_file![snapshot].assert_eq(&rendered);
        tested.push(file);
    }
    // Every sequence shipped in sequences/ is planned here.
    let mut shipped: Vec<String> = std::fs::read_dir(&repo)
        .unwrap()
        .flat_map(|dir| std::fs::read_dir(dir.unwrap().path()).unwrap())
        .map(|f| {
            let path = f.unwrap().path();
            path.strip_prefix(&repo).unwrap().display().to_string()
        })
        .filter(|f| f.ends_with(".yaml") || f.ends_with(".yml"))
        .collect();
    shipped.sort();
    tested.sort();
    assert_eq!(
        shipped, tested,
        "a sequence in sequences/ without a plan test"
    );
}

/// `text` with what differs between runs written as placeholders: AWS ids (`i-…`, `vol-…`,
/// hosted zones, ARNs), addresses, the region, the test's prefix and its state directory.
fn stable(world: &World, text: &str) -> String {
    let text = text
        .replace(world.state.path().to_str().unwrap(), "$STATE")
        .replace(world.dir.path().to_str().unwrap(), "$DIR")
        .replace(&world.region, "$REGION")
        .replace(&world.prefix, "$PREFIX");
    let mut out = String::new();
    for word in text.split_inclusive(|c: char| c.is_whitespace() || ",()[]`'\"".contains(c)) {
        let (token, end) = word.split_at(
            word.trim_end_matches(|c: char| c.is_whitespace() || ",()[]`'\"".contains(c))
                .len(),
        );
        let placeholder = [
            "i-",
            "vol-",
            "sg-",
            "snap-",
            "eipalloc-",
            "eni-",
            "subnet-",
            "vpc-",
        ]
        .iter()
        .find(|p| {
            token.starts_with(*p)
                && token[p.len()..].chars().all(|c| c.is_ascii_hexdigit())
                && token.len() > p.len() + 4
        })
        .map(|p| format!("{p}…"));
        match placeholder {
            Some(id) => out.push_str(&id),
            None if token.starts_with("arn:aws:") => out.push_str("arn:aws:…"),
            None if token.split('.').count() == 4
                && token
                    .split('.')
                    .all(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit())) =>
            {
                out.push_str("$IP");
            }
            None => match token.split_once('/') {
                Some((zone, rest))
                    if zone.len() >= 10
                        && zone
                            .chars()
                            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()) =>
                {
                    out.push_str(&format!("$ZONE/{rest}"));
                }
                _ => out.push_str(token),
            },
        }
        out.push_str(end);
    }
    out
}

#[test]
fn ctrl_c_while_validating_exits_3_and_the_next_apply_revalidates() {
    let world = World::new("td-sigint");
    let id = world.instance(&format!("{}-draining", world.prefix), &[], false);
    let gate = world.dir.path().join("drained");
    let sequence = world.sequence("sigint", &format!(
        "allowed_accounts: [\"{{account}}\"]\nregion: {{region}}\ndecommission_sequence:\n  drain:\n    - action: stop_instances\n      targets: [{id}]\n      validation: {{ check: no_active_connections, command: \"test -f {}\", interval: 100ms, timeout: 10m }}\n",
        gate.display()
    ));
    let seq = sequence.to_str().unwrap();
    let child = world.spawn(&["apply", seq, "--yes"]);
    wait_until("the validation polls", Duration::from_secs(60), || {
        world
            .audit()
            .iter()
            .filter(|r| r.service == "command")
            .count()
            >= 2
    });
    let interrupted = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("interrupted while validating"),
        "{}",
        text(&out)
    );
    std::fs::write(&gate, "").unwrap();
    let resumed = world.run(&["apply", seq, "--yes"]);
    assert_eq!(resumed.status.code(), Some(0), "{}", text(&resumed));
    let stops = world
        .audit()
        .iter()
        .filter(|r| r.operation == "StopInstances")
        .count();
    assert_eq!(
        stops, 1,
        "the resumed run re-validated without stopping again"
    );
}

/// On a terminal (a pty from util-linux's `script`), each step is confirmed; an irreversible one
/// only by typing its name.
#[test]
fn a_terminal_confirms_each_step_and_types_the_name_of_an_irreversible_one() {
    let world = World::new("td-tty");
    let id = world.instance(&format!("{}-confirmed", world.prefix), &[], false);
    let sequence = world.sequence("tty", &format!(
        "allowed_accounts: [\"{{account}}\"]\nregion: {{region}}\ndecommission_sequence:\n  quiet:\n    - action: stop_instances\n      targets: [{id}]\n  gone:\n    - action: terminate_instances\n      targets: [{id}]\n"
    ));
    let on_terminal = |answers: &str| {
        let command = world.command(&[]);
        let shell = format!("{} apply {}", support::BIN, sequence.display());
        let mut script = std::process::Command::new("script");
        script
            .args(["-qec", &shell, "/dev/null"])
            .envs(command.get_envs().filter_map(|(k, v)| Some((k, v?))))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = script.spawn().expect("util-linux `script` makes a pty");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(answers.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let first = on_terminal("y\ngone-please\n");
    assert_eq!(first.status.code(), Some(3), "{}", text(&first));
    assert!(
        String::from_utf8_lossy(&first.stdout).contains("type the step name to proceed"),
        "{}",
        text(&first)
    );
    assert_eq!(
        world.instance_state(&id),
        "stopped",
        "the first step was confirmed with y"
    );
    let second = on_terminal("gone\n");
    assert_eq!(second.status.code(), Some(0), "{}", text(&second));
    assert_eq!(world.instance_state(&id), "terminated");
}

#[test]
fn a_terminated_namesake_is_not_a_target_but_an_id_still_is() {
    let world = World::new("td-namesake");
    let name = format!("{}-web", world.prefix);
    let old = world.instance(&name, &[], false);
    world
        .runtime
        .block_on(world.ec2.terminate_instances().instance_ids(&old).send())
        .unwrap();
    let replacement = world.instance(&name, &[], false);
    let sequence = world.sequence("namesake", &format!(
        "allowed_accounts: [\"{{account}}\"]\nregion: {{region}}\ndecommission_sequence:\n  stop:\n    - action: stop_instances\n      targets: [{name}]\n"
    ));
    let out = world.run(&["apply", sequence.to_str().unwrap(), "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(&old),
        "the terminated namesake is not planned: {}",
        text(&out)
    );
    assert_eq!(world.instance_state(&replacement), "stopped");
}

#[test]
fn a_closed_stdout_is_not_a_failure() {
    let world = World::new("td-pipe");
    let sequence = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../sequences/legacy-metrics/decommission.yaml");
    let (exit, stderr) = sunset_test_support::run_with_closed_stdout(&mut world.command(&[
        "status",
        sequence.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(exit, Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
