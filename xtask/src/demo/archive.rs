//! Stage 5: `sunset-archive` takes a legacy config directory and the accounts table to S3 (the
//! emulator), then verifies, restores and compares them.

use std::process::Command;

use anyhow::{Context, Result, ensure};

use crate::{say, workspace_root};

use super::*;

/// Archives a legacy config directory and the accounts table to the emulator's S3 with progress
/// bars, verifies it deeply, restores it into a scratch schema and directory, and compares.
pub(super) async fn archive_stage(url: &str) -> Result<()> {
    let binary = crate::build_binary("sunset-archive", false)?;
    let dir = workspace_root().join("target/sunset-demo");
    let config = dir.join("legacy-collector");
    let restored = dir.join("restored");
    for old in [&config, &restored, &dir.join("state")] {
        if old.exists() {
            std::fs::remove_dir_all(old)?;
        }
    }
    std::fs::create_dir_all(config.join("conf.d"))?;
    std::fs::write(
        config.join("collector.yaml"),
        "interval: 10s\noutputs: [graphite]\n",
    )?;
    std::fs::write(
        config.join("conf.d/hosts.list"),
        (1..=5000)
            .map(|n| format!("legacy-host-{n}.internal\n"))
            .collect::<String>(),
    )?;
    #[cfg(unix)]
    std::os::unix::fs::symlink("collector.yaml", config.join("current.yaml"))?;
    let env = services::current_env()?;
    let endpoint = services::aws_endpoint()?;
    let bucket = "sunset-demo-archive";
    create_bucket(&endpoint, bucket)?;
    let name = format!("legacy-{}", std::process::id());
    let archive = format!("s3://{bucket}/legacy-metrics/{name}");
    let run = |args: &[&str]| -> Result<()> {
        say!("$ sunset-archive {}", args.join(" "));
        let status = Command::new(&binary)
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("DATABASE_URL", url)
            .env("SUNSET_STATE_DIR", dir.join("state"))
            .status()
            .context("running sunset-archive")?;
        ensure!(
            status.success(),
            "sunset-archive {} failed ({status})",
            args[0]
        );
        Ok(())
    };
    let config_arg = config.to_str().context("a UTF-8 path")?;
    run(&[
        "create",
        "--dest",
        &format!("s3://{bucket}/legacy-metrics"),
        "--name",
        &name,
        "--dir",
        config_arg,
        "--table",
        "public.accounts",
        "--part-size",
        "5MiB",
    ])?;
    run(&["verify", &archive, "--deep"])?;
    run(&["list", &format!("s3://{bucket}/legacy-metrics")])?;
    let restored_arg = restored.to_str().context("a UTF-8 path")?;
    run(&[
        "restore",
        &archive,
        "--to",
        restored_arg,
        "--into-schema",
        "restored",
    ])?;
    let client = connect(url).await?;
    let differing: i64 = client
        .query_one(
            "SELECT count(*) FROM ((SELECT * FROM public.accounts EXCEPT ALL SELECT * FROM restored.accounts)
             UNION ALL (SELECT * FROM restored.accounts EXCEPT ALL SELECT * FROM public.accounts)) d",
            &[],
        )
        .await?
        .get(0);
    ensure!(differing == 0, "{differing} rows differ after the restore");
    for file in ["collector.yaml", "conf.d/hosts.list"] {
        let original = std::fs::read(config.join(file))?;
        let back = std::fs::read(restored.join("files/legacy-collector").join(file))?;
        ensure!(original == back, "{file} differs after the restore");
    }
    say!(
        "compared: the restored table equals public.accounts row for row, and the config files byte for byte"
    );
    Ok(())
}
