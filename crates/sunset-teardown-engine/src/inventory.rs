//! The inventory: every resource's full description, saved before the runner changes it, so
//! `rollback` can recreate what it removed (DNS records, volume attachments) and a reviewer can
//! see what was there.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use chrono::Utc;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;
use crate::model::ResourceKind;

pub(crate) struct Inventory {
    dir: PathBuf,
}

#[derive(Serialize)]
struct Saved<'a, T> {
    kind: ResourceKind,
    id: &'a str,
    saved_at: chrono::DateTime<Utc>,
    step: &'a str,
    action: &'a str,
    description: &'a T,
}

impl Inventory {
    pub(crate) fn new(dir: &Path) -> Inventory {
        Inventory {
            dir: dir.to_owned(),
        }
    }

    /// Saves `description` unless one was saved already: the first is the state before any change.
    pub(crate) fn save<T: Serialize>(
        &self,
        kind: ResourceKind,
        id: &str,
        step: &str,
        action: &str,
        description: &T,
    ) -> Result<(), Error> {
        let path = self.path(kind, id);
        if path.exists() {
            return Ok(());
        }
        sunset_checkpoint::create_private_dir(&self.dir)
            .map_err(Error::io("create inventory directory", &self.dir))?;
        let saved = Saved {
            kind,
            id,
            saved_at: Utc::now(),
            step,
            action,
            description,
        };
        let bytes = serde_json::to_vec_pretty(&saved).expect("descriptions serialize");
        let temp = path.with_extension("tmp");
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)
            .and_then(|mut f| {
                f.write_all(&bytes)?;
                f.sync_all()
            });
        written.map_err(Error::io("write inventory file", &temp))?;
        std::fs::rename(&temp, &path).map_err(Error::io("rename inventory file", &path))
    }

    /// The description saved for a resource, if any.
    pub(crate) fn load<T: DeserializeOwned>(
        &self,
        kind: ResourceKind,
        id: &str,
    ) -> Result<Option<T>, Error> {
        let path = self.path(kind, id);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("read inventory file", &path)(e)),
        };
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
            Error::BadInput(format!("{}: not an inventory file: {e}", path.display()))
        })?;
        serde_json::from_value(value["description"].clone())
            .map(Some)
            .map_err(|e| {
                Error::BadInput(format!("{}: unexpected description: {e}", path.display()))
            })
    }

    fn path(&self, kind: ResourceKind, id: &str) -> PathBuf {
        let kind = serde_json::to_value(kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let id: String = id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.dir.join(format!("{kind}-{id}.json"))
    }
}
