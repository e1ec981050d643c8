//! Entry point: parse, set up tracing, run, map the outcome to an exit code. A first Ctrl-C or
//! SIGTERM stops after the call in flight (the checkpoint says where; exit 3); a second aborts.

use std::process::ExitCode;

use clap::Parser;
use sunset_cli::Runtime;
use sunset_teardown::{Args, run};

fn main() -> ExitCode {
    let args = Args::parse();
    sunset_cli::init_tracing(args.global.verbosity);
    sunset_cli::run_with_interrupts(
        Runtime::MultiThread,
        "stopping after the call in flight",
        |stop| run(args, stop),
    )
}
