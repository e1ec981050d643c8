//! What only the local-directory backend needs: where a partial upload lives and how it is
//! put into place without overwriting.

use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::location::{ARCHIVE_OBJECT, ArchiveRef};

pub(super) fn partial_path(archive: &ArchiveRef, upload_id: &str) -> PathBuf {
    let object = PathBuf::from(archive.key(ARCHIVE_OBJECT));
    let dir = object.parent().unwrap_or(Path::new(".")).to_owned();
    dir.join(format!(".{ARCHIVE_OBJECT}.{upload_id}.partial"))
}

/// A hard link fails if the target exists: the no-overwrite rename POSIX lacks.
pub(super) fn link_into_place(from: &Path, to: &Path) -> Result<(), Error> {
    std::fs::hard_link(from, to).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            Error::BadInput(format!(
                "`{}` already exists; it is never overwritten",
                to.display()
            ))
        } else {
            Error::io("link into place", to)(e)
        }
    })?;
    if let Some(dir) = to.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(Error::io("fsync directory", dir))?;
    }
    Ok(())
}
