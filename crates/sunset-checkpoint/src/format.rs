//! The on-disk checkpoint record. It is an API boundary: a run checkpointed by one version of
//! sunset must resume under the next, so the record is versioned and converted by hand.

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{Checkpoint, Error};

pub(crate) const FORMAT_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
pub(crate) struct CheckpointRecord {
    pub(crate) version: u32,
    pub(crate) run: String,
    pub(crate) fingerprint: String,
    pub(crate) written_at: DateTime<Utc>,
    pub(crate) state: serde_json::Value,
}

impl CheckpointRecord {
    pub(crate) fn new<S: Serialize>(
        run: &str,
        fingerprint: &str,
        state: &S,
    ) -> Result<Self, Error> {
        Ok(CheckpointRecord {
            version: FORMAT_VERSION,
            run: run.to_owned(),
            fingerprint: fingerprint.to_owned(),
            written_at: Utc::now(),
            state: serde_json::to_value(state).map_err(Error::Encode)?,
        })
    }

    pub(crate) fn into_checkpoint<S: DeserializeOwned>(
        self,
        location: &str,
    ) -> Result<Checkpoint<S>, Error> {
        if self.version != FORMAT_VERSION {
            return Err(Error::UnsupportedVersion {
                location: location.to_owned(),
                found: self.version,
                expected: FORMAT_VERSION,
            });
        }
        let state = serde_json::from_value(self.state).map_err(|e| Error::Corrupt {
            location: location.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Checkpoint {
            run: self.run,
            fingerprint: self.fingerprint,
            written_at: self.written_at,
            state,
        })
    }
}
