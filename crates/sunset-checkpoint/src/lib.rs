//! Durable progress for every sunset runner.
//!
//! A runner that works for hours must survive a SIGKILL at any instant and continue exactly where
//! it stopped. Two stores give that guarantee, each with a lock so that only one runner of a run
//! exists at a time:
//!
//! - [`FileStore`]: a JSON file replaced atomically (temp file, fsync, rename, fsync of the
//!   directory), so a reader sees the old or the new checkpoint, never a torn one. Locked with a
//!   file lock ([`FileRunLock`]).
//! - [`PgStore`]: a row in `sunset.checkpoints` written through the caller's own client, so when
//!   the caller passes a transaction the checkpoint commits or rolls back with its batch. Locked
//!   with a session advisory lock ([`PgRunLock`]).
//!
//! Every checkpoint carries the fingerprint of the plan it belongs to: resuming a run under a
//! changed plan is refused unless the caller asks to restart.
//!
//! Checkpoint states are the caller's serde types. They must never contain secrets: checkpoints
//! are read by operators and copied into tickets.

mod error;
mod file;
mod format;
mod holder;
mod pg;

pub use error::Error;
pub use file::{FileRunLock, FileStore, create_private_dir, default_state_dir};
pub use holder::Holder;
pub use pg::{PgRunLock, PgStore};

use chrono::{DateTime, Utc};

/// A checkpoint as read back from a store.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint<S> {
    /// The run this checkpoint belongs to (a backfill name, a sequence path, an archive name).
    pub run: String,
    /// The fingerprint of the plan the progress was made under.
    pub fingerprint: String,
    pub written_at: DateTime<Utc>,
    /// The runner's own progress.
    pub state: S,
}

/// Decides whether a loaded checkpoint may be resumed under the plan with `fingerprint`.
///
/// Returns the checkpoint to resume from, `None` to start fresh (no checkpoint, or `restart`),
/// or [`Error::PlanChanged`].
pub fn check_resume<S>(
    checkpoint: Option<Checkpoint<S>>,
    fingerprint: &str,
    restart: bool,
) -> Result<Option<Checkpoint<S>>, Error> {
    match checkpoint {
        None => Ok(None),
        Some(_) if restart => Ok(None),
        Some(checkpoint) if checkpoint.fingerprint == fingerprint => Ok(Some(checkpoint)),
        Some(checkpoint) => Err(Error::PlanChanged {
            run: checkpoint.run,
            checkpoint: short(&checkpoint.fingerprint).to_owned(),
            plan: short(fingerprint).to_owned(),
        }),
    }
}

fn short(fingerprint: &str) -> &str {
    &fingerprint[..fingerprint.len().min(12)]
}
