//! Entry point: parse, set up tracing, run, map the outcome to an exit code. An interrupt while
//! the scratch database is in use stops there; the scratch database is dropped by the next run.

use std::process::ExitCode;

use clap::Parser;
use sunset_drop_column::{Args, run};

fn main() -> ExitCode {
    let args = Args::parse();
    sunset_cli::init_tracing(args.verbose, false);
    sunset_cli::run_with_interrupts("stopping", |_stop| run(args))
}
