//! Reading archives back: `verify` (the object against its manifest; `--deep` also every entry
//! and every table's row count), `restore` (files to a directory, exports into a schema with
//! `COPY FROM`), `list` and `cleanup`.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::guard;
use crate::location::{ArchiveRef, Destination};
use crate::manifest::{EntryKind, Manifest};
use crate::store::{OpenUpload, Store};
use crate::tarball::Hashing;
use sunset_checkpoint::FileStore;
use sunset_plan::hex;

#[derive(Debug, Clone, serde::Serialize)]
pub struct VerifyReport {
    pub archive: String,
    pub size: u64,
    pub sha256: String,
    pub deep: bool,
    pub entries_checked: usize,
    pub rows_checked: u64,
    /// Empty when the archive matches its manifest.
    pub problems: Vec<String>,
}

/// Reads the object back and checks it against the manifest; `deep` also decompresses it and
/// checks every entry and every export's row count.
pub async fn verify(
    archive: &ArchiveRef,
    deep: bool,
    read: Arc<AtomicU64>,
) -> Result<VerifyReport, Error> {
    let store = Store::for_destination(&archive.dest).await;
    let manifest = Manifest::parse(&store.get_manifest(archive).await?, &archive.to_string())?;
    let reader = store.open_archive(archive).await?;
    let expected = manifest.clone();
    let name = archive.to_string();
    tokio::task::spawn_blocking(move || {
        let mut counted = Hashing::new(reader, &read);
        let mut report = VerifyReport {
            archive: name,
            size: 0,
            sha256: String::new(),
            deep,
            entries_checked: 0,
            rows_checked: 0,
            problems: Vec::new(),
        };
        if deep {
            check_entries(&mut counted, &expected, &mut report);
        }
        // Whatever the deep check left unread still counts for the object's hash.
        if let Err(e) = io::copy(&mut counted, &mut io::sink()) {
            report
                .problems
                .push(format!("reading the archive failed: {e}"));
        }
        report.size = counted.count;
        report.sha256 = counted.hex();
        if report.size != expected.archive.size {
            report.problems.insert(
                0,
                format!(
                    "the object is {} bytes; the manifest says {}",
                    report.size, expected.archive.size
                ),
            );
        }
        if report.sha256 != expected.archive.sha256 {
            report.problems.insert(
                0,
                format!(
                    "the object's SHA-256 is {}; the manifest says {}",
                    report.sha256, expected.archive.sha256
                ),
            );
        }
        report
    })
    .await
    .map_err(|e| Error::Internal(format!("the verifier crashed: {e}")))
}

fn check_entries<R: Read>(compressed: &mut R, manifest: &Manifest, report: &mut VerifyReport) {
    let mut listing = match guard::check_manifest(manifest, true) {
        Ok(listing) => listing,
        Err(problem) => {
            report
                .problems
                .push(format!("the manifest is unsafe: {problem}"));
            return;
        }
    };
    let chunk_owner: BTreeMap<String, (&str, bool)> = manifest
        .tables
        .iter()
        .flat_map(|t| {
            t.chunks.iter().enumerate().map(move |(i, c)| {
                (
                    c.trim_end_matches('/').to_owned(),
                    (t.name.as_str(), i == 0),
                )
            })
        })
        .collect();
    let mut rows: BTreeMap<&str, u64> = BTreeMap::new();
    let mut tar = tar::Archive::new(flate2::read::MultiGzDecoder::new(compressed));
    let entries = match tar.entries() {
        Ok(entries) => entries,
        Err(e) => {
            report
                .problems
                .push(format!("the archive is not a readable tar.gz: {e}"));
            return;
        }
    };
    for entry in entries {
        let mut entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                report
                    .problems
                    .push(format!("the archive is not a readable tar.gz: {e}"));
                return;
            }
        };
        let (key, listed) = match guard::match_entry(&entry, &mut listing) {
            Ok(matched) => matched,
            Err(problem) => {
                report.problems.push(problem);
                continue;
            }
        };
        report.entries_checked += 1;
        if listed.kind != EntryKind::File {
            continue;
        }
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut records = CsvRecords::default();
        let owner = chunk_owner.get(key.as_str()).copied();
        let mut buffer = vec![0u8; 256 << 10];
        loop {
            match entry.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => {
                    hasher.update(&buffer[..n]);
                    size += n as u64;
                    if owner.is_some() {
                        records.feed(&buffer[..n]);
                    }
                }
                Err(e) => {
                    report.problems.push(format!("`{key}` cannot be read: {e}"));
                    return;
                }
            }
        }
        let sha256 = hex(&hasher.finalize());
        if size != listed.size || listed.sha256.as_deref() != Some(sha256.as_str()) {
            report.problems.push(format!(
                "`{key}` differs from the manifest: {size} bytes with SHA-256 {sha256}, expected {} bytes with {}",
                listed.size,
                listed.sha256.as_deref().unwrap_or("-")
            ));
        }
        if let Some((table, first)) = owner {
            let count = records.count.saturating_sub(u64::from(first));
            *rows.entry(table).or_default() += count;
            report.rows_checked += count;
        }
    }
    for missing in listing.entries.keys() {
        report.problems.push(format!(
            "`{missing}` is in the manifest but missing from the archive"
        ));
    }
    for table in &manifest.tables {
        let counted = rows.get(table.name.as_str()).copied().unwrap_or_default();
        if counted != table.rows {
            report.problems.push(format!(
                "export `{}` has {counted} rows in the archive; the manifest says {}",
                table.name, table.rows
            ));
        }
    }
}

