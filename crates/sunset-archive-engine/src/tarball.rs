//! Writes the tar stream (on a blocking thread): files with their modes, owners, mtimes and
//! symlinks, then each table export as a `schema.json` and CSV chunks cut at row boundaries.
//! Every entry is hashed as it is written, for the manifest.
//!
//! Table chunks exist because a tar header carries the entry's size before its data, and a
//! COPY's size is known only at its end: a chunk is buffered (up to [`CHUNK_SIZE`]) instead of
//! the whole table.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use sunset_plan::hex;

use crate::error::Error;
use crate::manifest::{Entry, EntryKind};
use crate::sources::{Export, FileItem};

pub(crate) const CHUNK_SIZE: usize = 8 << 20;

/// Rows of one `COPY ... TO STDOUT`, one CopyData message per row (the header first), pulled
/// from the async connection by the blocking writer.
pub(crate) trait CopyRows {
    fn start(&mut self, copy_sql: &str) -> Result<(), Error>;
    fn next_row(&mut self) -> Result<Option<bytes::Bytes>, Error>;
}

/// What the tar writer learned about one export.
#[derive(Debug, Default)]
pub(crate) struct ExportResult {
    pub(crate) rows: u64,
    pub(crate) chunks: Vec<String>,
    pub(crate) schema_path: String,
}

pub(crate) struct Written {
    pub(crate) entries: Vec<Entry>,
    pub(crate) exports: Vec<ExportResult>,
}

/// Writes every source into `out` as one tar stream and returns `out` with what was written.
pub(crate) fn write_tar<W: Write>(
    out: W,
    items: &[FileItem],
    exports: &[Export],
    copy: &mut dyn CopyRows,
    export_mtime: u64,
    bytes_read: &AtomicU64,
) -> Result<(W, Written), Error> {
    let mut builder = tar::Builder::new(out);
    builder.mode(tar::HeaderMode::Complete);
    builder.follow_symlinks(false);
    let mut entries = Vec::new();
    for item in items {
        entries.push(append_item(&mut builder, item, bytes_read)?);
    }
    let mut results = Vec::new();
    for export in exports {
        let mut result = ExportResult {
            schema_path: format!("{}/schema.json", export.dir),
            ..ExportResult::default()
        };
        let schema = serde_json::to_vec_pretty(&export.schema)
            .map_err(|e| Error::Internal(format!("encoding a schema: {e}")))?;
        entries.push(append_bytes(
            &mut builder,
            &result.schema_path,
            &schema,
            export_mtime,
        )?);
        copy.start(&export.copy_sql)?;
        let mut chunk = Vec::with_capacity(CHUNK_SIZE);
        let mut messages: u64 = 0;
        loop {
            let row = copy.next_row()?;
            let full = row
                .as_ref()
                .is_none_or(|r| !chunk.is_empty() && chunk.len() + r.len() > CHUNK_SIZE);
            if full && !chunk.is_empty() {
                let path = format!("{}/data-{:06}.csv", export.dir, result.chunks.len() + 1);
                entries.push(append_bytes(&mut builder, &path, &chunk, export_mtime)?);
                bytes_read.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                result.chunks.push(path);
                chunk.clear();
            }
            let Some(row) = row else { break };
            messages += 1;
            chunk.extend_from_slice(&row);
        }
        // The first message is the CSV header; each further one is exactly one row.
        result.rows = messages.saturating_sub(1);
        results.push(result);
    }
    let out = builder
        .into_inner()
        .map_err(|e| Error::Internal(format!("finishing the tar stream: {e}")))?;
    Ok((
        out,
        Written {
            entries,
            exports: results,
        },
    ))
}

fn append_item<W: Write>(
    builder: &mut tar::Builder<W>,
    item: &FileItem,
    bytes_read: &AtomicU64,
) -> Result<Entry, Error> {
    let metadata = &item.metadata;
    let mut header = tar::Header::new_gnu();
    header.set_metadata_in_mode(metadata, tar::HeaderMode::Complete);
    let kind = metadata.file_type();
    let (entry_kind, size, sha256, link_target) = if kind.is_symlink() {
        let target = std::fs::read_link(&item.disk).map_err(Error::io("read link", &item.disk))?;
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        builder
            .append_link(&mut header, &item.name, &target)
            .map_err(Error::io("archive", &item.disk))?;
        (
            EntryKind::Symlink,
            0,
            None,
            Some(target.to_string_lossy().into_owned()),
        )
    } else if kind.is_dir() {
        header.set_entry_type(tar::EntryType::Directory);
        header.set_size(0);
        builder
            .append_data(&mut header, format!("{}/", item.name), io::empty())
            .map_err(Error::io("archive", &item.disk))?;
        (EntryKind::Dir, 0, None, None)
    } else {
        let file = std::fs::File::open(&item.disk).map_err(Error::io("open", &item.disk))?;
        let size = metadata.len();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(size);
        let mut reader = Hashing::new(file.take(size), bytes_read);
        builder
            .append_data(&mut header, &item.name, &mut reader)
            .map_err(Error::io("archive", &item.disk))?;
        if reader.count != size {
            return Err(Error::SourcesChanged(format!(
                "`{}` shrank from {size} to {} bytes while it was archived",
                item.disk.display(),
                reader.count
            )));
        }
        (EntryKind::File, size, Some(reader.hex()), None)
    };
    Ok(Entry {
        path: if entry_kind == EntryKind::Dir {
            format!("{}/", item.name)
        } else {
            item.name.clone()
        },
        kind: entry_kind,
        size,
        sha256,
        mode: header.mode().unwrap_or_default(),
        mtime: header.mtime().unwrap_or_default(),
        uid: header.uid().unwrap_or_default(),
        gid: header.gid().unwrap_or_default(),
        link_target,
    })
}

fn append_bytes<W: Write>(
    builder: &mut tar::Builder<W>,
    path: &str,
    data: &[u8],
    mtime: u64,
) -> Result<Entry, Error> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o644);
    header.set_mtime(mtime);
    header.set_uid(0);
    header.set_gid(0);
    header.set_size(data.len() as u64);
    builder
        .append_data(&mut header, path, data)
        .map_err(|e| Error::Internal(format!("writing `{path}` to the tar stream: {e}")))?;
    Ok(Entry {
        path: path.to_owned(),
        kind: EntryKind::File,
        size: data.len() as u64,
        sha256: Some(hex(&Sha256::digest(data))),
        mode: 0o644,
        mtime,
        uid: 0,
        gid: 0,
        link_target: None,
    })
}

/// Hashes and counts what passes through, and adds it to a progress counter.
pub(crate) struct Hashing<'a, R> {
    inner: R,
    hasher: Sha256,
    pub(crate) count: u64,
    progress: &'a AtomicU64,
}

impl<'a, R> Hashing<'a, R> {
    pub(crate) fn new(inner: R, progress: &'a AtomicU64) -> Hashing<'a, R> {
        Hashing {
            inner,
            hasher: Sha256::new(),
            count: 0,
            progress,
        }
    }

    pub(crate) fn hex(&self) -> String {
        hex(&self.hasher.clone().finalize())
    }
}

impl<R: Read> Read for Hashing<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        self.progress.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}
