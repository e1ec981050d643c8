//! `manifest.json`, written beside the archive after the archive is complete: what is inside
//! (every entry with its size and SHA-256), what the whole object must hash to, and where it
//! came from. `verify` and `restore` trust nothing else.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format_version: u32,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub source_host: String,
    pub tool: String,
    pub archive: ArchiveObject,
    pub entries: Vec<Entry>,
    pub tables: Vec<TableExport>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ArchiveObject {
    pub object: String,
    pub size: u64,
    pub sha256: String,
    pub part_size: u64,
    pub parts: u32,
    /// Independent gzip members of this many input bytes each, at this level.
    pub gzip_level: u32,
    pub gzip_block_size: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
}

/// One tar entry. Sizes and hashes are of the content as stored (files and table chunks).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub path: String,
    pub kind: EntryKind,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    pub mode: u32,
    pub mtime: u64,
    pub uid: u64,
    pub gid: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_target: Option<String>,
}

/// A table or query exported as CSV (with a header) in one or more chunks, cut at row
/// boundaries, and a `schema.json` beside them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TableExport {
    pub name: String,
    /// `schema.table` for a table, the SQL for a query.
    pub source: String,
    pub rows: u64,
    /// The exported snapshot every export of this archive was read from.
    pub snapshot: String,
    pub schema_path: String,
    pub chunks: Vec<String>,
}

/// `schema.json` of one export: enough to recreate a table to load the CSV into.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TableSchema {
    pub name: String,
    pub columns: Vec<ColumnSchema>,
    #[serde(default)]
    pub primary_key: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ColumnSchema {
    pub name: String,
    /// As `format_type` prints it, so it can be used in `CREATE TABLE` as is.
    pub data_type: String,
    pub not_null: bool,
}

impl Manifest {
    pub fn parse(bytes: &[u8], location: &str) -> Result<Manifest, crate::Error> {
        let manifest: Manifest = serde_json::from_slice(bytes).map_err(|e| {
            crate::Error::Mismatch(format!("the manifest `{location}` is not readable: {e}"))
        })?;
        if manifest.format_version != FORMAT_VERSION {
            return Err(crate::Error::Mismatch(format!(
                "the manifest `{location}` has format version {}; this sunset-archive reads {FORMAT_VERSION}",
                manifest.format_version
            )));
        }
        Ok(manifest)
    }
}