/// Counts CSV records: line ends outside quoted fields. Quotes inside fields are doubled, so
/// toggling on every quote tracks "inside a field" exactly.
#[derive(Debug, Default)]
struct CsvRecords {
    in_quotes: bool,
    count: u64,
}

impl CsvRecords {
    fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            match b {
                b'"' => self.in_quotes = !self.in_quotes,
                b'\n' if !self.in_quotes => self.count += 1,
                _ => {}
            }
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Listed {
    pub name: String,
    pub created_at: Option<DateTime<Utc>>,
    pub size: Option<u64>,
    pub entries: Option<usize>,
    pub tables: Option<usize>,
    pub problem: Option<String>,
}

/// The complete archives in a destination, with what their manifests say.
pub async fn list(dest: &Destination) -> Result<Vec<Listed>, Error> {
    let store = Store::for_destination(dest).await;
    store.check_destination().await?;
    let mut listed = Vec::new();
    for name in store.list().await? {
        let archive = dest.archive(&name)?;
        let manifest = match store.get_manifest(&archive).await {
            Ok(bytes) => Manifest::parse(&bytes, &archive.to_string()),
            Err(error) => Err(error),
        };
        listed.push(match manifest {
            Ok(m) => Listed {
                name,
                created_at: Some(m.created_at),
                size: Some(m.archive.size),
                entries: Some(m.entries.len()),
                tables: Some(m.tables.len()),
                problem: None,
            },
            Err(error) => Listed {
                name,
                created_at: None,
                size: None,
                entries: None,
                tables: None,
                problem: Some(error.to_string()),
            },
        });
    }
    Ok(listed)
}

/// What `cleanup` did.
#[derive(Debug, Clone, Default)]
pub struct Cleaned {
    pub aborted: Vec<OpenUpload>,
    /// Uploads of a `create` that is running now (its run lock is held), left alone.
    pub skipped: Vec<(OpenUpload, String)>,
}

/// Aborts sunset's uploads (`NAME/archive.tar.gz` under `dest`) started before `older_than`
/// ago: stopped or crashed `create`s nobody resumed. An upload whose run lock is held (a
/// `create` running now on this machine) is never aborted.
pub async fn cleanup(
    dest: &Destination,
    older_than: std::time::Duration,
    state_dir: &Path,
) -> Result<Cleaned, Error> {
    let store = Store::for_destination(dest).await;
    store.check_destination().await?;
    let cutoff = Utc::now() - chrono::Duration::from_std(older_than).unwrap_or_default();
    let mut cleaned = Cleaned::default();
    for upload in store.open_uploads().await? {
        if upload.initiated.is_none_or(|t| t > cutoff) {
            continue;
        }
        let archive = dest.archive(&upload.name)?;
        let checkpoints = FileStore::in_dir(state_dir, &format!("archive {archive}"));
        // Holding the lock while aborting keeps a `create` from starting on it meanwhile.
        let _lock = match checkpoints.lock() {
            Ok(lock) => lock,
            Err(
                error @ (sunset_checkpoint::Error::Locked { .. }
                | sunset_checkpoint::Error::LockedByUnknown { .. }),
            ) => {
                cleaned.skipped.push((upload, error.to_string()));
                continue;
            }
            Err(error) => return Err(error.into()),
        };
        store.abort_open_upload(&upload).await?;
        cleaned.aborted.push(upload);
    }
    Ok(cleaned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_records_ignore_newlines_inside_quoted_fields() {
        let mut records = CsvRecords::default();
        records.feed(b"id,note\n1,\"two\nlines\"\n2,\"a \"\"quoted\"\" word\"\n");
        assert_eq!(records.count, 3);
        let mut split = CsvRecords::default();
        split.feed(b"1,\"spl");
        split.feed(b"it\nhere\"\n");
        assert_eq!(split.count, 1);
    }
}
