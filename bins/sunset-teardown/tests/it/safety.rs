//! Safety under misuse, judged by the emulator's own state and the audit log: a restarted
//! attempt never reuses an earlier attempt's snapshot, rollback returns each target to its state
//! before apply and touches nothing else, an interrupted command is not sent twice, a checkpoint
//! is not resumed in another region, a name matching a fleet is refused, and secrets from the
//! environment stay out of every file and every output.

use crate::support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use support::{Names, World, legacy_service, mutations, text, wait_until};

fn operations<'a>(done: &'a [(String, String)], operation: &str) -> Vec<&'a str> {
    done.iter()
        .filter(|(op, _)| op == operation)
        .map(|(_, id)| id.as_str())
        .collect()
}

#[test]
fn a_restarted_attempt_takes_a_new_snapshot_instead_of_reusing_the_last_one() {
    let world = World::new("td-attempt");
    let names = Names::prefixed(&world.prefix);
    let fleet = world.fleet(&names);
    let sequence = world.sequence(
        "attempts",
        &format!(
            r#"allowed_accounts: ["{{account}}"]
region: {{region}}
decommission_sequence:
  keep:
    - action: snapshot_volumes
      targets: [{volume}]
      validation: snapshot_completed
  quiesce:
    - action: stop_instances
      targets: [{c1}]
"#,
            volume = names.volume,
            c1 = names.collectors[0],
        ),
    );
    let seq = sequence.to_str().unwrap();
    let first = world.run(&["apply", seq, "--yes"]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    let first_snapshot = world.snapshots_of(&fleet.data_volume).remove(0);
    let rollback = world.run(&["rollback", seq, "--yes"]);
    assert_eq!(rollback.status.code(), Some(0), "{}", text(&rollback));
    assert_eq!(world.instance_state(&fleet.collectors[0]), "running");
    // The collector writes again after the rollback; the volume now holds data the first
    // snapshot does not. The restart, as the tool advises, must snapshot it anew.
    let second = world.run(&["apply", seq, "--yes", "--restart"]);
    assert_eq!(second.status.code(), Some(0), "{}", text(&second));

    let done = mutations(&world.audit());
    assert_eq!(
        operations(&done, "CreateSnapshot"),
        [fleet.data_volume.as_str(), fleet.data_volume.as_str()],
        "one CreateSnapshot per attempt: {done:?}"
    );
    let snapshots = world.snapshots_of(&fleet.data_volume);
    assert_eq!(snapshots.len(), 2, "{snapshots:?}");
    let out = world.run(&["status", seq, "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let recorded = status["state"]["steps"][0]["actions"][0]["outputs"][&fleet.data_volume]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(snapshots.contains(&recorded), "{recorded} in {snapshots:?}");
    assert_ne!(
        recorded, first_snapshot,
        "the new attempt records its own snapshot"
    );
}

#[test]
fn rollback_returns_each_instance_to_its_state_before_apply() {
    let world = World::new("td-before");
    let role = format!("{}-pair", world.prefix);
    let running = world.instance(&format!("{}-a", world.prefix), &[("Role", &role)], false);
    let stopped = world.instance(&format!("{}-b", world.prefix), &[("Role", &role)], false);
    world.runtime.block_on(async {
        world
            .ec2
            .stop_instances()
            .instance_ids(&stopped)
            .send()
            .await
            .unwrap();
    });
    wait_until(
        "the second instance is stopped",
        Duration::from_secs(30),
        || world.instance_state(&stopped) == "stopped",
    );
    let sequence = world.sequence(
        "pair",
        &format!(
            r#"allowed_accounts: ["{{account}}"]
region: {{region}}
decommission_sequence:
  quiesce:
    - action: stop_instances
      targets: ["tag:Role={role}"]
      validation: instance_stopped
"#
        ),
    );
    let seq = sequence.to_str().unwrap();
    let out = world.run(&["apply", seq, "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(world.instance_state(&running), "stopped");
    assert_eq!(world.instance_state(&stopped), "stopped");

    let out = world.run(&["rollback", seq, "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(world.instance_state(&running), "running");
    assert_eq!(
        world.instance_state(&stopped),
        "stopped",
        "was stopped before apply, so rollback leaves it stopped: {}",
        text(&out)
    );
    let done = mutations(&world.audit());
    assert_eq!(operations(&done, "StopInstances"), [running.as_str()]);
    assert_eq!(operations(&done, "StartInstances"), [running.as_str()]);
}

/// A one-step sequence whose `command` notes each time it is sent in `runs`, then waits until
/// `gate` exists.
struct Hook {
    sequence: std::path::PathBuf,
    runs: std::path::PathBuf,
    gate: std::path::PathBuf,
}

impl Hook {
    fn new(world: &World, idempotent: bool) -> Hook {
        let dir = world.dir.path();
        let (runs, gate) = (dir.join("runs"), dir.join("gate"));
        let sequence = world.sequence(
            "hook",
            &format!(
                r#"allowed_accounts: ["{{account}}"]
region: {{region}}
decommission_sequence:
  notify:
    - action: command
      idempotent: {idempotent}
      command: "echo sent >> {runs}; while [ ! -f {gate} ]; do sleep 0.1; done"
      timeout: 2m
"#,
                runs = runs.display(),
                gate = gate.display(),
            ),
        );
        Hook {
            sequence,
            runs,
            gate,
        }
    }

    fn seq(&self) -> &str {
        self.sequence.to_str().unwrap()
    }

    /// How many times the command was sent.
    fn sent(&self) -> usize {
        std::fs::read_to_string(&self.runs).map_or(0, |t| t.lines().count())
    }

    /// SIGKILLs an `apply` while its command runs, then opens the gate for the orphaned shell
    /// (still waiting on it: proof the kill landed mid-command).
    fn kill_apply_mid_command(&self, world: &World) {
        let mut child = world.spawn(&["apply", self.seq(), "--yes"]);
        wait_until("the command is running", Duration::from_secs(60), || {
            self.sent() == 1
        });
        child.kill().unwrap();
        child.wait().unwrap();
        std::fs::write(&self.gate, "").unwrap();
    }
}

#[test]
fn a_command_killed_while_it_ran_is_not_sent_again_without_rerun() {
    let world = World::new("td-rerun");
    let hook = Hook::new(&world, false);
    let plan = world.run(&["plan", hook.seq()]);
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan));
    assert!(
        String::from_utf8_lossy(&plan.stdout).contains("only with --rerun notify"),
        "the plan says what an interruption means: {}",
        text(&plan)
    );
    hook.kill_apply_mid_command(&world);

    let resumed = world.run(&["apply", hook.seq(), "--yes"]);
    assert_eq!(resumed.status.code(), Some(1), "{}", text(&resumed));
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(
        stderr.contains("--rerun notify") && stderr.contains("interrupted"),
        "{}",
        text(&resumed)
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(hook.sent(), 1);

    let forced = world.run(&["apply", hook.seq(), "--yes", "--rerun", "notify"]);
    assert_eq!(forced.status.code(), Some(0), "{}", text(&forced));
    assert_eq!(hook.sent(), 2);
}

#[test]
fn an_idempotent_command_resumes_without_rerun() {
    let world = World::new("td-idem");
    let hook = Hook::new(&world, true);
    hook.kill_apply_mid_command(&world);
    let resumed = world.run(&["apply", hook.seq(), "--yes"]);
    assert_eq!(resumed.status.code(), Some(0), "{}", text(&resumed));
    assert_eq!(hook.sent(), 2);
}

#[test]
fn a_checkpoint_made_in_one_region_is_not_resumed_in_another() {
    let world = World::new("td-region");
    let id = world.instance(&format!("{}-host", world.prefix), &[], false);
    // No `region:` in the sequence: the region comes from AWS_REGION, which can change.
    let sequence = world.sequence(
        "unpinned",
        &format!(
            r#"allowed_accounts: ["{{account}}"]
decommission_sequence:
  quiesce:
    - action: stop_instances
      targets: [{id}]
"#
        ),
    );
    let seq = sequence.to_str().unwrap();
    let plan = world.run(&["plan", seq]);
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan));
    let other = if world.region == "us-east-1" {
        "eu-north-1"
    } else {
        "us-east-1"
    };
    let moved = world
        .command(&["apply", seq, "--yes"])
        .env("AWS_REGION", other)
        .output()
        .unwrap();
    assert_eq!(moved.status.code(), Some(2), "{}", text(&moved));
    let stderr = String::from_utf8_lossy(&moved.stderr);
    assert!(
        stderr.contains(&world.region) && stderr.contains(other),
        "{}",
        text(&moved)
    );
    assert!(mutations(&world.audit()).is_empty());
    assert_eq!(world.instance_state(&id), "running");
    let out = world.run(&["status", seq, "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["state"]["steps"][0]["state"], "pending");
}

#[test]
fn a_name_that_matches_thirty_instances_is_refused_unless_expected() {
    let world = World::new("td-fleet");
    let role = format!("{}-workers", world.prefix);
    // Thirty instances carrying `Role=<role>`, none named `<role>`.
    let ids = world.instances("Role", &role, 30);
    let yaml = |expect: &str| {
        format!(
            r#"allowed_accounts: ["{{account}}"]
region: {{region}}
decommission_sequence:
  quiesce:
    - action: stop_instances
      targets: [{role}]{expect}
"#
        )
    };
    let unbounded = world.sequence("unbounded", &yaml(""));
    for command in ["plan", "apply"] {
        let out = world.run(&[command, unbounded.to_str().unwrap(), "--yes"]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("30 target(s) found, at most 20 (max_targets)")
                && stderr.contains("expect: N")
                && ids.iter().all(|id| stderr.contains(id.as_str()))
                && stderr.contains(&format!("Found: by tag Role={role}: ")),
            "refused with the whole list and how each was found: {}",
            text(&out)
        );
    }
    assert!(mutations(&world.audit()).is_empty());
    assert!(ids.iter().all(|id| world.instance_state(id) == "running"));

    let wrong = world.sequence("wrong", &yaml("\n      expect: 3"));
    let out = world.run(&["plan", wrong.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected exactly 3"));

    let expected = world.sequence("expected", &yaml("\n      expect: {min: 25, max: 30}"));
    let out = world.run(&["plan", expected.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("30 target(s), expected 25 to 30"),
        "{}",
        text(&out)
    );
}

/// Every file under `dir`, with its mode.
fn files_under(dir: &Path) -> Vec<(std::path::PathBuf, u32, bool)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        found.push((path.clone(), mode, meta.is_dir()));
        if meta.is_dir() {
            found.extend(files_under(&path));
        }
    }
    found
}

#[test]
fn a_secret_from_the_environment_is_in_no_file_and_no_output() {
    let world = World::new("td-secret");
    let (url, _) = legacy_service();
    let token = format!("tok-{}-9f2e41c7", world.prefix);
    let host = world.instance(&format!("{}-host", world.prefix), &[], false);
    let env_seen = world.dir.path().join("env-seen");
    let sequence = world.sequence(
        "secret",
        &format!(
            r#"allowed_accounts: ["{{account}}"]
region: {{region}}
decommission_sequence:
  drain:
    - action: http
      url: "{url}/drain?token=${{HOOK_TOKEN}}"
      method: POST
      expect_status: 202
  services:
    - action: stop_services
      targets: [{host}]
      command: "env > {env_seen}"
      env: [PASSED_ON]
  announce:
    - action: http
      url: "{url}/drain?token=${{HOOK_TOKEN}}&again=1"
      method: POST
      expect_status: 200
"#,
            env_seen = env_seen.display(),
        ),
    );
    let seq = sequence.to_str().unwrap();
    let run = |args: &[&str]| {
        world
            .command(args)
            .env("HOOK_TOKEN", &token)
            .env("PASSED_ON", "yes")
            .output()
            .unwrap()
    };
    let outputs = [
        run(&["plan", seq]),
        run(&["plan", seq, "--json"]),
        run(&["apply", seq, "--yes"]),
        run(&["apply", seq, "--yes", "--json"]),
        run(&["status", seq]),
        run(&["status", seq, "--json"]),
        run(&["rollback", seq, "--yes"]),
    ];
    assert_eq!(outputs[2].status.code(), Some(1), "{}", text(&outputs[2]));
    assert!(
        String::from_utf8_lossy(&outputs[2].stderr).contains("token=${HOOK_TOKEN}&again=1"),
        "the failure names the request by its template: {}",
        text(&outputs[2])
    );
    for output in &outputs {
        assert!(!text(output).contains(&token), "{}", text(output));
    }
    let state = files_under(world.state.path());
    assert!(state.iter().any(|(p, ..)| p.ends_with("audit.jsonl")));
    for (path, mode, is_dir) in &state {
        if !is_dir {
            let bytes = std::fs::read(path).unwrap();
            assert!(
                !String::from_utf8_lossy(&bytes).contains(&token),
                "{} holds the token",
                path.display()
            );
        }
        let wanted = if *is_dir { 0o700 } else { 0o600 };
        assert_eq!(*mode, wanted, "{} is {mode:o}", path.display());
    }
    let audit = world.audit();
    assert!(
        audit
            .iter()
            .any(|r| r.operation.contains("token=${HOOK_TOKEN}")),
        "the audit log keeps the template: {audit:?}"
    );

    let seen = std::fs::read_to_string(&env_seen).unwrap();
    let names: Vec<&str> = seen
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    assert!(seen.contains("PASSED_ON=yes"), "{seen}");
    assert!(names.contains(&"PATH") && names.contains(&"SUNSET_TARGET_ID"));
    for kept_out in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "DATABASE_URL",
        "HOOK_TOKEN",
    ] {
        assert!(
            !names.contains(&kept_out),
            "{kept_out} reached the command: {seen}"
        );
    }
}

/// Termination protection has no batch form, so it is read per instance, several at a time: one
/// protected instance among 200 still stops the step before any change, and the emulator saw
/// each of the 200 asked about exactly once.
#[test]
fn a_protected_instance_among_200_stops_the_step() {
    let world = World::new("td-200");
    let group = format!("{}-fleet", world.prefix);
    let fleet = world.instances("Group", &group, 199);
    let guarded = world.instance(
        &format!("{}-guarded", world.prefix),
        &[("Group", &group)],
        true,
    );
    let sequence = world.sequence(
        "fleet",
        &format!(
            r#"allowed_accounts: ["{{account}}"]
region: {{region}}
decommission_sequence:
  terminate_fleet:
    - action: terminate_instances
      targets: [{group}]
      expect: 200
"#
        ),
    );
    let out = world.run(&["apply", sequence.to_str().unwrap(), "--yes", "-q"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "step `terminate_fleet` stopped before any change: instance {guarded} has termination protection on"
        )),
        "{stderr}"
    );
    assert!(mutations(&world.audit()).is_empty(), "nothing was changed");
    let asked = world
        .emulator
        .requests()
        .iter()
        .filter(|r| r.operation == "DescribeInstanceAttribute")
        .count();
    assert_eq!(asked, 200, "each instance asked about once");
    assert!(
        world.emulator.mutations().is_empty(),
        "no mutating request reached the emulator"
    );
    for id in fleet.iter().step_by(40).chain([&guarded]) {
        assert_eq!(world.instance_state(id), "running", "{id}");
    }
}
