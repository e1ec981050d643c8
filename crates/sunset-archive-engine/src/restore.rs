//! `restore`: an archive's files into a directory and its exports into a schema, with nothing
//! of the archive trusted until it matched its manifest.
//!
//! The manifest is checked whole first (`guard`), then the object is streamed once: each entry
//! is matched against its manifest entry before its bytes are used, files land in a staging
//! directory inside `--to`, rows go into one open transaction. Only when every entry, the
//! object's size and SHA-256 and every row count matched are the files moved into place and the
//! transaction committed; any failure removes the staging directory and rolls back.
//! No text from the archive reaches SQL except column types, which the server resolves
//! (`to_regtype`) and the catalog confirms after the table exists.
//!
//! Longer than ~600 lines: one streaming pass whose every check must hold before anything is
//! kept; split, its order would be harder to audit.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use futures_util::SinkExt;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::error::Error;
use crate::guard::{self, SPECIAL_BITS};
use crate::location::ArchiveRef;
use crate::manifest::{Entry, EntryKind, Manifest, TableSchema};
use crate::sources::quote;
use crate::store::Store;
use crate::tarball::Hashing;
use sunset_plan::hex;

#[derive(Debug, Clone)]
pub struct RestoreRequest {
    pub archive: ArchiveRef,
    pub to: PathBuf,
    /// With a database, exports are loaded into `into_schema`; without, they are extracted as
    /// CSV files under `to` like everything else.
    pub database_url: Option<String>,
    pub into_schema: Option<String>,
    /// Give files the owners the archive records (GNU tar's `--same-owner`; needs root).
    pub same_owner: bool,
    /// Keep setuid, setgid and sticky bits; without it an archive holding them is refused.
    pub preserve_special_bits: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RestoreReport {
    pub files: usize,
    /// Table name in the target schema, and rows loaded.
    pub tables: Vec<(String, u64)>,
    pub sha256: String,
}

/// Rows travel to the database in pieces of this size, so memory stays flat whatever an
/// entry's size.
const PIECE: usize = 256 << 10;

enum Load {
    Schema { export: usize, schema: TableSchema },
    Begin { export: usize, header: bool },
    Data(bytes::Bytes),
    End,
}

pub async fn restore(
    request: &RestoreRequest,
    read: Arc<AtomicU64>,
) -> Result<RestoreReport, Error> {
    if request.into_schema.is_some() && request.database_url.is_none() {
        return Err(Error::BadInput(
            "--into-schema needs --database-url (or DATABASE_URL)".into(),
        ));
    }
    if request.same_owner && !is_root() {
        return Err(Error::BadInput(
            "--same-owner needs root: only root can give files to other users".into(),
        ));
    }
    let store = Store::for_destination(&request.archive.dest).await;
    let manifest = Arc::new(Manifest::parse(
        &store.get_manifest(&request.archive).await?,
        &request.archive.to_string(),
    )?);
    guard::check_manifest(&manifest, request.preserve_special_bits).map_err(Error::Refused)?;
    let load_tables = request.into_schema.is_some();
    let landing = Landing::prepare(&request.to, &manifest, load_tables)?;
    let (report, loader, dirs) =
        match restore_into(request, &store, &manifest, &landing, read).await {
            Ok(restored) => restored,
            Err(error) => {
                landing.discard();
                return Err(error);
            }
        };
    let moved = match landing.move_into_place(&dirs) {
        Ok(moved) => moved,
        Err(error) => {
            landing.discard();
            return Err(error);
        }
    };
    if let Some(loader) = loader
        && let Err(error) = loader.commit().await
    {
        landing.undo(moved);
        landing.discard();
        return Err(error);
    }
    landing.finish();
    Ok(report)
}

type Restored = (RestoreReport, Option<TableLoader>, Vec<DirMeta>);

async fn restore_into(
    request: &RestoreRequest,
    store: &Store,
    manifest: &Arc<Manifest>,
    landing: &Landing,
    read: Arc<AtomicU64>,
) -> Result<Restored, Error> {
    let mut loader = match (&request.database_url, &request.into_schema) {
        (Some(url), Some(schema)) => Some(TableLoader::begin(url, schema).await?),
        _ => None,
    };
    let reader = store.open_archive(&request.archive).await?;
    let (loads, mut loads_rx) = mpsc::channel::<Load>(8);
    let options = Extract {
        staging: landing.staging.clone(),
        load_tables: loader.is_some(),
        same_owner: request.same_owner,
        keep_special: request.preserve_special_bits,
    };
    let extracted_manifest = Arc::clone(manifest);
    let extractor = tokio::task::spawn_blocking(move || {
        extract(reader, &read, &extracted_manifest, &options, &loads)
    });
    let loaded = match &mut loader {
        Some(loader) => loader.run(manifest, &mut loads_rx).await,
        None => {
            while loads_rx.recv().await.is_some() {}
            Ok(())
        }
    };
    drop(loads_rx);
    let extracted = extractor
        .await
        .map_err(|e| Error::Internal(format!("the extractor crashed: {e}")))?;
    // The loader fails only on its own account (a stopped extractor just ends its input), so
    // its error comes first; the extractor's explains everything else.
    let (files, sha256, dirs) = match (extracted, loaded) {
        (_, Err(error)) | (Err(error), Ok(())) => return Err(error),
        (Ok(done), Ok(())) => done,
    };
    let mut tables = Vec::new();
    if let Some(loader) = &loader {
        for (export, table) in manifest.tables.iter().enumerate() {
            let (target, rows) = loader.loaded(export).ok_or_else(|| {
                Error::Mismatch(format!("export `{}` was never loaded", table.name))
            })?;
            if rows != table.rows {
                return Err(Error::Mismatch(format!(
                    "export `{}` loaded {rows} rows; the manifest says {}: nothing was loaded",
                    table.name, table.rows
                )));
            }
            tables.push((target, rows));
        }
    }
    Ok((
        RestoreReport {
            files,
            tables,
            sha256,
        },
        loader,
        dirs,
    ))
}

struct Extract {
    staging: PathBuf,
    load_tables: bool,
    same_owner: bool,
    keep_special: bool,
}

/// A directory's mode and mtime, set after everything inside it landed.
struct DirMeta {
    path: String,
    mode: u32,
    mtime: u64,
}

/// Role of an entry in an export: its schema, or chunk `n` (0 carries the CSV header).
enum Part {
    Schema(usize),
    Chunk(usize, bool),
}

/// The blocking half: reads the tar stream once, checks every entry, writes files into the
/// staging directory and sends schemas and rows to the loader. Returns the files written, the
/// object's SHA-256 and the directories whose metadata is set at the end.
fn extract(
    reader: Box<dyn Read + Send>,
    read: &AtomicU64,
    manifest: &Manifest,
    options: &Extract,
    loads: &mpsc::Sender<Load>,
) -> Result<(usize, String, Vec<DirMeta>), Error> {
    let mut listing =
        guard::check_manifest(manifest, options.keep_special).map_err(Error::Refused)?;
    let mut parts: BTreeMap<String, Part> = BTreeMap::new();
    if options.load_tables {
        for (export, table) in manifest.tables.iter().enumerate() {
            parts.insert(
                guard::normalise(&table.schema_path).map_err(Error::Refused)?,
                Part::Schema(export),
            );
            for (n, chunk) in table.chunks.iter().enumerate() {
                parts.insert(
                    guard::normalise(chunk).map_err(Error::Refused)?,
                    Part::Chunk(export, n == 0),
                );
            }
        }
    }
    let mut counted = Hashing::new(reader, read);
    let mut files = 0;
    let mut dirs = Vec::new();
    // A closed channel means the loader failed: stop, its error is the one reported.
    let send = |load: Load| {
        loads
            .blocking_send(load)
            .map_err(|_| Error::Internal("the loader stopped".into()))
    };
    {
        let corrupt =
            |e: io::Error| Error::Mismatch(format!("the archive is not a readable tar.gz: {e}"));
        let mut tar = tar::Archive::new(flate2::read::MultiGzDecoder::new(&mut counted));
        for entry in tar.entries().map_err(corrupt)? {
            let mut entry = entry.map_err(corrupt)?;
            let (path, listed) =
                guard::match_entry(&entry, &mut listing).map_err(Error::Refused)?;
            match parts.get(&path) {
                Some(Part::Schema(export)) => {
                    let mut text = Vec::new();
                    (&mut entry)
                        .take(guard::MAX_SCHEMA_BYTES)
                        .read_to_end(&mut text)
                        .map_err(corrupt)?;
                    check_content(
                        &path,
                        listed,
                        text.len() as u64,
                        &hex(&Sha256::digest(&text)),
                    )?;
                    let schema: TableSchema = serde_json::from_slice(&text).map_err(|e| {
                        Error::Refused(format!("`{path}` is not a table schema: {e}"))
                    })?;
                    if schema.name != manifest.tables[*export].name {
                        return Err(Error::Refused(format!(
                            "`{path}` describes `{}`; the manifest says `{}`",
                            schema.name, manifest.tables[*export].name
                        )));
                    }
                    send(Load::Schema {
                        export: *export,
                        schema,
                    })?;
                }
                Some(Part::Chunk(export, header)) => {
                    send(Load::Begin {
                        export: *export,
                        header: *header,
                    })?;
                    let (size, sha256) = stream(&mut entry, |piece| {
                        send(Load::Data(bytes::Bytes::copy_from_slice(piece)))
                    })
                    .map_err(|e| match e {
                        Streamed::Read(e) => corrupt(e),
                        Streamed::Sink(e) => e,
                    })?;
                    check_content(&path, listed, size, &sha256)?;
                    send(Load::End)?;
                }
                None => {
                    let disk = options.staging.join(&path);
                    match listed.kind {
                        EntryKind::Dir => {
                            make_dir(&disk)?;
                            dirs.push(DirMeta {
                                path: path.clone(),
                                mode: permitted(listed.mode, options.keep_special),
                                mtime: listed.mtime,
                            });
                        }
                        EntryKind::File => {
                            write_file(&mut entry, &disk, &path, listed, options.keep_special)?;
                            files += 1;
                        }
                        EntryKind::Symlink => {
                            if let Some(parent) = disk.parent() {
                                make_dir(parent)?;
                            }
                            let target = listed.link_target.as_deref().unwrap_or_default();
                            std::os::unix::fs::symlink(target, &disk)
                                .map_err(Error::io("create symlink", &disk))?;
                            let at = filetime::FileTime::from_unix_time(
                                i64::try_from(listed.mtime).unwrap_or_default(),
                                0,
                            );
                            filetime::set_symlink_file_times(&disk, at, at)
                                .map_err(Error::io("set the mtime of", &disk))?;
                            files += 1;
                        }
                    }
                    if options.same_owner {
                        let uid = u32::try_from(listed.uid).ok();
                        let gid = u32::try_from(listed.gid).ok();
                        std::os::unix::fs::lchown(&disk, uid, gid)
                            .map_err(Error::io("set the owner of", &disk))?;
                    }
                }
            }
        }
    }
    if let Some(missing) = listing.entries.keys().next() {
        return Err(Error::Mismatch(format!(
            "`{missing}` is in the manifest but missing from the archive"
        )));
    }
    io::copy(&mut counted, &mut io::sink())
        .map_err(|e| Error::Mismatch(format!("reading the archive failed: {e}")))?;
    if counted.count != manifest.archive.size {
        return Err(Error::Mismatch(format!(
            "the object is {} bytes; the manifest says {}: nothing was restored",
            counted.count, manifest.archive.size
        )));
    }
    let sha256 = counted.hex();
    if sha256 != manifest.archive.sha256 {
        return Err(Error::Mismatch(format!(
            "the archive's SHA-256 is {sha256}; the manifest says {}: nothing was restored",
            manifest.archive.sha256
        )));
    }
    Ok((files, sha256, dirs))
}

enum Streamed {
    Read(io::Error),
    Sink(Error),
}

/// Reads an entry to its end in pieces, handing each to `sink`; returns its size and SHA-256.
fn stream<R: Read>(
    entry: &mut R,
    mut sink: impl FnMut(&[u8]) -> Result<(), Error>,
) -> Result<(u64, String), Streamed> {
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buffer = vec![0u8; PIECE];
    loop {
        let n = entry.read(&mut buffer).map_err(Streamed::Read)?;
        if n == 0 {
            return Ok((size, hex(&hasher.finalize())));
        }
        hasher.update(&buffer[..n]);
        size += n as u64;
        sink(&buffer[..n]).map_err(Streamed::Sink)?;
    }
}

fn check_content(path: &str, listed: &Entry, size: u64, sha256: &str) -> Result<(), Error> {
    if size != listed.size || listed.sha256.as_deref() != Some(sha256) {
        return Err(Error::Mismatch(format!(
            "`{path}` differs from the manifest: {size} bytes with SHA-256 {sha256}, expected {} bytes with {}: nothing was restored",
            listed.size,
            listed.sha256.as_deref().unwrap_or("-")
        )));
    }
    Ok(())
}

fn permitted(mode: u32, keep_special: bool) -> u32 {
    if keep_special {
        mode & 0o7777
    } else {
        mode & 0o777 & !SPECIAL_BITS
    }
}

fn make_dir(path: &Path) -> Result<(), Error> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(Error::io("create directory", path))
}

