//! Entry point: parse, set up tracing, run, map the outcome to an exit code. A first Ctrl-C or
//! SIGTERM finishes the current batch and exits 3; a second one aborts at once (the open
//! transaction rolls back, so nothing is lost either way).

use std::process::ExitCode;

use clap::Parser;
use sunset_backfill::{Args, run};

fn main() -> ExitCode {
    let args = Args::parse();
    sunset_cli::init_tracing(args.verbosity);
    // One thread: the work is in PostgreSQL, and waking a connection task on another thread
    // for every batch added a measurable share of a batch's round trip.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            #[allow(clippy::print_stderr, reason = "nothing else can report this")]
            {
                eprintln!("error: cannot start the async runtime: {error}");
            }
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            let signal = async {
                match term.as_mut() {
                    Some(term) => {
                        tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term.recv() => {} }
                    }
                    None => drop(tokio::signal::ctrl_c().await),
                }
            };
            signal.await;
            tracing::warn!("stopping after the current batch (interrupt again to abort now)");
            let _ = stop.send(true);
            let _ = tokio::signal::ctrl_c().await;
            #[allow(
                clippy::exit,
                clippy::disallowed_methods,
                reason = "a second interrupt aborts at once; the open transaction rolls back"
            )]
            std::process::exit(130);
        });
        run(args, shutdown).await.into()
    })
}
