//! `cargo xtask bench teardown`: `sunset-teardown plan` and `apply` over 1,000 instances in the
//! emulator, with the API calls per action from the audit log, side by side with the script an
//! operator would otherwise write (one stop and one terminate call per instance, here with boto3
//! from the emulator's virtualenv, which is faster than one `aws` process per instance).
//!
//! The debug build is measured: a release build of the EC2 SDK takes ~20 minutes on 2 cores, and
//! the time is the emulator's, not sunset's (sunset makes a handful of calls).

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, ensure};

use crate::{say, services, workspace_root};

const INSTANCES: u32 = 1000;

const NAIVE_LOOP: &str = r#"
import boto3, os, sys, time
ec2 = boto3.client("ec2", region_name=sys.argv[1], endpoint_url=os.environ["AWS_ENDPOINT_URL"])
ids = [i["InstanceId"]
       for page in ec2.get_paginator("describe_instances").paginate(Filters=[{"Name": "tag:Group", "Values": ["bench-fleet"]}])
       for r in page["Reservations"] for i in r["Instances"]]
started = time.time()
for i in ids:
    ec2.stop_instances(InstanceIds=[i])
for i in ids:
    ec2.terminate_instances(InstanceIds=[i])
print(f"{time.time() - started:.3f} {2 * len(ids)}")
"#;

pub(crate) fn teardown() -> Result<()> {
    services::up()?;
    let env = services::current_env()?;
    say!("building sunset-teardown and its fleet builder (debug: see the module docs)");
    let binary = crate::build_binary("sunset-teardown", false)?;
    let fleet_builder = crate::build_example("sunset-teardown", "demo_fleet", false)?;
    let root = workspace_root().join("target/sunset-bench/teardown");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root)?;
    let fleet = |what: &str| -> Result<String> {
        say!("creating {INSTANCES} instances for {what} in the emulator");
        let out = Command::new(&fleet_builder)
            .args(["--instances", &INSTANCES.to_string()])
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .context("running the fleet builder")?;
        ensure!(
            out.status.success(),
            "the fleet builder failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("region="))
            .map(str::to_owned)
            .context("the fleet builder named no region")
    };

    let region = fleet("sunset-teardown")?;
    let sequence = root.join("bench.yaml");
    std::fs::write(
        &sequence,
        "allowed_accounts: [\"123456789012\"]\nmax_targets: 1000\ndecommission_sequence:\n  stop:\n    - action: stop_instances\n      targets: [\"tag:Group=bench-fleet\"]\n  terminate:\n    - action: terminate_instances\n      targets: [\"tag:Group=bench-fleet\"]\n",
    )?;
    let state = root.join("state");
    let run = |args: &[&str]| -> Result<f64> {
        let started = Instant::now();
        let out = Command::new(&binary)
            .args(args)
            .arg(&sequence)
            .args(["--yes", "--json"])
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("AWS_REGION", &region)
            .env("SUNSET_STATE_DIR", &state)
            .output()
            .context("running sunset-teardown")?;
        ensure!(
            out.status.success(),
            "sunset-teardown {} failed: {}",
            args[0],
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(started.elapsed().as_secs_f64())
    };
    let plan_seconds = run(&["plan"])?;
    let apply_seconds = run(&["apply"])?;

    let mut calls: BTreeMap<(String, String, String), u64> = BTreeMap::new();
    let audit = std::fs::read_dir(state.join("teardown"))?
        .flatten()
        .map(|e| e.path().join("audit.jsonl"))
        .find(|p| p.exists())
        .context("no audit log")?;
    for line in std::fs::read_to_string(&audit)?.lines() {
        let record: serde_json::Value = serde_json::from_str(line)?;
        let text = |key: &str| record[key].as_str().unwrap_or("-").to_owned();
        *calls
            .entry((text("command"), text("action"), text("operation")))
            .or_default() += 1;
    }

    let naive_region = fleet("the per-instance loop")?;
    let python = crate::services_dir().join("moto-venv/bin/python");
    let out = Command::new(python)
        .args(["-c", NAIVE_LOOP, &naive_region])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .context("running the per-instance loop")?;
    ensure!(
        out.status.success(),
        "the per-instance loop failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let naive = String::from_utf8_lossy(&out.stdout);
    let mut fields = naive.split_whitespace();
    let naive_seconds: f64 = fields.next().context("no time")?.parse()?;
    let naive_calls: u64 = fields.next().context("no count")?.parse()?;

    let mut report = format!(
        "teardown of {INSTANCES} instances (stop, then terminate) in the AWS emulator\n\
         sunset-teardown plan   {plan_seconds:>7.2} s\n\
         sunset-teardown apply  {apply_seconds:>7.2} s  (safety checks, inventory, actions, validations)\n\
         per-instance loop      {naive_seconds:>7.2} s  ({naive_calls} calls, stop and terminate only: no checks, no inventory, no validation)\n\
         apply vs the loop: {:.2}x the loop's speed\n\nAPI calls by command, action and operation:\n",
        naive_seconds / apply_seconds
    );
    for ((command, action, operation), count) in &calls {
        report.push_str(&format!(
            "  {command:<6} {action:<22} {operation:<28} {count:>5}\n"
        ));
    }
    #[allow(clippy::print_stdout, reason = "the benchmark's report")]
    {
        print!("{report}");
    }
    Ok(())
}
