//! The file store: one JSON file per run, replaced atomically.
//!
//! The write protocol is the classic one, and every step matters for crash safety:
//! write a temp file in the same directory, fsync it (the data is on disk), rename it over the
//! checkpoint (atomic on POSIX: readers see old or new), fsync the directory (the rename itself
//! is on disk). Skipping the last fsync can lose the rename on power loss.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::format::CheckpointRecord;
use crate::holder::Holder;
use crate::{Checkpoint, Error, check_resume};

/// A checkpoint file for one run.
#[derive(Debug, Clone)]
pub struct FileStore {
    run: String,
    /// The checkpoint itself; the lock and temp files live beside it.
    path: PathBuf,
}

impl FileStore {
    /// The store of `run` inside `dir`, under a file name derived from the run name.
    pub fn in_dir(dir: impl AsRef<Path>, run: &str) -> FileStore {
        FileStore {
            run: run.to_owned(),
            path: dir
                .as_ref()
                .join(format!("{}.checkpoint.json", file_stem(run))),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn run(&self) -> &str {
        &self.run
    }

    /// Reads the checkpoint, if one was ever written.
    pub fn load<S: DeserializeOwned>(&self) -> Result<Option<Checkpoint<S>>, Error> {
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("read checkpoint", &self.path)(e)),
        };
        let location = self.path.display().to_string();
        let record: CheckpointRecord =
            serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
                location: location.clone(),
                reason: e.to_string(),
            })?;
        record.into_checkpoint(&location).map(Some)
    }

    /// Loads the checkpoint to resume from under the plan with `fingerprint`; see [`check_resume`].
    pub fn resume<S: DeserializeOwned>(
        &self,
        fingerprint: &str,
        restart: bool,
    ) -> Result<Option<Checkpoint<S>>, Error> {
        check_resume(self.load()?, fingerprint, restart)
    }

    /// Atomically replaces the checkpoint. When this returns, the new checkpoint is durable.
    pub fn save<S: Serialize>(&self, fingerprint: &str, state: &S) -> Result<(), Error> {
        let record = CheckpointRecord::new(&self.run, fingerprint, state)?;
        let bytes = serde_json::to_vec_pretty(&record).map_err(Error::Encode)?;
        let dir = self.dir();
        create_private_dir(dir).map_err(Error::io("create checkpoint directory", dir))?;
        let temp = self.sibling("tmp");
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)
            .map_err(Error::io("create temporary checkpoint", &temp))?;
        file.write_all(&bytes)
            .map_err(Error::io("write temporary checkpoint", &temp))?;
        file.sync_all()
            .map_err(Error::io("fsync temporary checkpoint", &temp))?;
        drop(file);
        fs::rename(&temp, &self.path)
            .map_err(Error::io("rename temporary checkpoint over", &self.path))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(Error::io("fsync checkpoint directory", dir))?;
        Ok(())
    }

    /// Removes the checkpoint (a finished or restarted run).
    pub fn clear(&self) -> Result<(), Error> {
        match fs::remove_file(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io("remove checkpoint", &self.path)(e))
            }
            _ => Ok(()),
        }
    }

    /// Takes the run lock, or fails naming the process that holds it.
    pub fn lock(&self) -> Result<FileRunLock, Error> {
        FileRunLock::acquire(&self.run, &self.sibling("lock"))
    }

    fn dir(&self) -> &Path {
        self.path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
    }

    fn sibling(&self, extension: &str) -> PathBuf {
        let name = self.path.file_name().unwrap_or_default().to_string_lossy();
        self.dir().join(format!(".{name}.{extension}"))
    }
}

/// An exclusive lock on a run, held until dropped. The kernel releases it if the process dies,
/// so a SIGKILLed runner never leaves a stale lock behind.
#[derive(Debug)]
pub struct FileRunLock {
    /// Holding the open file is holding the lock.
    _file: File,
}

impl FileRunLock {
    fn acquire(run: &str, path: &Path) -> Result<FileRunLock, Error> {
        if let Some(dir) = path.parent() {
            create_private_dir(dir).map_err(Error::io("create lock directory", dir))?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(Error::io("open lock file", path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(match serde_json::from_str::<Holder>(&text) {
                    Ok(holder) => Error::Locked {
                        run: run.to_owned(),
                        holder,
                    },
                    Err(_) => Error::LockedByUnknown {
                        run: run.to_owned(),
                    },
                });
            }
            Err(TryLockError::Error(e)) => return Err(Error::io("lock", path)(e)),
        }
        let holder = serde_json::to_vec(&Holder::current()).map_err(Error::Encode)?;
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(&holder))
            .and_then(|()| file.sync_data())
            .map_err(Error::io("record the lock holder in", path))?;
        Ok(FileRunLock { _file: file })
    }
}

