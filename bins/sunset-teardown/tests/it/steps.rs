//! The actions and validations the legacy-metrics example does not use: deleting volumes,
//! addresses and groups, starting instances, and the local `http`, `sql`, `command` and
//! `archive` steps with their probes.

use crate::support;

use std::sync::atomic::Ordering;

use support::{Names, World, legacy_service, mutations, text};

#[test]
fn http_sql_command_and_archive_steps_run_with_their_probes() {
    let world = World::new("td-local");
    let (url, health_checks) = legacy_service();
    let scratch = world.dir.path();
    let config = scratch.join("legacy-config");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(config.join("collector.toml"), "interval = \"15s\"\n").unwrap();
    let schema = world.prefix.replace('-', "_");
    let host = world.instance(&format!("{}-host", world.prefix), &[], false);
    let sequence = world.sequence("local", &format!(
        r#"allowed_accounts: ["{{account}}"]
region: {{region}}
decommission_sequence:
  drain:
    - action: http
      url: {url}/drain
      method: POST
      expect_status: 202
      validation: {{ check: http_status, url: "{url}/health", expect_status: 503, interval: 100ms, timeout: 30s }}
  record:
    - action: sql
      sql: "CREATE SCHEMA {schema}; CREATE TABLE {schema}.retired (name text); INSERT INTO {schema}.retired VALUES ('legacy-metrics')"
      database_url: ${{DATABASE_URL}}
      validation: {{ check: no_active_connections, sql: "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'legacy-collector'", database_url: "${{DATABASE_URL}}" }}
  services:
    - action: stop_services
      targets: [{host}]
      command: "echo $SUNSET_TARGET_ID $SUNSET_TARGET_NAME >> {stopped}"
      validation: {{ check: sql_returns_zero, sql: "SELECT count(*) FROM {schema}.retired WHERE name <> 'legacy-metrics'", database_url: "${{DATABASE_URL}}" }}
  note:
    - action: command
      command: "echo retired > {marker}"
      validation: {{ check: command_succeeds, command: "grep -q retired {marker}" }}
  keep:
    - action: archive
      dirs: [{config}]
      dest: {archives}
"#,
        marker = scratch.join("marker").display(),
        stopped = scratch.join("stopped").display(),
        config = config.display(),
        archives = scratch.join("archives").display(),
    ));
    let seq = sequence.to_str().unwrap();
    let plan = world.run(&["plan", seq]);
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan));
    assert!(
        String::from_utf8_lossy(&plan.stdout).contains(&format!("then: {url}/health answers 503")),
        "{}",
        text(&plan)
    );

    let out = world.run(&["apply", seq, "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        health_checks.load(Ordering::SeqCst) >= 3,
        "the health check was polled until it answered 503"
    );
    assert_eq!(
        std::fs::read_to_string(scratch.join("marker")).unwrap(),
        "retired\n"
    );
    // stop_services ran its command once for its one target, with the target in its environment.
    let host_name = format!("{}-host", world.prefix);
    assert_eq!(
        std::fs::read_to_string(scratch.join("stopped")).unwrap(),
        format!("{host} {host_name}\n"),
        "the stop command ran once, for {host}"
    );
    let archived: Vec<String> = std::fs::read_dir(scratch.join("archives"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(archived.len(), 1, "{archived:?}");
    assert!(
        archived[0].contains("-keep-"),
        "named after the run, step and attempt: {archived:?}"
    );
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            scratch
                .join("archives")
                .join(&archived[0])
                .join("manifest.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert!(
        manifest["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "file"),
        "the archive lists the config directory's files: {manifest}"
    );

    let audit = world.audit();
    let local: Vec<(&str, bool)> = audit
        .iter()
        .filter(|r| ["http", "sql", "command", "archive"].contains(&r.service.as_str()))
        .map(|r| (r.service.as_str(), r.mutating))
        .collect();
    for expected in [
        ("http", true),
        ("http", false),
        ("sql", true),
        ("sql", false),
        ("command", true),
        ("command", false),
        ("archive", true),
    ] {
        assert!(
            local.contains(&expected),
            "audit lacks {expected:?}: {local:?}"
        );
    }
    let again = world.run(&["apply", seq, "--yes", "--restart"]);
    assert_eq!(
        again.status.code(),
        Some(1),
        "the sql step is not idempotent and says so: {}",
        text(&again)
    );
}

#[test]
fn volumes_addresses_and_groups_are_removed_and_instances_started() {
    let world = World::new("td-delete");
    let names = Names::prefixed(&world.prefix);
    let fleet = world.fleet(&names);
    let spare_name = format!("{}-spare", world.prefix);
    let spare_group = world.runtime.block_on(async {
        world
            .ec2
            .create_security_group()
            .group_name(format!("{}-spare", world.prefix))
            .description("unused")
            .send()
            .await
            .unwrap()
            .group_id()
            .unwrap()
            .to_owned()
    });
    let sequence = world.sequence(
        "delete",
        &format!(
            r#"allowed_accounts: ["{{account}}"]
region: {{region}}
decommission_sequence:
  retire_second:
    - action: terminate_instances
      targets: [{c2}]
    - action: release_addresses
  drop_data:
    - action: stop_instances
      targets: [{c1}]
    - action: detach_volumes
    - action: delete_volumes
  restart_first:
    - action: start_instances
      targets: [{c1}]
      validation: instance_running
  groups:
    - action: delete_security_groups
      targets: ["{spare}"]
      validation: security_group_gone
"#,
            c1 = names.collectors[0],
            c2 = names.collectors[1],
            spare = spare_name
        ),
    );
    let seq = sequence.to_str().unwrap();
    let plan = world.run(&["plan", seq]);
    let shown = String::from_utf8_lossy(&plan.stdout);
    assert!(
        shown.contains(&fleet.address)
            && shown.contains("the Elastic IPs of the instances of `terminate_instances`"),
        "{}",
        text(&plan)
    );
    assert!(
        shown.contains("the data volumes (not the root volume)")
            && shown.contains(&fleet.data_volume),
        "{}",
        text(&plan)
    );

    let out = world.run(&["apply", seq, "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(world.instance_state(&fleet.collectors[0]), "running");
    assert_eq!(world.instance_state(&fleet.collectors[1]), "terminated");
    assert!(!world.group_exists(&spare_group));
    let (volumes, addresses) = world.runtime.block_on(async {
        let volumes = world
            .ec2
            .describe_volumes()
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("volume-id")
                    .values(&fleet.data_volume)
                    .build(),
            )
            .send()
            .await
            .unwrap()
            .volumes()
            .len();
        let addresses = world
            .ec2
            .describe_addresses()
            .send()
            .await
            .unwrap()
            .addresses()
            .iter()
            .filter(|a| a.allocation_id() == Some(fleet.address.as_str()))
            .count();
        (volumes, addresses)
    });
    assert_eq!(
        (volumes, addresses),
        (0, 0),
        "the volume is deleted and the address released"
    );
    let audit = world.audit();
    for operation in [
        "TerminateInstances",
        "ReleaseAddress",
        "StopInstances",
        "DetachVolume",
        "DeleteVolume",
        "StartInstances",
        "DeleteSecurityGroup",
    ] {
        let calls = audit
            .iter()
            .filter(|r| r.mutating && r.result == "ok" && r.operation == operation)
            .count();
        assert_eq!(calls, 1, "{operation} once: {:?}", mutations(&audit));
    }
    support::assert_emulator_saw_each_audited_mutation_once(&world);
}

#[test]
fn apply_shows_the_plan_once_per_run_and_quiet_only_step_lines() {
    let world = World::new("td-quiet");
    let host = world.instance(&format!("{}-host", world.prefix), &[], false);
    let sequence = world.sequence(
        "quiet",
        &format!(
            r#"allowed_accounts: ["{{account}}"]
region: {{region}}
decommission_sequence:
  stop:
    - action: stop_instances
      targets: [{host}]
      wait_time: 1h
  note:
    - action: command
      command: "true"
"#
        ),
    );
    let seq = sequence.to_str().unwrap();
    // Quiet: the step lines and the wait, no plan and no per-action lines.
    let first = world.run(&["apply", seq, "--yes", "-q"]);
    assert_eq!(first.status.code(), Some(3), "{}", text(&first));
    let stdout = String::from_utf8_lossy(&first.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(lines[0].ends_with("step `stop`"), "{stdout}");
    assert!(lines[1].ends_with("step `stop` validated"), "{stdout}");
    assert!(
        lines[2].contains("step `note` becomes eligible at"),
        "{stdout}"
    );
    // The plan is shown once per run (here it was, to -q): a resumed apply says so instead of
    // printing thousands of plan lines again.
    let second = world.run(&["apply", seq, "--yes"]);
    assert_eq!(second.status.code(), Some(3), "{}", text(&second));
    let stdout = String::from_utf8_lossy(&second.stdout);
    assert!(stdout.contains("resuming the run planned at"), "{stdout}");
    assert!(!stdout.contains(&host), "no plan again: {stdout}");
    // `plan` pins the steps not started anew, so the next apply shows the plan again.
    let plan = world.run(&["plan", seq]);
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan));
    let third = world.run(&["apply", seq, "--yes"]);
    assert_eq!(third.status.code(), Some(3), "{}", text(&third));
    let stdout = String::from_utf8_lossy(&third.stdout);
    assert!(
        stdout.contains(&host),
        "the plan names the instance: {stdout}"
    );
    assert!(!stdout.contains("resuming the run planned at"), "{stdout}");
}
