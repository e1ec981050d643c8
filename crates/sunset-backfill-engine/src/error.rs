//! The backfill engine's error type. Bad input (plan or catalog mismatch) is kept apart from
//! runtime failures because operators script on the difference (exit 2 versus exit 1).

use sunset_outcome::Classify;
/// The server's message and SQLSTATE, or a TLS or I/O failure with its causes.
pub(crate) use sunset_pg::describe;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The plan does not fit the database (missing table or column, key not unique, ...):
    /// nothing was changed.
    #[error("{0}")]
    BadInput(String),
    /// The plan file itself is malformed.
    #[error("{0}")]
    Plan(#[from] sunset_plan::Diagnostics),
    /// A precondition of the command does not hold; nothing was changed.
    #[error("{0}")]
    Refused(String),
    /// A fault of sunset itself (a crashed worker, a statement that broke its contract): a
    /// failure of the run (exit 1), never blamed on the input.
    #[error("internal error: {0}")]
    Internal(String),
    /// The run lock's connection ended mid-run: the workers stopped after their batch, since
    /// another runner may now hold the run. The checkpoint is intact; run again to resume.
    #[error(
        "the run lock of `{0}` was lost (its connection to PostgreSQL ended); the workers stopped after their current batch and the checkpoint is intact: run the same command again to resume"
    )]
    LockLost(String),
    /// The database URL is wrong (bad input) or the server could not be reached.
    #[error(transparent)]
    Connection(#[from] sunset_pg::Error),
    /// Stopped early (Ctrl-C, SIGTERM, `cancel`, or a joined run whose last ranges other
    /// processes hold) after the batches in flight committed: run the same command again to resume.
    #[error("{0}")]
    Stopped(String),
    #[error(transparent)]
    Checkpoint(#[from] sunset_checkpoint::Error),
    /// The server's message is interpolated (tokio-postgres alone says only "db error"), so the
    /// error is deliberately not chained as a source: the text would appear twice.
    #[error("{context}: {}", describe(cause))]
    Database {
        context: String,
        cause: tokio_postgres::Error,
    },
}

impl Error {
    pub(crate) fn db(context: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> Error {
        let context = context.into();
        move |cause| Error::Database { context, cause }
    }

    /// The SQLSTATE of a database error, if it came from the server.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            Error::Database { cause, .. } => {
                cause.code().map(tokio_postgres::error::SqlState::code)
            }
            _ => None,
        }
    }
}

impl Classify for Error {
    fn is_bad_input(&self) -> bool {
        match self {
            Error::Connection(error) => error.is_bad_input(),
            Error::Checkpoint(error) => error.is_bad_input(),
            other => matches!(other, Error::BadInput(_) | Error::Plan(_)),
        }
    }

    /// Ctrl-C, SIGTERM or `cancel`: the batch in flight committed, the rest resumes.
    fn is_stopped(&self) -> bool {
        matches!(self, Error::Stopped(_))
    }
}
