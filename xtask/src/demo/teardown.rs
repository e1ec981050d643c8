//! Stage 6: `sunset-teardown` plans a legacy fleet in the emulator and applies it step by step
//! through its wait gates. The fleet and the apply loop serve the cutover stage too.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};

use crate::{say, workspace_root};

use super::*;

/// A legacy fleet in a fresh region of the emulator, and how to run `sunset-teardown` on it.
pub(super) struct Fleet {
    binary: PathBuf,
    region: String,
    env: Vec<(&'static str, String)>,
}

impl Fleet {
    pub(super) fn build() -> Result<Fleet> {
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
        Ok(Fleet {
            binary,
            region,
            env,
        })
    }

    /// Plans `sequence`, then applies it until done: each exit 3 (a wait gate, capped by
    /// `--max-wait`) is followed by another apply. `extra` is the sequence's own environment.
    pub(super) fn plan_and_apply(
        &self,
        sequence: &str,
        state: &str,
        extra: &[(&str, String)],
    ) -> Result<()> {
        let state = workspace_root().join("target/sunset-demo").join(state);
        if state.exists() {
            std::fs::remove_dir_all(&state)?;
        }
        let run = |args: &[&str]| -> Result<Option<i32>> {
            say!("$ sunset-teardown {}", args.join(" "));
            let status = Command::new(&self.binary)
                .args(args)
                .current_dir(workspace_root())
                .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
                .envs(extra.iter().map(|(k, v)| (*k, v.as_str())))
                .env("AWS_REGION", &self.region)
                .env("SUNSET_STATE_DIR", &state)
                .status()
                .context("running sunset-teardown")?;
            Ok(status.code())
        };
        ensure!(run(&["plan", sequence])? == Some(0), "plan failed");
        let wait = Duration::from_secs(3);
        for _ in 0..5 {
            match run(&["apply", sequence, "--yes", "--max-wait", "3s"])? {
                Some(0) => {
                    ensure!(run(&["status", sequence])? == Some(0), "status failed");
                    say!(
                        "audit log, inventory and gate reports: {}",
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
}

pub(super) fn teardown_stage() -> Result<()> {
    // The sequence waits 24h and 1h between steps; --max-wait caps that for the demo.
    Fleet::build()?.plan_and_apply(
        "sequences/legacy-metrics/decommission.yaml",
        "teardown-state",
        &[],
    )
}