/// Where sunset keeps file state (checkpoints, run locks, audit logs, inventories) unless told:
/// `$SUNSET_STATE_DIR`, else `$XDG_STATE_HOME/sunset`, else `~/.local/state/sunset`.
pub fn default_state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SUNSET_STATE_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME") {
        return Path::new(&dir).join("sunset");
    }
    match std::env::var_os("HOME") {
        Some(home) => Path::new(&home).join(".local/state/sunset"),
        None => PathBuf::from(".sunset"),
    }
}

/// Creates `dir` and any missing parents as 0700: state (checkpoints, audit logs, inventories)
/// can hold what an operator would not show other users of the machine. Existing directories
/// keep their mode.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// A file name for a run name that may hold `/` or spaces: readable when the name is already safe,
/// and suffixed with a hash when characters were replaced, so two runs never share a file.
fn file_stem(run: &str) -> String {
    let safe: String = run
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if safe == run && !run.starts_with('.') && !run.is_empty() {
        safe
    } else {
        let digest = Sha256::digest(run.as_bytes());
        let suffix: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        format!("{}-{suffix}", safe.trim_start_matches('.'))
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Progress {
        done: u64,
    }

    #[test]
    fn saves_loads_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::in_dir(dir.path(), "accounts-sti");
        assert_eq!(store.load::<Progress>().unwrap(), None);
        store.save("fp1", &Progress { done: 10 }).unwrap();
        store.save("fp1", &Progress { done: 20 }).unwrap();
        let loaded = store.load::<Progress>().unwrap().unwrap();
        assert_eq!(
            (
                loaded.run.as_str(),
                loaded.fingerprint.as_str(),
                loaded.state
            ),
            ("accounts-sti", "fp1", Progress { done: 20 })
        );
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            leftovers,
            [std::ffi::OsString::from("accounts-sti.checkpoint.json")],
            "no temp file left behind"
        );
        store.clear().unwrap();
        assert_eq!(store.load::<Progress>().unwrap(), None);
    }

    #[test]
    fn a_changed_plan_is_refused_unless_restarting() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::in_dir(dir.path(), "run");
        store
            .save("aaaaaaaaaaaaaaaa", &Progress { done: 1 })
            .unwrap();
        assert_eq!(
            store
                .resume::<Progress>("aaaaaaaaaaaaaaaa", false)
                .unwrap()
                .unwrap()
                .state
                .done,
            1
        );
        let error = store
            .resume::<Progress>("bbbbbbbbbbbbbbbb", false)
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "run `run` was checkpointed under plan `aaaaaaaaaaaa`, but the plan is now `bbbbbbbbbbbb`; its progress \
             belongs to the old plan: restore that plan, or pass --restart to discard the progress"
        );
        assert_eq!(
            store.resume::<Progress>("bbbbbbbbbbbbbbbb", true).unwrap(),
            None
        );
    }

    #[test]
    fn corrupt_and_future_checkpoints_are_errors_not_fresh_starts() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::in_dir(dir.path(), "run");
        fs::write(store.path(), b"{\"version\": 1, \"run\": ").unwrap();
        assert!(matches!(
            store.load::<Progress>(),
            Err(Error::Corrupt { .. })
        ));
        fs::write(
            store.path(),
            br#"{"version": 9, "run": "run", "fingerprint": "f", "written_at": "2026-01-01T00:00:00Z", "state": {}}"#,
        )
        .unwrap();
        let error = store.load::<Progress>().unwrap_err().to_string();
        assert!(
            error.ends_with("has format version 9, this sunset reads version 1"),
            "{error}"
        );
    }

    #[test]
    fn a_second_lock_is_refused_with_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::in_dir(dir.path(), "run");
        let lock = store.lock().unwrap();
        let error = store.lock().unwrap_err();
        let Error::Locked { holder, .. } = &error else {
            panic!("expected Locked, got {error}")
        };
        assert_eq!(holder.pid, std::process::id());
        assert!(error.to_string().starts_with(&format!(
            "run `run` is already running: held by pid {} on host `",
            std::process::id()
        )));
        drop(lock);
        store.lock().unwrap();
    }

    #[test]
    fn run_names_become_distinct_safe_file_names() {
        assert_eq!(file_stem("accounts-sti"), "accounts-sti");
        assert_eq!(
            file_stem("sequences/legacy metrics.yaml"),
            "sequences_legacy_metrics.yaml-b415f98a"
        );
        assert_ne!(file_stem("a/b"), file_stem("a_b"));
        assert_ne!(file_stem(".."), "..");
    }
}
