//! Entry point: parse, set up tracing, run, map the outcome to an exit code. A first Ctrl-C or
//! SIGTERM stops `generate` before anything is written (exit 3; a scratch database left behind
//! is dropped by the next run); a second aborts.

use std::process::ExitCode;

use clap::Parser;
use sunset_cli::Runtime;
use sunset_drop_column::{Args, run};

fn main() -> ExitCode {
    let args = Args::parse();
    sunset_cli::init_tracing(args.global.verbosity);
    sunset_cli::run_with_interrupts(
        Runtime::MultiThread,
        "stopping before anything is written",
        |stop| run(args, stop),
    )
}
