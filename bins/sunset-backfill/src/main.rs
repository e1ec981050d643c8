//! Entry point: parse, set up tracing, run, map the outcome to an exit code. A first Ctrl-C or
//! SIGTERM finishes the current batch and exits 3; a second one aborts at once (the open
//! transaction rolls back, so nothing is lost either way).

use std::process::ExitCode;

use clap::Parser;
use sunset_backfill::{Args, run};
use sunset_cli::Runtime;

fn main() -> ExitCode {
    let args = Args::parse();
    sunset_cli::init_tracing(args.global.verbosity);
    sunset_cli::run_with_interrupts(
        Runtime::CurrentThread,
        "stopping after the current batch",
        |shutdown| run(args, shutdown),
    )
}
