//! Reading archives back: `verify` (the object against its manifest; `--deep` also every entry
//! and every table's row count), `restore` (files to a directory, exports into a schema with
//! `COPY FROM`), `list` and `cleanup`.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use chrono::{DateTime, Utc};
use futures_util::SinkExt;
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::location::{ArchiveRef, Destination};
use crate::manifest::{EntryKind, Manifest, TableSchema};
use crate::sources::quote;
use crate::store::{OpenUpload, Store};
use crate::tarball::Hashing;
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
    let mut expected: BTreeMap<&str, &crate::manifest::Entry> = manifest
        .entries
        .iter()
        .map(|e| (e.path.as_str(), e))
        .collect();
    let chunk_owner: BTreeMap<&str, (&str, bool)> = manifest
        .tables
        .iter()
        .flat_map(|t| {
            t.chunks
                .iter()
                .enumerate()
                .map(move |(i, c)| (c.as_str(), (t.name.as_str(), i == 0)))
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
        let path = match entry.path() {
            Ok(path) => path.to_string_lossy().into_owned(),
            Err(e) => {
                report
                    .problems
                    .push(format!("an entry has an unreadable path: {e}"));
                continue;
            }
        };
        let is_dir = entry.header().entry_type().is_dir();
        let key = if is_dir && !path.ends_with('/') {
            format!("{path}/")
        } else {
            path
        };
        let Some(listed) = expected.remove(key.as_str()) else {
            report
                .problems
                .push(format!("`{key}` is in the archive but not in the manifest"));
            continue;
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
    for missing in expected.keys() {
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

#[derive(Debug, Clone)]
pub struct RestoreRequest {
    pub archive: ArchiveRef,
    pub to: PathBuf,
    /// With a database, exports are loaded into `into_schema`; without, they are extracted as
    /// CSV files under `to` like everything else.
    pub database_url: Option<String>,
    pub into_schema: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RestoreReport {
    pub files: usize,
    /// Table name in the target schema, and rows loaded.
    pub tables: Vec<(String, u64)>,
    pub sha256: String,
}

enum Load {
    Schema(String, TableSchema),
    Rows {
        export: String,
        header: bool,
        data: Vec<u8>,
    },
}

/// Extracts files under `to` (modes and mtimes kept, owners too when run as root) and loads
/// exports into a schema, all in one transaction: a failed restore loads nothing.
pub async fn restore(
    request: &RestoreRequest,
    read: Arc<AtomicU64>,
) -> Result<RestoreReport, Error> {
    let store = Store::for_destination(&request.archive.dest).await;
    let manifest = Manifest::parse(
        &store.get_manifest(&request.archive).await?,
        &request.archive.to_string(),
    )?;
    let client = match (&request.database_url, &request.into_schema) {
        (Some(url), Some(schema)) => {
            let client = crate::create::connect(url).await?;
            client
                .batch_execute(&format!(
                    "BEGIN; CREATE SCHEMA IF NOT EXISTS {}",
                    quote(schema)
                ))
                .await
                .map_err(|e| {
                    Error::Invalid(format!(
                        "--into-schema `{schema}`: {}",
                        crate::error::describe(&e)
                    ))
                })?;
            Some(client)
        }
        (None, Some(_)) => {
            return Err(Error::Invalid(
                "--into-schema needs --database-url (or DATABASE_URL)".into(),
            ));
        }
        _ => None,
    };
    std::fs::create_dir_all(&request.to)
        .map_err(|e| Error::Invalid(format!("--to `{}`: {e}", request.to.display())))?;
    let reader = store.open_archive(&request.archive).await?;
    let (loads, mut loads_rx) = tokio::sync::mpsc::channel::<Load>(2);
    let to = request.to.clone();
    let load_tables = client.is_some();
    let chunk_first: BTreeMap<String, (String, bool)> = manifest
        .tables
        .iter()
        .flat_map(|t| {
            let dir = t.schema_path.trim_end_matches("/schema.json").to_owned();
            t.chunks
                .iter()
                .enumerate()
                .map(move |(i, c)| (c.clone(), (dir.clone(), i == 0)))
        })
        .collect();
    let schema_dirs: BTreeMap<String, String> = manifest
        .tables
        .iter()
        .map(|t| {
            (
                t.schema_path.clone(),
                t.schema_path.trim_end_matches("/schema.json").to_owned(),
            )
        })
        .collect();
    let extractor = tokio::task::spawn_blocking(move || -> Result<(usize, String), Error> {
        let mut counted = Hashing::new(reader, &read);
        let mut files = 0;
        let mut dir_mtimes = Vec::new();
        {
            let mut tar = tar::Archive::new(flate2::read::MultiGzDecoder::new(&mut counted));
            tar.set_preserve_permissions(true);
            tar.set_preserve_mtime(true);
            tar.set_preserve_ownerships(is_root());
            tar.set_overwrite(false);
            let corrupt = |e: io::Error| {
                Error::Mismatch(format!("the archive is not a readable tar.gz: {e}"))
            };
            for entry in tar.entries().map_err(corrupt)? {
                let mut entry = entry.map_err(corrupt)?;
                let path = entry
                    .path()
                    .map_err(corrupt)?
                    .to_string_lossy()
                    .into_owned();
                if load_tables {
                    if let Some(dir) = schema_dirs.get(&path) {
                        let mut text = Vec::new();
                        entry.read_to_end(&mut text).map_err(corrupt)?;
                        let schema: TableSchema = serde_json::from_slice(&text).map_err(|e| {
                            Error::Mismatch(format!("`{path}` is not a table schema: {e}"))
                        })?;
                        if loads
                            .blocking_send(Load::Schema(dir.clone(), schema))
                            .is_err()
                        {
                            break;
                        }
                        continue;
                    }
                    if let Some((dir, header)) = chunk_first.get(&path) {
                        let mut data = Vec::new();
                        entry.read_to_end(&mut data).map_err(corrupt)?;
                        let load = Load::Rows {
                            export: dir.clone(),
                            header: *header,
                            data,
                        };
                        if loads.blocking_send(load).is_err() {
                            break;
                        }
                        continue;
                    }
                }
                if entry.header().entry_type().is_dir()
                    && let Ok(mtime) = entry.header().mtime()
                {
                    dir_mtimes.push((to.join(&path), mtime));
                }
                let unpacked = entry.unpack_in(&to).map_err(|e| Error::Io {
                    context: "extract",
                    path: to.join(&path),
                    source: e,
                })?;
                if unpacked {
                    files += 1;
                }
            }
        }
        drop(loads);
        // A directory's mtime changes as entries land in it: set them last, deepest first.
        dir_mtimes.sort_by(|a, b| b.0.cmp(&a.0));
        for (dir, mtime) in dir_mtimes {
            let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime);
            std::fs::File::open(&dir)
                .and_then(|d| d.set_modified(at))
                .map_err(Error::io("set the mtime of", &dir))?;
        }
        io::copy(&mut counted, &mut io::sink())
            .map_err(|e| Error::Mismatch(format!("reading the archive failed: {e}")))?;
        Ok((files, counted.hex()))
    });

    let mut tables = Vec::new();
    let mut targets: BTreeMap<String, String> = BTreeMap::new();
    let mut load_error = None;
    while let Some(load) = loads_rx.recv().await {
        let (Some(client), Some(schema)) = (&client, &request.into_schema) else {
            continue;
        };
        let result = match load {
            Load::Schema(dir, table) => create_table(client, schema, &table).await.map(|target| {
                tables.push((target.clone(), 0));
                targets.insert(dir, target);
            }),
            Load::Rows {
                export,
                header,
                data,
            } => match targets.get(&export) {
                Some(target) => copy_rows(client, target, header, data).await.map(|rows| {
                    if let Some(entry) = tables.iter_mut().find(|(t, _)| t == target) {
                        entry.1 += rows;
                    }
                }),
                None => Err(Error::Mismatch(format!(
                    "rows of `{export}` come before its schema"
                ))),
            },
        };
        if let Err(error) = result {
            load_error = Some(error);
            break;
        }
    }
    drop(loads_rx);
    let extracted = extractor
        .await
        .map_err(|e| Error::Internal(format!("the extractor crashed: {e}")))?;
    let (files, sha256) = match (load_error, extracted) {
        (Some(error), _) | (None, Err(error)) => return Err(error),
        (None, Ok(done)) => done,
    };
    if sha256 != manifest.archive.sha256 {
        return Err(Error::Mismatch(format!(
            "the archive's SHA-256 is {sha256}; the manifest says {}: nothing was loaded",
            manifest.archive.sha256
        )));
    }
    if let Some(client) = &client {
        client
            .batch_execute("COMMIT")
            .await
            .map_err(Error::db("committing the restored tables"))?;
    }
    Ok(RestoreReport {
        files,
        tables,
        sha256,
    })
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// `schema.<last part of the export's name>`, created with the exported columns.
async fn create_table(
    client: &tokio_postgres::Client,
    schema: &str,
    table: &TableSchema,
) -> Result<String, Error> {
    let base = table.name.rsplit('.').next().unwrap_or(&table.name);
    let target = format!("{}.{}", quote(schema), quote(base));
    let mut columns: Vec<String> = table
        .columns
        .iter()
        .map(|c| {
            format!(
                "{} {}{}",
                quote(&c.name),
                c.data_type,
                if c.not_null { " NOT NULL" } else { "" }
            )
        })
        .collect();
    if !table.primary_key.is_empty() {
        let key: Vec<String> = table.primary_key.iter().map(|k| quote(k)).collect();
        columns.push(format!("PRIMARY KEY ({})", key.join(", ")));
    }
    client
        .batch_execute(&format!("CREATE TABLE {target} ({})", columns.join(", ")))
        .await
        .map_err(|e| {
            Error::Invalid(format!(
                "restoring `{}` as {target}: {}",
                table.name,
                crate::error::describe(&e)
            ))
        })?;
    Ok(target)
}

async fn copy_rows(
    client: &tokio_postgres::Client,
    target: &str,
    header: bool,
    data: Vec<u8>,
) -> Result<u64, Error> {
    let sink = client
        .copy_in::<_, bytes::Bytes>(&format!(
            "COPY {target} FROM STDIN (FORMAT csv, HEADER {header})"
        ))
        .await
        .map_err(Error::db(format!("loading {target}")))?;
    let mut sink = std::pin::pin!(sink);
    sink.send(bytes::Bytes::from(data))
        .await
        .map_err(Error::db(format!("loading {target}")))?;
    sink.as_mut()
        .finish()
        .await
        .map_err(Error::db(format!("loading {target}")))
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
    store.check_destination(dest).await?;
    let mut listed = Vec::new();
    for name in store.list(dest).await? {
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

/// Aborts uploads under `dest` started before `older_than` ago (stopped or crashed `create`s
/// nobody resumed). Returns what was aborted.
pub async fn cleanup(
    dest: &Destination,
    older_than: std::time::Duration,
) -> Result<Vec<OpenUpload>, Error> {
    let store = Store::for_destination(dest).await;
    store.check_destination(dest).await?;
    let cutoff = Utc::now() - chrono::Duration::from_std(older_than).unwrap_or_default();
    let mut aborted = Vec::new();
    for upload in store.open_uploads(dest).await? {
        if upload.initiated.is_some_and(|t| t <= cutoff) {
            store.abort_open_upload(dest, &upload).await?;
            aborted.push(upload);
        }
    }
    Ok(aborted)
}

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