/// A new file (never an existing one, never through a link), its content checked as it is
/// written, then its mode and mtime.
fn write_file<R: Read>(
    entry: &mut R,
    disk: &Path,
    path: &str,
    listed: &Entry,
    keep_special: bool,
) -> Result<(), Error> {
    if let Some(parent) = disk.parent() {
        make_dir(parent)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(disk)
        .map_err(Error::io("create", disk))?;
    let (size, sha256) = stream(entry, |piece| {
        file.write_all(piece).map_err(Error::io("write", disk))
    })
    .map_err(|e| match e {
        Streamed::Read(e) => Error::Mismatch(format!("`{path}` cannot be read: {e}")),
        Streamed::Sink(e) => e,
    })?;
    check_content(path, listed, size, &sha256)?;
    file.set_permissions(std::fs::Permissions::from_mode(permitted(
        listed.mode,
        keep_special,
    )))
    .map_err(Error::io("set the mode of", disk))?;
    file.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(listed.mtime))
        .map_err(Error::io("set the mtime of", disk))
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// Where the restore lands: `--to` (made if missing, removed again on failure) and a staging
/// directory inside it that holds everything until it all matched.
struct Landing {
    to: PathBuf,
    staging: PathBuf,
    /// Directories this restore made for `--to`, outermost first.
    created: Vec<PathBuf>,
}

const STAGING_PREFIX: &str = ".sunset-restore-";

impl Landing {
    /// Refuses, before writing anything, an archive that would overwrite something in `--to`
    /// or write through a link there.
    fn prepare(to: &Path, manifest: &Manifest, load_tables: bool) -> Result<Landing, Error> {
        let mut created = Vec::new();
        let mut missing = Some(to);
        while let Some(dir) = missing {
            match std::fs::symlink_metadata(dir) {
                Ok(_) => break,
                Err(_) => {
                    created.insert(0, dir.to_owned());
                    missing = dir.parent().filter(|p| !p.as_os_str().is_empty());
                }
            }
        }
        if to.exists() && !to.is_dir() {
            return Err(Error::BadInput(format!(
                "--to `{}` is not a directory",
                to.display()
            )));
        }
        let skipped: Vec<String> = if load_tables {
            manifest
                .tables
                .iter()
                .flat_map(|t| std::iter::once(&t.schema_path).chain(&t.chunks))
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        if to.exists() {
            for entry in &manifest.entries {
                if skipped.contains(&entry.path) {
                    continue;
                }
                check_free(to, &entry.path, entry.kind)?;
            }
        }
        std::fs::create_dir_all(to)
            .map_err(|e| Error::BadInput(format!("--to `{}`: {e}", to.display())))?;
        let to = to.canonicalize().map_err(Error::io("resolve", to))?;
        remove_stale_staging(&to);
        let staging = to.join(format!("{STAGING_PREFIX}{}", std::process::id()));
        let landing = Landing {
            to,
            staging,
            created,
        };
        if let Err(e) = std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&landing.staging)
        {
            let staging = landing.staging.clone();
            landing.discard();
            return Err(Error::io("create the staging directory", &staging)(e));
        }
        Ok(landing)
    }

    /// Moves every staged top directory into `--to`, merging into directories that exist;
    /// returns what moved, so a failed commit can move it back.
    fn move_into_place(&self, dirs: &[DirMeta]) -> Result<Vec<(PathBuf, PathBuf)>, Error> {
        let mut moved = Vec::new();
        let result =
            merge(&self.staging, &self.to, &mut moved).and_then(|()| self.set_dir_meta(dirs));
        match result {
            Ok(()) => Ok(moved),
            Err(error) => {
                self.undo(moved);
                Err(error)
            }
        }
    }

    /// Modes and mtimes of directories last, deepest first: entries landing change them.
    fn set_dir_meta(&self, dirs: &[DirMeta]) -> Result<(), Error> {
        let mut dirs: Vec<&DirMeta> = dirs.iter().collect();
        dirs.sort_by(|a, b| b.path.cmp(&a.path));
        for dir in dirs {
            let disk = self.to.join(&dir.path);
            let apply = || -> io::Result<()> {
                let handle = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_DIRECTORY)
                    .open(&disk)?;
                handle.set_modified(
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(dir.mtime),
                )?;
                handle.set_permissions(std::fs::Permissions::from_mode(dir.mode))
            };
            apply().map_err(Error::io("set the mode and mtime of", &disk))?;
        }
        Ok(())
    }

    fn undo(&self, moved: Vec<(PathBuf, PathBuf)>) {
        for (from, to) in moved.into_iter().rev() {
            if let Err(e) = std::fs::rename(&to, &from) {
                tracing::warn!("could not move `{}` back: {e}", to.display());
            }
        }
    }

    fn finish(&self) {
        if let Err(e) = std::fs::remove_dir_all(&self.staging) {
            tracing::warn!("could not remove `{}`: {e}", self.staging.display());
        }
    }

    /// Leaves `--to` as it was: the staging directory and any directory made for `--to` go.
    fn discard(&self) {
        let _ = std::fs::remove_dir_all(&self.staging);
        for dir in self.created.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// An entry may land at `to/path` only if nothing is there (a directory may merge into a real
/// directory) and no existing parent on the way is a link or a file.
fn check_free(to: &Path, path: &str, kind: EntryKind) -> Result<(), Error> {
    let path = path.strip_suffix('/').unwrap_or(path);
    let parts: Vec<&str> = path.split('/').collect();
    let mut disk = to.to_owned();
    for (i, part) in parts.iter().enumerate() {
        disk.push(part);
        let last = i + 1 == parts.len();
        let Ok(meta) = std::fs::symlink_metadata(&disk) else {
            return Ok(());
        };
        let real_dir = meta.file_type().is_dir();
        if real_dir && (!last || kind == EntryKind::Dir) {
            continue;
        }
        return Err(Error::Refused(format!(
            "`{}` already exists in --to{}; restore never overwrites or writes through links",
            disk.display(),
            if meta.file_type().is_symlink() {
                " as a symlink"
            } else {
                ""
            }
        )));
    }
    Ok(())
}

fn merge(from: &Path, to: &Path, moved: &mut Vec<(PathBuf, PathBuf)>) -> Result<(), Error> {
    let mut children: Vec<PathBuf> = std::fs::read_dir(from)
        .map_err(Error::io("list", from))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(Error::io("list", from))?;
    children.sort();
    for child in children {
        let Some(name) = child.file_name() else {
            continue;
        };
        let target = to.join(name);
        match std::fs::symlink_metadata(&target) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::rename(&child, &target).map_err(Error::io("move into place", &target))?;
                moved.push((child, target));
            }
            Ok(meta)
                if meta.file_type().is_dir()
                    && std::fs::symlink_metadata(&child).is_ok_and(|m| m.file_type().is_dir()) =>
            {
                merge(&child, &target, moved)?;
            }
            Ok(_) => {
                return Err(Error::Refused(format!(
                    "`{}` appeared in --to during the restore; nothing was overwritten",
                    target.display()
                )));
            }
            Err(e) => return Err(Error::io("stat", &target)(e)),
        }
    }
    Ok(())
}

