//! Stage 6: `sunset-teardown` plans a legacy fleet in the emulator and applies it step by step
//! through its wait gates.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};

use crate::{say, workspace_root};

use super::*;

pub(super) fn teardown_stage() -> Result<()> {
    let binary = crate::build_binary("sunset-teardown", false)?;
    let fleet_builder = crate::build_example("sunset-teardown", "demo_fleet", false)?;
    let env = services::current_env()?;
    let built = Command::new(&fleet_builder)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .context("running the demo fleet builder")?;
    ensure!(
        built.status.success(),
        "building the demo fleet failed: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let stdout = String::from_utf8_lossy(&built.stdout);
    let region = stdout
        .lines()
        .find_map(|line| line.strip_prefix("region="))
        .context("the fleet builder named no region")?
        .to_owned();
    say!(
        "built in region {region}: legacy-collector-1 and -2 (tag Group=legacy-collector-instances), prometheus-data-vol-1, an Elastic IP, legacy-metrics-lb, legacy-metrics.internal"
    );
    let state = workspace_root().join("target/sunset-demo/teardown-state");
    if state.exists() {
        std::fs::remove_dir_all(&state)?;
    }
    let sequence = "sequences/legacy-metrics/decommission.yaml";
    let run = |args: &[&str]| -> Result<Option<i32>> {
        say!("$ sunset-teardown {}", args.join(" "));
        let status = Command::new(&binary)
            .args(args)
            .current_dir(workspace_root())
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("AWS_REGION", &region)
            .env("SUNSET_STATE_DIR", &state)
            .status()
            .context("running sunset-teardown")?;
        Ok(status.code())
    };
    ensure!(run(&["plan", sequence])? == Some(0), "plan failed");
    // The sequence waits 24h and 1h between steps; --max-wait caps that for the demo.
    let wait = Duration::from_secs(3);
    for _ in 0..5 {
        match run(&["apply", sequence, "--yes", "--max-wait", "3s"])? {
            Some(0) => {
                ensure!(run(&["status", sequence])? == Some(0), "status failed");
                say!(
                    "audit log and inventory: {}",
                    state.join("teardown").display()
                );
                return Ok(());
            }
            Some(3) => {
                say!("exit 3: a wait gate; the demo waits {wait:?} and runs apply again");
                std::thread::sleep(wait);
            }
            other => anyhow::bail!("apply failed (exit {other:?})"),
        }
    }
    anyhow::bail!("apply did not finish within 5 runs")
}
