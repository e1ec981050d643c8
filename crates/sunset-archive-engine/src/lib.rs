//! The logic behind `sunset-archive`: directories and table exports streamed as one tar.gz
//! (independent gzip members compressed on every core) to S3 or a local directory, with a
//! manifest written last, resumable uploads, and `verify`, `restore`, `list` and `cleanup`.
//!
//! The pipeline of `create`, each stage bounded so memory stays flat whatever the input size:
//!
//! ```text
//! files, COPY rows --tar--> ParallelGzWriter --> PartSink --parts--> uploads (N at a time)
//!   (blocking thread)        (worker threads)   (hash, cut)          (async, checkpointed)
//! ```

mod create;
mod error;
mod guard;
mod location;
mod manifest;
mod pgzip;
mod read;
mod restore;
mod sources;
mod store;
mod tarball;

pub use create::{CreateRequest, CreateStats, Created, MIN_PART_SIZE, create};
pub use error::{Error, aws_error_line};
pub use location::{ARCHIVE_OBJECT, ArchiveRef, Destination, MANIFEST_OBJECT};
pub use manifest::{
    ColumnSchema, Entry, EntryKind, FORMAT_VERSION, Manifest, TableExport, TableSchema,
};
pub use read::{Cleaned, Listed, VerifyReport, cleanup, list, verify};
pub use restore::{RestoreReport, RestoreRequest, restore};
pub use store::{OpenUpload, S3Options, parse_storage_class};
