//! `create`: sources -> tar -> parallel gzip -> parts -> destination, all streaming, with each
//! acknowledged part checkpointed so a killed run resumes.
//!
//! Resume works because the stream is deterministic: the same sources give the same bytes, part
//! for part. A resumed run rebuilds the stream from the start, hashes each part, and uploads only
//! those the destination does not already hold (checked against the checkpoint and ListParts).
//! A part whose hash differs from the checkpoint's means the sources changed: the old upload is
//! aborted and the archive is built afresh.
//!
//! Longer than ~600 lines: the streaming pipeline (preflight, `Upload`'s steps, the part sink) is
//! one chain whose invariants (deterministic bytes, checkpoint after each ack) are read together.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sunset_outcome::Shutdown;

use base64::Engine;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use sha2::{Digest, Sha256};
use sunset_checkpoint::FileStore;

use crate::error::Error;
use crate::location::{ARCHIVE_OBJECT, ArchiveRef, Destination};
use crate::manifest::{ArchiveObject, FORMAT_VERSION, Manifest, TableExport};
use crate::pgzip::{BLOCK_SIZE, ParallelGzWriter};
use crate::sources::{self, Export, FileItem};
use crate::store::{S3Options, Store, StoredPart};
use crate::tarball::{self, CopyRows};
use sunset_plan::hex;

/// S3 refuses parts below 5 MiB (all but the last).
pub const MIN_PART_SIZE: u64 = 5 << 20;
/// S3 allows at most 10,000 parts per upload.
const MAX_PARTS: u64 = 10_000;

#[derive(Debug, Clone)]
pub struct CreateRequest {
    pub archive: ArchiveRef,
    pub dirs: Vec<PathBuf>,
    pub tables: Vec<String>,
    pub queries: Vec<(String, String)>,
    pub database_url: Option<String>,
    pub part_size: u64,
    pub concurrency: usize,
    pub level: u32,
    pub threads: usize,
    pub s3: S3Options,
    /// Where checkpoints and run locks live.
    pub state_dir: PathBuf,
    /// Abort an interrupted upload of this archive and start afresh.
    pub restart: bool,
}

/// Live counters for the progress display.
#[derive(Debug, Default)]
pub struct CreateStats {
    /// Source bytes read so far, and an estimate of the total (file sizes and table sizes).
    pub read: AtomicU64,
    pub read_total: AtomicU64,
    pub compressed: AtomicU64,
    /// Bytes the destination holds, counting parts kept from an interrupted run.
    pub uploaded: AtomicU64,
    /// Parts the destination acknowledged in this run, and parts kept from an interrupted one.
    pub parts_uploaded: AtomicU64,
    pub parts_reused: AtomicU64,
}

/// What the checkpoint holds: enough to find the open upload and prove which parts it holds.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct UploadState {
    upload_id: String,
    /// Also the mtime of generated entries, so a resumed run produces the same bytes.
    created_at: DateTime<Utc>,
    part_size: u64,
    parts: BTreeMap<i32, AckedPart>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct AckedPart {
    size: u64,
    etag: String,
    sha256: String,
}

impl AckedPart {
    /// What the destination answered for this part.
    fn stored(&self) -> StoredPart {
        StoredPart {
            size: self.size,
            etag: self.etag.clone(),
        }
    }
}

struct Part {
    number: i32,
    offset: u64,
    bytes: bytes::Bytes,
    sha256: [u8; 32],
}

pub struct Created {
    pub manifest: Manifest,
    pub resumed_parts: u64,
    pub warnings: Vec<String>,
}

