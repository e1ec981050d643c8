//! The checkpoint crate's one error type.

use std::path::PathBuf;

use crate::holder::Holder;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database URL is wrong (bad input) or the server could not be reached.
    #[error(transparent)]
    Connection(#[from] sunset_pg::Error),
    #[error("could not {action} `{}`", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("checkpoint `{location}` is unreadable: {reason}")]
    Corrupt { location: String, reason: String },
    #[error(
        "checkpoint `{location}` has format version {found}, this sunset reads version {expected}"
    )]
    UnsupportedVersion {
        location: String,
        found: u32,
        expected: u32,
    },
    #[error("run `{run}` is already running: held by {holder}")]
    Locked { run: String, holder: Holder },
    #[error(
        "run `{run}` is already running: held by another session (its holder did not record itself)"
    )]
    LockedByUnknown { run: String },
    #[error(
        "run `{run}` was checkpointed under plan `{checkpoint}`, but the plan is now `{plan}`; \
         its progress belongs to the old plan: restore that plan, or pass --restart to discard the progress"
    )]
    PlanChanged {
        run: String,
        checkpoint: String,
        plan: String,
    },
    #[error("checkpoint state can not be encoded")]
    Encode(#[source] serde_json::Error),
    #[error("PostgreSQL checkpoint store failed to {action}")]
    Postgres {
        action: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
}

impl sunset_outcome::Classify for Error {
    /// A wrong URL, or progress that belongs to another plan (nothing was changed: restore the
    /// plan or pass --restart).
    fn is_bad_input(&self) -> bool {
        match self {
            Error::Connection(error) => error.is_bad_input(),
            other => matches!(other, Error::PlanChanged { .. }),
        }
    }
}

impl Error {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    }

    pub(crate) fn pg(action: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Error {
        move |source| Error::Postgres { action, source }
    }
}
