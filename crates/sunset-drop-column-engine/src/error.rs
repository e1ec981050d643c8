//! The drop-column engine's error type. Bad input is kept apart from failures because operators
//! script on the difference (exit 2 versus exit 1), and in both cases nothing was written.

use sunset_outcome::Classify;
use sunset_pg::describe;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request does not fit the database or the flags are wrong (unknown table or column,
    /// a primary or partition key column, a directory that is not a git repository, ...).
    #[error("{0}")]
    BadInput(String),
    /// A config or backfill plan file is malformed.
    #[error("{0}")]
    File(#[from] sunset_plan::Diagnostics),
    #[error(transparent)]
    Backfill(#[from] sunset_backfill_engine::Error),
    /// The database URL is wrong (bad input) or the server could not be reached.
    #[error(transparent)]
    Connection(#[from] sunset_pg::Error),
    /// The generated migration did not survive up, down, up on the scratch database.
    #[error("{0}")]
    Verification(String),
    /// Interrupted (Ctrl-C, SIGTERM) before anything was written: run again.
    #[error("{0}")]
    Stopped(String),
    /// An outside program (pg_dump, psql, git, gh) is missing or failed.
    #[error("{0}")]
    Tool(String),
    /// The cause is the `source` (shown by `{:#}` and error chains), not repeated here.
    #[error("{context}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    /// The server's message is interpolated (tokio-postgres alone says only "db error").
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

    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}

impl Classify for Error {
    fn is_bad_input(&self) -> bool {
        match self {
            Error::BadInput(_) | Error::File(_) => true,
            Error::Connection(error) => error.is_bad_input(),
            Error::Backfill(inner) => inner.is_bad_input(),
            _ => false,
        }
    }

    /// Interrupted on purpose (exit 3) before anything was written.
    fn is_stopped(&self) -> bool {
        matches!(self, Error::Stopped(_))
    }
}