/// Checks everything that can be checked before a byte is uploaded. Returns the walked files
/// and resolved exports.
async fn preflight(
    request: &CreateRequest,
    store: &Store,
    client: Option<&tokio_postgres::Client>,
) -> Result<(Vec<FileItem>, Vec<Export>), Error> {
    if request.dirs.is_empty() && request.tables.is_empty() && request.queries.is_empty() {
        return Err(Error::BadInput(
            "nothing to archive: give at least one --dir, --table or --query".into(),
        ));
    }
    if matches!(request.archive.dest, Destination::S3 { .. }) && request.part_size < MIN_PART_SIZE {
        return Err(Error::BadInput(format!(
            "--part-size {}: S3 needs parts of at least 5MiB",
            request.part_size
        )));
    }
    if request.part_size < BLOCK_SIZE as u64 {
        return Err(Error::BadInput(format!(
            "--part-size {}: expected at least 1MiB",
            request.part_size
        )));
    }
    if request.part_size > 5 << 30 {
        return Err(Error::BadInput(format!(
            "--part-size {}: S3 takes parts of at most 5GiB",
            request.part_size
        )));
    }
    if !(1..=9).contains(&request.level) {
        return Err(Error::BadInput(format!(
            "--level {}: expected 1 (fastest) to 9 (smallest)",
            request.level
        )));
    }
    if request.concurrency == 0 {
        return Err(Error::BadInput("--concurrency: expected at least 1".into()));
    }
    let items = sources::walk(&request.dirs)?;
    let exports = match client {
        Some(client) => sources::resolve_exports(client, &request.tables, &request.queries).await?,
        None if request.tables.is_empty() && request.queries.is_empty() => Vec::new(),
        None => {
            return Err(Error::BadInput(
                "--table and --query need a database: pass --database-url or set DATABASE_URL"
                    .into(),
            ));
        }
    };
    store.check_destination().await?;
    store.check_retention(&request.s3).await?;
    Ok((items, exports))
}

/// The fingerprint of everything that shapes the archive's bytes and where they go.
fn fingerprint(request: &CreateRequest) -> String {
    let dirs: Vec<String> = request
        .dirs
        .iter()
        .map(|d| {
            d.canonicalize()
                .unwrap_or_else(|_| d.clone())
                .display()
                .to_string()
        })
        .collect();
    sunset_plan::Fingerprint::of(&serde_json::json!({
        "archive": request.archive.to_string(),
        "dirs": dirs,
        "tables": request.tables,
        "queries": request.queries,
        "part_size": request.part_size,
        "level": request.level,
        "s3": request.s3,
    }))
    .as_str()
    .to_owned()
}

pub async fn create(
    request: &CreateRequest,
    stats: Arc<CreateStats>,
    stop: Shutdown,
) -> Result<Created, Error> {
    let store = Store::for_destination(&request.archive.dest).await;
    let client = match &request.database_url {
        Some(url) if !request.tables.is_empty() || !request.queries.is_empty() => {
            Some(connect(url).await?)
        }
        _ => None,
    };
    let (items, exports) = preflight(request, &store, client.as_ref()).await?;
    let checkpoints =
        FileStore::in_dir(&request.state_dir, &format!("archive {}", request.archive));
    let _lock = checkpoints.lock()?;
    let fingerprint = fingerprint(request);
    let mut resume = checkpoints
        .resume::<UploadState>(&fingerprint, request.restart)?
        .map(|c| c.state);
    if request.restart
        && let Some(old) = checkpoints.load::<UploadState>()?
    {
        store.abort(&request.archive, &old.state.upload_id).await?;
        checkpoints.clear()?;
    }
    if resume.is_none() && store.exists(&request.archive).await? {
        return Err(Error::BadInput(format!(
            "archive `{}` already exists; archives are never overwritten: choose another --name",
            request.archive
        )));
    }
    let mut warnings = Vec::new();
    if request.level == 1 && !exports.is_empty() {
        warnings.push(
            "--level 1 on table data: CSV compresses 2-3x better at the default level 6".to_owned(),
        );
    }
    let estimate: u64 = items
        .iter()
        .filter(|i| i.metadata.is_file())
        .map(|i| i.metadata.len())
        .sum::<u64>()
        + match &client {
            Some(client) => table_bytes(client, &exports).await,
            None => 0,
        };
    stats.read_total.store(estimate, Ordering::Relaxed);
    if estimate / request.part_size >= MAX_PARTS {
        warnings.push(format!(
            "about {} parts of {} bytes: S3 allows 10,000; raise --part-size",
            estimate / request.part_size,
            request.part_size
        ));
    }
    let items = Arc::new(items);
    let exports = Arc::new(exports);
    let client = client.map(Arc::new);
    // One fresh attempt after a resume that found the sources changed.
    for attempt in 0..2 {
        let state = match resume.take() {
            Some(state) => state,
            None => {
                let upload_id = store.begin(&request.archive, &request.s3).await?;
                let state = UploadState {
                    upload_id,
                    created_at: DateTime::from_timestamp(Utc::now().timestamp(), 0)
                        .unwrap_or_default(),
                    part_size: request.part_size,
                    parts: BTreeMap::new(),
                };
                checkpoints.save(&fingerprint, &state)?;
                state
            }
        };
        stats.read.store(0, Ordering::Relaxed);
        stats.compressed.store(0, Ordering::Relaxed);
        stats.uploaded.store(0, Ordering::Relaxed);
        stats.parts_uploaded.store(0, Ordering::Relaxed);
        let upload = Upload {
            request,
            store: &store,
            checkpoints: &checkpoints,
            fingerprint: &fingerprint,
            items: Arc::clone(&items),
            exports: Arc::clone(&exports),
            client: client.clone(),
            stats: &stats,
            stop: &stop,
        };
        let outcome = upload.run(state).await;
        match outcome {
            Err(Error::SourcesChanged(why)) if attempt == 0 => {
                tracing::warn!("{why}; the interrupted upload was aborted, starting afresh");
                warnings.push(format!(
                    "{why}: the interrupted upload was aborted and the archive built afresh"
                ));
                continue;
            }
            Err(error) => return Err(error),
            Ok(mut created) => {
                created.warnings.extend(warnings);
                return Ok(created);
            }
        }
    }
    Err(Error::Internal(
        "the archive could not be built twice in a row".into(),
    ))
}

