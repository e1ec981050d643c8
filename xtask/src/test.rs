//! `cargo xtask test`: what CI runs, and what a developer runs before pushing.

use std::process::{Command, ExitCode};

use anyhow::{Context, Result};

use crate::services;
use crate::{say, workspace_root};

pub(crate) fn run(no_lint: bool, cargo_test_args: &[String]) -> Result<ExitCode> {
    let started = services::up()?;
    let outcome = checks_and_tests(no_lint, cargo_test_args);
    // Services come down whatever happened, but only the ones this run started.
    if let Err(error) = services::stop(started) {
        say!("could not stop the services: {error:#}");
    }
    outcome
}

fn checks_and_tests(no_lint: bool, cargo_test_args: &[String]) -> Result<ExitCode> {
    let env = services::current_env()?;
    let in_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    let locked: &[&str] = if in_ci { &["--locked"] } else { &[] };
    if !no_lint || in_ci {
        for (what, args) in [
            ("cargo fmt --check", vec!["fmt", "--all", "--", "--check"]),
            (
                "cargo clippy",
                [
                    &["clippy", "--workspace", "--all-targets"],
                    locked,
                    &["--", "-D", "warnings"],
                ]
                .concat(),
            ),
        ] {
            say!("running {what}");
            if !cargo(&args, &[])?.success() {
                say!("{what} failed");
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    say!("running every test of the workspace");
    let args: Vec<&str> = [&["test", "--workspace"], locked]
        .concat()
        .into_iter()
        .chain(cargo_test_args.iter().map(String::as_str))
        .collect();
    let status = cargo(&args, &env)?;
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn cargo(args: &[&str], env: &[(&str, String)]) -> Result<std::process::ExitStatus> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    Command::new(&cargo)
        .args(args)
        .current_dir(workspace_root())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .status()
        .with_context(|| format!("could not run {cargo} {}", args.join(" ")))
}
