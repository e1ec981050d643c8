//! Developer tasks for the sunset workspace, run as `cargo xtask <task>`.
//! See <https://github.com/matklad/cargo-xtask/>.
//!
//! Everything a fresh machine needs (a throwaway PostgreSQL cluster, the moto AWS emulator in a
//! virtualenv) is installed and started from here, so the README's two commands work on a clean
//! clone with nothing installed by hand.

mod bench;
mod bench_archive;
mod bench_drop_column;
mod bench_load;
mod bench_teardown;
mod bench_validate;
mod demo;
mod exporters;
mod moto;
mod postgres;
mod process;
mod prometheus;
mod runners;
mod services;
mod test;
mod tidy;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Developer tasks for sunset: services, test, demo, bench")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Start, stop or inspect the services tests and the demo run against.
    Services {
        #[command(subcommand)]
        action: ServicesAction,
    },
    /// Services up, format and lint checks, every test of the workspace, services down.
    ///
    /// Exits with the status of the checks and tests. `.ci/run` runs exactly this.
    Test {
        /// Skip `cargo fmt --check` and `cargo clippy` (a faster local loop; CI never skips them).
        #[arg(long)]
        no_lint: bool,
        /// Extra arguments for `cargo test` (for example a test name filter).
        #[arg(last = true)]
        cargo_test_args: Vec<String>,
    },
    /// Services up, then the end-to-end story on demo data.
    Demo,
    /// Installs the migration runners the drop-column tests apply migrations with (dbmate,
    /// Alembic, Django, ActiveRecord) under `target/`; `test` does it too.
    Runners,
    /// Benchmarks, side by side with the alternative a user would otherwise use.
    Bench {
        #[command(subcommand)]
        what: BenchTarget,
    },
}

#[derive(Subcommand)]
enum BenchTarget {
    /// sunset-backfill (1 and 2 workers) vs a PL/pgSQL keyset loop vs a single UPDATE.
    Backfill {
        /// Rows in the benchmark table.
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
        /// Rounds of every contender, interleaved; the report shows each one's median.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Instead: p50/p99 latency of pgbench at a fixed rate alone and during each run.
        #[arg(long)]
        under_load: bool,
        /// The fixed rate of pgbench with --under-load (transactions per second).
        #[arg(long, default_value_t = 300)]
        tps: u32,
        /// Instead: `validate` of a copy-mode run vs one EXCEPT query over the same columns.
        #[arg(long, conflicts_with = "under_load")]
        validate: bool,
    },
    /// sunset-archive vs `tar | pigz` and `tar -czf` (local) and `tar -czf - | aws s3 cp -` (S3) on 1 GiB.
    Archive,
    /// sunset-teardown plan and apply over 1,000 instances vs a per-instance loop, with API calls per action.
    Teardown,
    /// sunset-drop-column check on 2,000 tables and 500 views vs `pg_dump --schema-only | grep`.
    DropColumn,
}

#[derive(Subcommand)]
enum ServicesAction {
    /// Start PostgreSQL (15 and 18), the AWS emulator and Prometheus (idempotent: running services
    /// are reused).
    Up,
    /// Stop what `up` started (a server from an external DATABASE_URL is never touched).
    Down,
    /// Print `export` lines for `eval "$(cargo xtask services env)"`.
    Env,
    /// Say what runs where.
    Status,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Services { action } => match action {
            ServicesAction::Up => services::up().map(|_| ExitCode::SUCCESS),
            ServicesAction::Down => services::down().map(|()| ExitCode::SUCCESS),
            ServicesAction::Env => services::print_env().map(|()| ExitCode::SUCCESS),
            ServicesAction::Status => services::print_status().map(|()| ExitCode::SUCCESS),
        },
        Task::Test {
            no_lint,
            cargo_test_args,
        } => test::run(no_lint, &cargo_test_args),
        Task::Demo => demo::run().map(|()| ExitCode::SUCCESS),
        Task::Runners => runners::install().map(|_| ExitCode::SUCCESS),
        Task::Bench {
            what:
                BenchTarget::Backfill {
                    rows,
                    rounds,
                    under_load,
                    tps,
                    validate,
                },
        } => if validate {
            bench_validate::validate(rows)
        } else if under_load {
            bench_load::under_load(rows, tps)
        } else {
            bench::backfill(rows, rounds)
        }
        .map(|()| ExitCode::SUCCESS),
        Task::Bench {
            what: BenchTarget::Archive,
        } => bench_archive::archive().map(|()| ExitCode::SUCCESS),
        Task::Bench {
            what: BenchTarget::Teardown,
        } => bench_teardown::teardown().map(|()| ExitCode::SUCCESS),
        Task::Bench {
            what: BenchTarget::DropColumn,
        } => bench_drop_column::drop_column().map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            #[allow(clippy::print_stderr, reason = "the task runner's error report")]
            {
                eprintln!("error: {error:#}");
            }
            ExitCode::FAILURE
        }
    }
}

/// The workspace root, whatever directory cargo was run from.
fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace root")
        .to_owned()
}

/// Builds one of the workspace's binaries (debug, or release for benchmarks) and returns its path.
fn build_binary(package: &str, release: bool) -> anyhow::Result<PathBuf> {
    cargo_build(&["--package", package], release)?;
    let profile = if release { "release" } else { "debug" };
    Ok(workspace_root().join("target").join(profile).join(package))
}

/// Builds one of a package's examples (demo and bench helpers) and returns its path.
fn build_example(package: &str, example: &str, release: bool) -> anyhow::Result<PathBuf> {
    cargo_build(&["--package", package, "--example", example], release)?;
    let profile = if release { "release" } else { "debug" };
    Ok(workspace_root()
        .join("target")
        .join(profile)
        .join("examples")
        .join(example))
}

fn cargo_build(what: &[&str], release: bool) -> anyhow::Result<()> {
    let mut args = vec!["build", "--quiet"];
    args.extend(what);
    if release {
        args.push("--release");
    }
    let status =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(&args)
            .current_dir(workspace_root())
            .status()
            .with_context(|| format!("cargo {}", args.join(" ")))?;
    anyhow::ensure!(status.success(), "cargo {} failed", args.join(" "));
    Ok(())
}

/// Where services keep their state, data and logs: inside `target/`, so `cargo clean` resets them.
fn services_dir() -> PathBuf {
    workspace_root().join("target").join("sunset-services")
}

/// Progress messages of the task runner go to stderr; stdout is for `services env` output.
macro_rules! say {
    ($($arg:tt)*) => {{
        #[allow(clippy::print_stderr, reason = "xtask reports progress on stderr")]
        {
            eprintln!("xtask: {}", format_args!($($arg)*));
        }
    }};
}
pub(crate) use say;