/// One attempt at the upload, in named steps: [`Upload::reusable_parts`] (what an interrupted
/// run left that still counts), [`Upload::send_parts`] (the tar.gz stream cut into parts and
/// uploaded, a checkpoint after each acknowledgement), [`Upload::complete`] (the object, then
/// the manifest).
struct Upload<'a> {
    request: &'a CreateRequest,
    store: &'a Store,
    checkpoints: &'a FileStore,
    fingerprint: &'a str,
    items: Arc<Vec<FileItem>>,
    exports: Arc<Vec<Export>>,
    client: Option<Arc<tokio_postgres::Client>>,
    stats: &'a Arc<CreateStats>,
    stop: &'a Shutdown,
}

/// What the stream wrote: the entries and exports, the object's size and SHA-256, and the
/// number of its last part.
struct Sent {
    written: tarball::Written,
    size: u64,
    sha256: String,
    last_part: i32,
}

impl Upload<'_> {
    async fn run(&self, mut state: UploadState) -> Result<Created, Error> {
        let reusable = self.reusable_parts(&mut state).await?;
        let snapshot = match &self.client {
            Some(client) => Some(begin_snapshot(client).await?),
            None => None,
        };
        let sent = self.send_parts(&mut state, &reusable).await?;
        if let Some(client) = &self.client {
            client
                .batch_execute("COMMIT")
                .await
                .map_err(Error::db("ending the export snapshot"))?;
        }
        self.complete(state, sent, snapshot).await
    }

    /// The parts of an interrupted run the destination still holds as acknowledged (a fresh
    /// upload when the old one is gone).
    async fn reusable_parts(
        &self,
        state: &mut UploadState,
    ) -> Result<BTreeMap<i32, AckedPart>, Error> {
        let archive = &self.request.archive;
        // Parts from an interrupted run count only if the destination still holds them as acked.
        let expected: BTreeMap<i32, StoredPart> =
            state.parts.iter().map(|(n, p)| (*n, p.stored())).collect();
        let held = match self
            .store
            .stored_parts(archive, &state.upload_id, &expected)
            .await?
        {
            Some(held) => held,
            None => {
                tracing::warn!("the interrupted upload is gone; starting it again");
                state.upload_id = self.store.begin(archive, &self.request.s3).await?;
                state.parts.clear();
                self.checkpoints.save(self.fingerprint, &state)?;
                BTreeMap::new()
            }
        };
        let reusable: BTreeMap<i32, AckedPart> = state
            .parts
            .iter()
            .filter(|(n, p)| {
                held.get(n)
                    .is_some_and(|h| h.size == p.size && same_etag(&h.etag, &p.etag))
            })
            .map(|(n, p)| (*n, p.clone()))
            .collect();
        state.parts = reusable.clone();
        Ok(reusable)
    }

    async fn send_parts(
        &self,
        state: &mut UploadState,
        reusable: &BTreeMap<i32, AckedPart>,
    ) -> Result<Sent, Error> {
        let archive = &self.request.archive;
        let store = self.store;
        let (parts_tx, mut parts_rx) = tokio::sync::mpsc::channel::<Part>(1);
        let producer = {
            let stats = Arc::clone(self.stats);
            let stop = self.stop.clone();
            let level = self.request.level;
            let threads = self.request.threads;
            let part_size = self.request.part_size;
            let export_mtime = u64::try_from(state.created_at.timestamp()).unwrap_or_default();
            let runtime = tokio::runtime::Handle::current();
            let client = self.client.clone();
            let exports = Arc::clone(&self.exports);
            let items = Arc::clone(&self.items);
            tokio::task::spawn_blocking(move || {
                let sink = PartSink::new(parts_tx, part_size, Arc::clone(&stats), stop);
                let gz = ParallelGzWriter::new(sink, level, threads);
                let mut copy = PgCopy {
                    runtime,
                    client,
                    stream: None,
                };
                let (gz, written) =
                    tarball::write_tar(gz, &items, &exports, &mut copy, export_mtime, &stats.read)?;
                let sink = gz.finish().map_err(|e| sink_error(&e))?;
                let (size, sha256) = sink.finish().map_err(|e| sink_error(&e))?;
                Ok::<_, Error>((written, size, sha256))
            })
        };

        let upload_id = state.upload_id.clone();
        let upload_id = upload_id.as_str();
        let mut in_flight = FuturesUnordered::new();
        let mut last_part = 0;
        let mut failure: Option<Error> = None;
        let mut receiving = true;
        while receiving || !in_flight.is_empty() {
            tokio::select! {
                done = in_flight.next(), if !in_flight.is_empty() => {
                    let Some(done) = done else { continue };
                    match done {
                        Ok((number, stored, sha256)) => {
                            let stored: StoredPart = stored;
                            self.stats.uploaded.fetch_add(stored.size, Ordering::Relaxed);
                            self.stats.parts_uploaded.fetch_add(1, Ordering::Relaxed);
                            state.parts.insert(number, AckedPart { size: stored.size, etag: stored.etag, sha256 });
                            self.checkpoints.save(self.fingerprint, &state)?;
                        }
                        Err(error) => {
                            failure.get_or_insert(error);
                            receiving = false;
                            parts_rx.close();
                        }
                    }
                }
                part = parts_rx.recv(), if receiving && in_flight.len() < self.request.concurrency => {
                    let Some(part) = part else { receiving = false; continue };
                    let sha_hex = hex(&part.sha256);
                    last_part = part.number;
                    if let Some(kept) = reusable.get(&part.number) {
                        if kept.sha256 == sha_hex && kept.size == part.bytes.len() as u64 {
                            self.stats.uploaded.fetch_add(kept.size, Ordering::Relaxed);
                            self.stats.parts_reused.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        failure.get_or_insert(Error::SourcesChanged(format!(
                            "part {} of the interrupted upload no longer matches the sources",
                            part.number
                        )));
                        receiving = false;
                        parts_rx.close();
                        continue;
                    }
                    in_flight.push(async move {
                        let stored = self.store
                            .put_part(archive, upload_id, part.number, part.offset, part.bytes, &part.sha256)
                            .await;
                        stored.map(|s| (part.number, s, sha_hex))
                    });
                }
            }
        }
        let produced = producer
            .await
            .map_err(|e| Error::Internal(format!("the archive writer crashed: {e}")))?;
        if let Some(mut error) = failure {
            if matches!(error, Error::SourcesChanged(_)) {
                abandon(store, archive, state, self.checkpoints).await?;
            } else if self.stop.is_requested() {
                error = Error::Stopped;
            }
            return Err(error);
        }
        let (written, size, sha256) = match produced {
            Ok(produced) => produced,
            Err(_) if self.stop.is_requested() => return Err(Error::Stopped),
            Err(error @ Error::SourcesChanged(_)) => {
                abandon(store, archive, state, self.checkpoints).await?;
                return Err(error);
            }
            Err(error) => return Err(error),
        };
        Ok(Sent {
            written,
            size,
            sha256,
            last_part,
        })
    }

    async fn complete(
        &self,
        mut state: UploadState,
        sent: Sent,
        snapshot: Option<String>,
    ) -> Result<Created, Error> {
        let archive = &self.request.archive;
        let Sent {
            written,
            size,
            sha256,
            last_part,
        } = sent;
        // Parts of the interrupted run beyond the new end would corrupt the object.
        state.parts.retain(|n, _| *n <= last_part);
        let completed: BTreeMap<i32, (StoredPart, String)> = state
            .parts
            .iter()
            .map(|(n, p)| {
                (
                    *n,
                    (
                        p.stored(),
                        base64::engine::general_purpose::STANDARD.encode(unhex(&p.sha256)),
                    ),
                )
            })
            .collect();
        self.store
            .complete(archive, &state.upload_id, &completed)
            .await?;

        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            name: archive.name.clone(),
            created_at: state.created_at,
            source_host: gethostname::gethostname().to_string_lossy().into_owned(),
            tool: format!("sunset-archive {}", env!("CARGO_PKG_VERSION")),
            archive: ArchiveObject {
                object: ARCHIVE_OBJECT.to_owned(),
                size,
                sha256,
                part_size: self.request.part_size,
                parts: u32::try_from(completed.len()).unwrap_or(u32::MAX),
                gzip_level: self.request.level,
                gzip_block_size: BLOCK_SIZE as u64,
            },
            entries: written.entries,
            tables: self
                .exports
                .iter()
                .zip(written.exports)
                .map(|(export, result)| TableExport {
                    name: export.schema.name.clone(),
                    source: export.source.clone(),
                    rows: result.rows,
                    snapshot: snapshot.clone().unwrap_or_default(),
                    schema_path: result.schema_path,
                    chunks: result.chunks,
                })
                .collect(),
        };
        let bytes = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| Error::Internal(format!("encoding the manifest: {e}")))?;
        self.store
            .put_manifest(archive, bytes, &self.request.s3)
            .await?;
        self.checkpoints.clear()?;
        Ok(Created {
            manifest,
            resumed_parts: self.stats.parts_reused.load(Ordering::Relaxed),
            warnings: Vec::new(),
        })
    }
}

