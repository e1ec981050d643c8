//! Every way a teardown can stop, each mapped to the documented exit code.

use sunset_outcome::Classify;
use sunset_plan::Diagnostics;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The sequence file is malformed: nothing was called.
    #[error(transparent)]
    Sequence(#[from] Diagnostics),
    /// Flags or files that make no sense together: nothing was called.
    #[error("{0}")]
    BadInput(String),
    #[error(
        "AWS account {account} is not allowed by this sequence (allowed: {allowed}); add it to `allowed_accounts` or pass --allow-account {account}. Nothing was changed."
    )]
    AccountNotAllowed { account: String, allowed: String },
    /// A target that names nothing, or names something of the wrong kind.
    #[error("step `{step}`, `{action}`: {message}")]
    Resolve {
        step: String,
        action: String,
        message: String,
    },
    /// A safety rule stopped the step before any change in it.
    #[error("step `{step}` stopped before any change: {message}")]
    Refused { step: String, message: String },
    /// An action found its resources in a state AWS would refuse to act on; earlier actions of
    /// the step may have run (the checkpoint says which).
    #[error("step `{step}` stopped: {message}")]
    Blocked { step: String, message: String },
    #[error(
        "the targets of step `{step}` resolve differently than when the plan was made ({detail}); review them with `sunset-teardown plan`, which pins the new resolution, then apply again"
    )]
    TargetsChanged { step: String, detail: String },
    #[error("validation `{check}` of step `{step}` did not hold within {timeout}: {last}")]
    ValidationTimedOut {
        step: String,
        check: String,
        timeout: String,
        last: String,
    },
    /// An AWS call failed; `code` is the service's error code when it sent one.
    #[error("{operation} failed: {message}")]
    Aws {
        operation: String,
        code: Option<String>,
        message: String,
    },
    #[error("{0}")]
    Probe(String),
    /// The database URL of a `sql` step or probe is wrong (bad input) or unusable.
    #[error(transparent)]
    Connection(#[from] sunset_pg::Error),
    #[error("archive")]
    Archive(#[source] sunset_archive_engine::Error),
    #[error(transparent)]
    Checkpoint(#[from] sunset_checkpoint::Error),
    /// The cause is the `source` (shown by `{:#}` and [`Error::with_causes`]), not repeated.
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    /// Stopped on purpose (declined confirmation, Ctrl-C, a wait gate): run again to continue.
    #[error("{0}")]
    Stopped(String),
    /// A fault of sunset itself (a step state machine or an SDK request it built wrongly): a
    /// failure (exit 1), never blamed on the sequence.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<sunset_archive_engine::Error> for Error {
    fn from(error: sunset_archive_engine::Error) -> Self {
        Error::Archive(error)
    }
}

impl Classify for Error {
    /// A sequence, flags or an account that do not fit, or targets that name nothing: nothing
    /// was called or changed.
    fn is_bad_input(&self) -> bool {
        match self {
            Error::Sequence(_)
            | Error::BadInput(_)
            | Error::AccountNotAllowed { .. }
            | Error::Resolve { .. } => true,
            Error::Checkpoint(error) => error.is_bad_input(),
            Error::Archive(error) => error.is_bad_input(),
            Error::Connection(error) => error.is_bad_input(),
            _ => false,
        }
    }

    fn is_stopped(&self) -> bool {
        matches!(self, Error::Stopped(_))
    }
}

impl Error {
    /// The message and each cause once, `: `-separated: what a checkpoint or a log line keeps.
    pub fn with_causes(&self) -> String {
        sunset_outcome::chain(self)
    }

    pub(crate) fn io(
        what: &'static str,
        path: &std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.display().to_string();
        move |source| Error::Io { what, path, source }
    }
}