/// Staging directories of restores whose process is gone (killed mid-restore).
fn remove_stale_staging(to: &Path) {
    let Ok(entries) = std::fs::read_dir(to) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(STAGING_PREFIX) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Exports into a schema, in one transaction that commits only after everything matched.
struct TableLoader {
    client: tokio_postgres::Client,
    schema: String,
    /// Per export: the table made for it and the rows loaded into it.
    loaded: BTreeMap<usize, (String, u64)>,
}

impl TableLoader {
    async fn begin(url: &str, schema: &str) -> Result<TableLoader, Error> {
        let client = crate::create::connect(url).await?;
        client
            .execute("BEGIN", &[])
            .await
            .map_err(Error::db("starting the restore transaction"))?;
        client
            .execute(
                &format!("CREATE SCHEMA IF NOT EXISTS {}", quote(schema)),
                &[],
            )
            .await
            .map_err(|e| {
                Error::BadInput(format!(
                    "--into-schema `{schema}`: {}",
                    crate::error::describe(&e)
                ))
            })?;
        Ok(TableLoader {
            client,
            schema: schema.to_owned(),
            loaded: BTreeMap::new(),
        })
    }

    fn loaded(&self, export: usize) -> Option<(String, u64)> {
        self.loaded.get(&export).cloned()
    }

    async fn run(
        &mut self,
        manifest: &Manifest,
        loads: &mut mpsc::Receiver<Load>,
    ) -> Result<(), Error> {
        while let Some(load) = loads.recv().await {
            match load {
                Load::Schema { export, schema } => {
                    let target = self
                        .create_table(&manifest.tables[export].name, &schema)
                        .await?;
                    self.loaded.insert(export, (target, 0));
                }
                Load::Begin { export, header } => {
                    let Some((target, _)) = self.loaded.get(&export).cloned() else {
                        return Err(Error::Refused(format!(
                            "rows of `{}` come before its schema",
                            manifest.tables[export].name
                        )));
                    };
                    let Some(rows) = self.copy(&target, header, loads).await? else {
                        // The extractor stopped mid-entry; its error is the one reported.
                        return Ok(());
                    };
                    if let Some(entry) = self.loaded.get_mut(&export) {
                        entry.1 += rows;
                    }
                }
                Load::Data(_) | Load::End => {
                    return Err(Error::Internal("rows outside a COPY".into()));
                }
            }
        }
        Ok(())
    }

    /// Streams one chunk; `None` when the extractor stopped before its end (the COPY is
    /// aborted by dropping the sink).
    async fn copy(
        &self,
        target: &str,
        header: bool,
        loads: &mut mpsc::Receiver<Load>,
    ) -> Result<Option<u64>, Error> {
        let failed = || Error::db(format!("loading {target}"));
        // HEADER MATCH: the first chunk's header must name the table's columns, in order.
        let header = if header { "MATCH" } else { "false" };
        let sink = self
            .client
            .copy_in::<_, bytes::Bytes>(&format!(
                "COPY {target} FROM STDIN (FORMAT csv, HEADER {header})"
            ))
            .await
            .map_err(failed())?;
        let mut sink = std::pin::pin!(sink);
        loop {
            match loads.recv().await {
                Some(Load::Data(piece)) => sink.send(piece).await.map_err(failed())?,
                Some(Load::End) => return sink.as_mut().finish().await.map(Some).map_err(failed()),
                Some(_) => {
                    return Err(Error::Internal("a COPY interrupted by another load".into()));
                }
                None => return Ok(None),
            }
        }
    }

    /// `schema.<last part of the export's name>` with the exported columns. Types come from
    /// the archive, so each must be a plain type name the server resolves, and the catalog
    /// must show exactly those types afterwards.
    async fn create_table(&self, export: &str, table: &TableSchema) -> Result<String, Error> {
        let base = table.name.rsplit('.').next().unwrap_or(&table.name);
        let target = format!("{}.{}", quote(&self.schema), quote(base));
        let mut columns = Vec::new();
        let mut type_oids = Vec::new();
        for column in &table.columns {
            let refuse = |why: String| {
                Error::Refused(format!(
                    "export `{export}`, column `{}`: type `{}` {why}",
                    column.name, column.data_type
                ))
            };
            if column.name.is_empty() || !is_plain_type_name(&column.data_type) {
                return Err(refuse("is not a plain type name".into()));
            }
            let oid: Option<u32> = self
                .client
                .query_one("SELECT to_regtype($1::text)::oid", &[&column.data_type])
                .await
                .map_err(|e| refuse(format!("does not resolve: {}", crate::error::describe(&e))))?
                .get(0);
            let oid = oid.ok_or_else(|| refuse("is not a type of this database".into()))?;
            type_oids.push(oid);
            columns.push(format!(
                "{} {}{}",
                quote(&column.name),
                column.data_type,
                if column.not_null { " NOT NULL" } else { "" }
            ));
        }
        if !table.primary_key.is_empty() {
            if let Some(unknown) = table
                .primary_key
                .iter()
                .find(|k| !table.columns.iter().any(|c| &c.name == *k))
            {
                return Err(Error::Refused(format!(
                    "export `{export}`: primary key column `{unknown}` is not one of its columns"
                )));
            }
            let key: Vec<String> = table.primary_key.iter().map(|k| quote(k)).collect();
            columns.push(format!("PRIMARY KEY ({})", key.join(", ")));
        }
        self.client
            .execute(
                &format!("CREATE TABLE {target} ({})", columns.join(", ")),
                &[],
            )
            .await
            .map_err(|e| {
                Error::BadInput(format!(
                    "restoring `{export}` as {target}: {}",
                    crate::error::describe(&e)
                ))
            })?;
        let made: Vec<u32> = self
            .client
            .query(
                "SELECT atttypid FROM pg_attribute WHERE attrelid = to_regclass($1::text)
                 AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                &[&target],
            )
            .await
            .map_err(Error::db(format!("reading back {target}")))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if made != type_oids {
            return Err(Error::Refused(format!(
                "export `{export}`: {target} came out with other column types than its schema names"
            )));
        }
        Ok(target)
    }

    async fn commit(self) -> Result<(), Error> {
        self.client
            .execute("COMMIT", &[])
            .await
            .map_err(Error::db("committing the restored tables"))?;
        Ok(())
    }
}

/// A type name as `format_type` prints one: words, dots, quoted identifiers, a modifier list of
/// numbers in parentheses and array brackets. Nothing that could end the column definition or
/// start another clause (no `;`, quotes, comments, operators, commas outside the modifiers).
fn is_plain_type_name(text: &str) -> bool {
    let mut chars = text.chars().peekable();
    let mut in_modifiers = false;
    let mut any = false;
    while let Some(c) = chars.next() {
        match c {
            '"' if !in_modifiers => loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                    }
                    Some('"') => break,
                    Some('\0') | None => return false,
                    Some(_) => {}
                }
            },
            '(' if !in_modifiers => in_modifiers = true,
            ')' if in_modifiers => in_modifiers = false,
            ',' if in_modifiers => {}
            c if c.is_ascii_digit() || c == ' ' => {}
            c if !in_modifiers && (c.is_alphanumeric() || matches!(c, '_' | '.' | '[' | ']')) => {}
            _ => return false,
        }
        any = true;
    }
    any && !in_modifiers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_type_names_pass() {
        for good in [
            "integer",
            "character varying(20)",
            "numeric(12,4)",
            "timestamp(3) with time zone",
            "text[]",
            "integer[3]",
            "\"my schema\".\"odd \"\" type\"",
            "_int4",
        ] {
            assert!(is_plain_type_name(good), "{good}");
        }
        for bad in [
            "text); COMMIT; DROP TABLE public.victim; COMMIT; BEGIN; CREATE TABLE zz (id int",
            "int -- comment",
            "int /* x */",
            "int, evil int",
            "numeric(a)",
            "int DEFAULT 'x'",
            "\"unterminated",
            "int)",
            "",
            "int $1",
        ] {
            assert!(!is_plain_type_name(bad), "{bad}");
        }
    }
}