/// Aborts an upload that cannot be resumed and forgets it, so the next attempt starts afresh.
async fn abandon(
    store: &Store,
    archive: &ArchiveRef,
    state: &UploadState,
    checkpoints: &FileStore,
) -> Result<(), Error> {
    store.abort(archive, &state.upload_id).await?;
    checkpoints.clear()?;
    Ok(())
}

/// Cuts the compressed stream into parts, hashing each part and the whole object.
struct PartSink {
    parts: tokio::sync::mpsc::Sender<Part>,
    part_size: usize,
    buffer: Vec<u8>,
    next_number: i32,
    offset: u64,
    whole: Sha256,
    size: u64,
    stats: Arc<CreateStats>,
    stop: Shutdown,
}

impl PartSink {
    fn new(
        parts: tokio::sync::mpsc::Sender<Part>,
        part_size: u64,
        stats: Arc<CreateStats>,
        stop: Shutdown,
    ) -> PartSink {
        let part_size = usize::try_from(part_size).unwrap_or(usize::MAX);
        PartSink {
            parts,
            part_size,
            buffer: Vec::with_capacity(part_size),
            next_number: 1,
            offset: 0,
            whole: Sha256::new(),
            size: 0,
            stats,
            stop,
        }
    }

    fn send(&mut self, bytes: Vec<u8>) -> std::io::Result<()> {
        if self.stop.is_requested() {
            return Err(std::io::Error::other(STOPPED));
        }
        let part = Part {
            number: self.next_number,
            offset: self.offset,
            sha256: Sha256::digest(&bytes).into(),
            bytes: bytes::Bytes::from(bytes),
        };
        self.next_number += 1;
        self.offset += part.bytes.len() as u64;
        self.parts
            .blocking_send(part)
            .map_err(|_| std::io::Error::other(UPLOAD_ENDED))
    }

