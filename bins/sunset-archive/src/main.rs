//! Entry point: parse, set up tracing, run, map the outcome to an exit code. A first Ctrl-C or
//! SIGTERM stops after the parts in flight are acknowledged and checkpointed (exit 3); a second
//! one aborts at once (the checkpoint holds every acknowledged part either way).

use std::process::ExitCode;

use clap::Parser;
use sunset_archive::{Args, run};
use sunset_cli::Runtime;

fn main() -> ExitCode {
    let args = Args::parse();
    sunset_cli::init_tracing(args.global.verbosity);
    sunset_cli::run_with_interrupts(
        Runtime::MultiThread,
        "stopping after the parts in flight",
        |stop| run(args, stop),
    )
}
