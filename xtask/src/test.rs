//! `cargo xtask test`: what CI runs, and what a developer runs before pushing.

use std::process::{Command, ExitCode};

use anyhow::{Context, Result};

use crate::services::{self, Server};
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
    let mut env = services::current_env()?;
    env.extend(crate::runners::install()?);
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
    // The alert rules shipped under dashboards/: valid, and their unit tests hold.
    if !crate::prometheus::check_rules()? {
        say!("promtool found a problem in the alert rules under dashboards/");
        return Ok(ExitCode::FAILURE);
    }
    say!("running every test of the workspace (PostgreSQL: the system's server)");
    let args: Vec<&str> = [&["test", "--workspace"], locked]
        .concat()
        .into_iter()
        .chain(cargo_test_args.iter().map(String::as_str))
        .collect();
    let passed = cargo(&args, &env)?.success();
    // The teardown tests turned the emulator's recorder on; the second pass needs none of it.
    services::stop_emulator_recording()?;
    if !passed {
        return Ok(ExitCode::FAILURE);
    }
    say!(
        "running the tests of the packages that read PostgreSQL's catalog again, on PostgreSQL 18"
    );
    let packages = ON_EVERY_MAJOR.iter().flat_map(|package| ["-p", package]);
    let args: Vec<&str> = [&["test"], locked]
        .concat()
        .into_iter()
        .chain(packages)
        .chain(cargo_test_args.iter().map(String::as_str))
        .collect();
    let status = cargo(&args, &services::env_for(Server::Pg18)?)?;
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The packages whose tests depend on the catalog's shape, the server's SQL or its client
/// programs: run on each major. (Teardown's tests use PostgreSQL only for `sql` steps.)
/// (sunset-pg's own tests are libpq parsing and TLS, which the 18 build lacks.)
const ON_EVERY_MAJOR: [&str; 7] = [
    "sunset-checkpoint",
    "sunset-backfill-engine",
    "sunset-backfill",
    "sunset-drop-column-engine",
    "sunset-drop-column",
    "sunset-archive-engine",
    "sunset-archive",
];

fn cargo(args: &[&str], env: &[(&str, String)]) -> Result<std::process::ExitStatus> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    Command::new(&cargo)
        .args(args)
        .current_dir(workspace_root())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .status()
        .with_context(|| format!("could not run {cargo} {}", args.join(" ")))
}