    /// Sends the last part and returns the object's size and SHA-256.
    fn finish(mut self) -> std::io::Result<(u64, String)> {
        if !self.buffer.is_empty() || self.next_number == 1 {
            let last = std::mem::take(&mut self.buffer);
            self.send(last)?;
        }
        Ok((self.size, hex(&self.whole.clone().finalize())))
    }
}

const STOPPED: &str = "stopped on request";
const UPLOAD_ENDED: &str = "the upload ended early";

impl Write for PartSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.whole.update(buf);
        self.size += buf.len() as u64;
        self.stats
            .compressed
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        let mut rest = buf;
        while !rest.is_empty() {
            let room = self.part_size - self.buffer.len();
            let taken = room.min(rest.len());
            self.buffer.extend_from_slice(&rest[..taken]);
            rest = &rest[taken..];
            if self.buffer.len() == self.part_size {
                let full = std::mem::replace(&mut self.buffer, Vec::with_capacity(self.part_size));
                self.send(full)?;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The writer's IO errors that mean "the upload side stopped" are not the writer's fault.
fn sink_error(error: &std::io::Error) -> Error {
    Error::Internal(format!("writing the archive stream: {error}"))
}

/// COPY rows pulled from the async connection by the blocking tar writer.
struct PgCopy {
    runtime: tokio::runtime::Handle,
    client: Option<Arc<tokio_postgres::Client>>,
    stream: Option<std::pin::Pin<Box<tokio_postgres::CopyOutStream>>>,
}

impl CopyRows for PgCopy {
    fn start(&mut self, copy_sql: &str) -> Result<(), Error> {
        let client = self
            .client
            .clone()
            .ok_or_else(|| Error::Internal("a table export without a database".into()))?;
        let stream = self
            .runtime
            .block_on(client.copy_out(copy_sql))
            .map_err(Error::db("starting the export"))?;
        self.stream = Some(Box::pin(stream));
        Ok(())
    }

    fn next_row(&mut self) -> Result<Option<bytes::Bytes>, Error> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(None);
        };
        match self.runtime.block_on(stream.next()) {
            Some(row) => row.map(Some).map_err(Error::db("exporting a table")),
            None => {
                self.stream = None;
                Ok(None)
            }
        }
    }
}

