//! How a sunset operation ends, agreed between the engines and the command-line layer. It is
//! its own small crate (no clap, no indicatif) so that every engine can depend on it:
//!
//! - [`Shutdown`]: how a stop is asked for (first Ctrl-C or SIGTERM) and how an engine notices,
//!   by polling between units of work or by waiting on it beside a sleep or a query;
//! - [`Classify`]: how an engine's error says which documented exit it stands for;
//! - [`chain`]: an error and its causes on one line, each once.

use std::sync::Arc;

use tokio::sync::watch;

/// A request to stop after the unit of work in flight. Clones share one request.
#[derive(Debug, Clone)]
pub struct Shutdown(Arc<watch::Sender<bool>>);

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown(Arc::new(watch::Sender::new(false)))
    }
}

impl Shutdown {
    /// A request nobody has made yet.
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// Asks every holder to stop; asking again changes nothing.
    pub fn request(&self) {
        self.0.send_replace(true);
    }

    /// Whether a stop was asked for: polled between units of work.
    pub fn is_requested(&self) -> bool {
        *self.0.borrow()
    }

    /// Completes once a stop is asked for (at once if it already was): raced against a sleep
    /// or a long query in `tokio::select!`.
    pub async fn requested(&self) {
        let mut receiver = self.0.subscribe();
        // The sender lives in `self`, so the channel cannot close while this waits.
        let _ = receiver.wait_for(|requested| *requested).await;
    }
}

/// What an engine's error says about the documented exit codes: bad input (2, nothing was
/// changed), stopped on request (3, run again to resume), anything else a failure (1).
pub trait Classify {
    /// Input the user must fix (plan, flags, catalog, account); nothing was changed. A fault
    /// of sunset itself is never bad input.
    fn is_bad_input(&self) -> bool;

    /// Stopped on request (Ctrl-C, SIGTERM, a declined confirmation): the checkpoint is saved.
    /// Errors of crates that are never asked to stop (connections, checkpoints) keep the default.
    fn is_stopped(&self) -> bool {
        false
    }
}

/// An error and its causes, `: `-separated, each once: a cause whose text an earlier part
/// already holds (libraries that interpolate their source) is left out.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = vec![error.to_string()];
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !text.is_empty() && !parts.iter().any(|part| part.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|l| l as _)
        }
    }

    #[test]
    fn chain_writes_each_cause_once() {
        let error = Layer(
            "cannot read `plan.yaml`: permission denied",
            Some(Box::new(Layer(
                "permission denied",
                Some(Box::new(Layer("os error 13", None))),
            ))),
        );
        assert_eq!(
            chain(&error),
            "cannot read `plan.yaml`: permission denied: os error 13"
        );
    }

    #[tokio::test]
    async fn a_request_reaches_every_clone_and_wakes_a_waiter() {
        let shutdown = Shutdown::new();
        let waiter = {
            let shutdown = shutdown.clone();
            tokio::spawn(async move { shutdown.requested().await })
        };
        assert!(!shutdown.is_requested());
        shutdown.clone().request();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("the waiter wakes")
            .expect("the waiter did not panic");
        assert!(shutdown.is_requested());
        // Already requested: completes at once.
        shutdown.requested().await;
    }
}
