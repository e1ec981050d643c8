//! Entry point: parse, set up tracing, run, map the outcome to an exit code. A first Ctrl-C or
//! SIGTERM stops after the call in flight (the checkpoint says where; exit 3); a second aborts.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Parser;
use sunset_teardown::{Args, run};

fn main() -> ExitCode {
    let args = Args::parse();
    sunset_cli::init_tracing(args.verbose, false);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            sunset_cli::report_error(&format!("error: cannot start the async runtime: {error}"));
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            match term.as_mut() {
                Some(term) => {
                    tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term.recv() => {} }
                }
                None => drop(tokio::signal::ctrl_c().await),
            }
            tracing::warn!("stopping after the call in flight (interrupt again to abort now)");
            flag.store(true, Ordering::Relaxed);
            let _ = tokio::signal::ctrl_c().await;
            #[allow(
                clippy::exit,
                clippy::disallowed_methods,
                reason = "a second interrupt aborts at once; the checkpoint says what ran"
            )]
            std::process::exit(130);
        });
        run(args, stop).await.into()
    })
}