pub(crate) async fn connect(url: &str) -> Result<tokio_postgres::Client, Error> {
    Ok(sunset_pg::connect(url, "sunset-archive").await?)
}

/// Every export of one archive reads one snapshot. Sequential scans start at the first block
/// (no synchronized scans), so an unchanged table exports the same bytes on a resumed run.
async fn begin_snapshot(client: &tokio_postgres::Client) -> Result<String, Error> {
    client
        .batch_execute(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET LOCAL synchronize_seqscans = off",
        )
        .await
        .map_err(Error::db("starting the export snapshot"))?;
    let row = client
        .query_one("SELECT pg_export_snapshot()", &[])
        .await
        .map_err(Error::db("exporting the snapshot"))?;
    Ok(row.get(0))
}

/// Table sizes on disk, as the estimate of their CSV size for the progress bar.
async fn table_bytes(client: &tokio_postgres::Client, exports: &[Export]) -> u64 {
    let mut total = 0;
    for export in exports.iter().filter(|e| e.dir.starts_with("tables/")) {
        let name = export.source.clone();
        if let Ok(row) = client
            .query_one(
                "SELECT COALESCE(pg_table_size(to_regclass($1)), 0)::int8",
                &[&name],
            )
            .await
        {
            total += u64::try_from(row.get::<_, i64>(0)).unwrap_or_default();
        }
    }
    total
}

/// ETags come back quoted from some calls and not from others.
fn same_etag(a: &str, b: &str) -> bool {
    a.trim_matches('"') == b.trim_matches('"')
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len() / 2)
        .filter_map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok())
        .collect()
}
