//! Running a command: the async runtime, Ctrl-C and SIGTERM, and the one way an error becomes
//! a documented exit code.

use std::future::Future;

use sunset_outcome::{Classify, Shutdown};

use crate::Exit;
use crate::output::{emit, report_error};

/// The runtime a command runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// One thread: the work is in PostgreSQL, and waking a connection task on another thread
    /// for every statement costs a measurable share of a short round trip.
    CurrentThread,
    /// Two workers: compression, uploads and AWS calls overlap.
    MultiThread,
}

/// Runs `command` on `runtime`. The first Ctrl-C or SIGTERM requests the [`Shutdown`] the
/// command polls (`stopping` tells the operator what happens next: the unit of work in flight
/// finishes and is checkpointed, and the command exits 3); a second one exits 130 at once.
pub fn run_with_interrupts<Fut>(
    runtime: Runtime,
    stopping: &'static str,
    command: impl FnOnce(Shutdown) -> Fut,
) -> std::process::ExitCode
where
    Fut: Future<Output = Exit>,
{
    let built = match runtime {
        Runtime::CurrentThread => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Runtime::MultiThread => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build(),
    };
    let runtime = match built {
        Ok(runtime) => runtime,
        Err(error) => {
            report_error(&format!("error: cannot start the async runtime: {error}"));
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let shutdown = Shutdown::new();
        let requester = shutdown.clone();
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            match term.as_mut() {
                Some(term) => {
                    tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term.recv() => {} }
                }
                None => drop(tokio::signal::ctrl_c().await),
            }
            tracing::warn!("{stopping} (interrupt again to abort now)");
            requester.request();
            let _ = tokio::signal::ctrl_c().await;
            #[allow(
                clippy::exit,
                clippy::disallowed_methods,
                reason = "a second interrupt aborts at once; the checkpoint holds what finished"
            )]
            std::process::exit(130);
        });
        command(shutdown).await.into()
    })
}

/// An error a binary raises itself, with its exit decided: input it cannot use (an unreadable
/// file, no database URL), or an engine error rewritten for the user (redacted) keeping its exit.
#[derive(Debug)]
pub struct Failure {
    exit: Exit,
    message: String,
}

impl Failure {
    pub fn new(exit: Exit, message: impl Into<String>) -> Failure {
        Failure {
            exit,
            message: message.into(),
        }
    }

    /// Input the user must fix: exit 2.
    pub fn bad_input(message: impl Into<String>) -> Failure {
        Failure::new(Exit::BadInput, message)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// The exit code of a failed command: the engine error `E` says whether it is bad input or a
/// stop on request, a [`Failure`] carries its own, anything else (a fault) is a failure.
pub fn exit_code<E>(error: &anyhow::Error) -> Exit
where
    E: Classify + std::fmt::Display + std::fmt::Debug + Send + Sync + 'static,
{
    if let Some(failure) = error.downcast_ref::<Failure>() {
        return failure.exit;
    }
    match error.downcast_ref::<E>() {
        Some(engine) if engine.is_stopped() => Exit::Stopped,
        Some(engine) if engine.is_bad_input() => Exit::BadInput,
        _ => Exit::Failed,
    }
}

/// A command's result as its exit code; an error is reported on stderr (`error: ` and its
/// causes, or `stopped: ` for a stop on request), and with `--json` also as an `error` event
/// on stdout.
pub fn conclude<E>(result: anyhow::Result<Exit>, json: bool) -> Exit
where
    E: Classify + std::fmt::Display + std::fmt::Debug + Send + Sync + 'static,
{
    match result {
        Ok(exit) => exit,
        Err(error) => {
            let exit = exit_code::<E>(&error);
            if json {
                emit(
                    &serde_json::json!({
                        "event": "error",
                        "exit_code": exit as u8,
                        "message": format!("{error:#}"),
                    })
                    .to_string(),
                );
            }
            let label = if exit == Exit::Stopped {
                "stopped"
            } else {
                "error"
            };
            report_error(&format!("{label}: {error:#}"));
            exit
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    enum EngineError {
        Plan,
        Stopped,
        Crashed,
    }

    impl std::fmt::Display for EngineError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{self:?}")
        }
    }

    impl std::error::Error for EngineError {}

    impl Classify for EngineError {
        fn is_bad_input(&self) -> bool {
            matches!(self, EngineError::Plan)
        }
        fn is_stopped(&self) -> bool {
            matches!(self, EngineError::Stopped)
        }
    }

    #[test]
    fn each_error_has_its_documented_exit() {
        let code = |error: anyhow::Error| exit_code::<EngineError>(&error);
        assert_eq!(code(EngineError::Plan.into()), Exit::BadInput);
        assert_eq!(code(EngineError::Stopped.into()), Exit::Stopped);
        assert_eq!(code(EngineError::Crashed.into()), Exit::Failed);
        // Context on top keeps the engine error reachable.
        assert_eq!(
            code(anyhow::Error::new(EngineError::Plan).context("loading")),
            Exit::BadInput
        );
        assert_eq!(code(Failure::bad_input("no URL").into()), Exit::BadInput);
        assert_eq!(
            code(Failure::new(Exit::Stopped, "redacted").into()),
            Exit::Stopped
        );
        assert_eq!(code(anyhow::anyhow!("something else")), Exit::Failed);
    }
}
