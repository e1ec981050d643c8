//! The two destinations behind one interface: S3 (a multipart upload) and a local directory (a
//! partial file written part by part at its offsets, then linked into place). Both refuse to
//! overwrite an existing archive or manifest. Longer than ~600 lines because each operation is
//! one `match` with the two backends side by side, so they are read and kept alike together;
//! what only one backend needs is in `s3` and `local`.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, StorageClass};
use base64::Engine;
use chrono::{DateTime, Utc};

use crate::error::Error;
use crate::location::{ARCHIVE_OBJECT, ArchiveRef, Destination, MANIFEST_OBJECT};

mod local;
mod s3;

use local::{link_into_place, partial_path};
pub(crate) use s3::s3_client;
use s3::{ChannelReader, is_not_found, stall_timeout};
pub use s3::{S3Options, parse_storage_class};

/// A part the destination acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct StoredPart {
    pub(crate) size: u64,
    pub(crate) etag: String,
}

/// An upload left open (a crashed or stopped `create`).
#[derive(Debug, Clone)]
pub struct OpenUpload {
    /// The archive it belongs to (`NAME` of `DEST/NAME`).
    pub name: String,
    pub key: String,
    pub upload_id: String,
    pub initiated: Option<DateTime<Utc>>,
}

/// A store is made for one destination and holds it, so a store can never be asked about a
/// destination of the other kind.
pub(crate) enum Store {
    S3 {
        client: aws_sdk_s3::Client,
        bucket: String,
        prefix: String,
    },
    Local {
        dir: PathBuf,
    },
}

impl Store {
    /// The destination this store was made for.
    pub(crate) fn destination(&self) -> Destination {
        match self {
            Store::S3 { bucket, prefix, .. } => Destination::S3 {
                bucket: bucket.clone(),
                prefix: prefix.clone(),
            },
            Store::Local { dir } => Destination::Local(dir.clone()),
        }
    }

    pub(crate) async fn for_destination(dest: &Destination) -> Store {
        match dest {
            Destination::S3 { bucket, prefix } => Store::S3 {
                client: s3_client().await,
                bucket: bucket.clone(),
                prefix: prefix.clone(),
            },
            Destination::Local(dir) => Store::Local { dir: dir.clone() },
        }
    }

    /// Bad input, before any upload, if `--retain-until` is asked of a bucket without object
    /// lock: S3 refuses the retention only at some call of the upload (the emulator only at the
    /// manifest), which would leave an archive without its manifest.
    pub(crate) async fn check_retention(&self, options: &S3Options) -> Result<(), Error> {
        let (Store::S3 { client, bucket, .. }, Some(_)) = (self, options.retain_until) else {
            return Ok(());
        };
        let enabled = client
            .get_object_lock_configuration()
            .bucket(bucket)
            .send()
            .await
            .ok()
            .and_then(|out| out.object_lock_configuration)
            .and_then(|c| c.object_lock_enabled)
            .is_some_and(|e| e == aws_sdk_s3::types::ObjectLockEnabled::Enabled);
        if enabled {
            Ok(())
        } else {
            Err(Error::BadInput(format!(
                "--retain-until needs a bucket with object lock enabled, and `{bucket}` has none (create it with --object-lock-enabled-for-bucket)"
            )))
        }
    }

    /// Bad input if the destination cannot be written to at all (no such bucket, a file
    /// where a directory should be).
    pub(crate) async fn check_destination(&self) -> Result<(), Error> {
        match self {
            Store::S3 { client, bucket, .. } => {
                client
                    .head_bucket()
                    .bucket(bucket)
                    .send()
                    .await
                    .map_err(|e| {
                        let text = crate::error::describe_s3(&e);
                        if is_not_found(&e) {
                            Error::BadInput(format!("bucket `{bucket}` does not exist"))
                        } else {
                            Error::BadInput(format!("bucket `{bucket}` is not reachable: {text}"))
                        }
                    })?;
                Ok(())
            }
            Store::Local { dir } => {
                if dir.exists() && !dir.is_dir() {
                    return Err(Error::BadInput(format!(
                        "destination `{}` is not a directory",
                        dir.display()
                    )));
                }
                Ok(())
            }
        }
    }

    /// Whether the archive or its manifest already exists.
    pub(crate) async fn exists(&self, archive: &ArchiveRef) -> Result<bool, Error> {
        for object in [MANIFEST_OBJECT, ARCHIVE_OBJECT] {
            let key = archive.key(object);
            let found = match self {
                Store::S3 { client, bucket, .. } => {
                    match client.head_object().bucket(bucket).key(&key).send().await {
                        Ok(_) => true,
                        Err(e) if is_not_found(&e) => false,
                        Err(e) => return Err(Error::s3("HeadObject", &key)(e)),
                    }
                }
                Store::Local { .. } => Path::new(&key).exists(),
            };
            if found {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Starts an upload of the archive object and returns its id.
    pub(crate) async fn begin(
        &self,
        archive: &ArchiveRef,
        options: &S3Options,
    ) -> Result<String, Error> {
        let key = archive.key(ARCHIVE_OBJECT);
        match self {
            Store::S3 { client, bucket, .. } => {
                let mut request = client
                    .create_multipart_upload()
                    .bucket(bucket)
                    .key(&key)
                    .content_type("application/gzip")
                    .checksum_algorithm(ChecksumAlgorithm::Sha256)
                    .set_server_side_encryption(options.encryption())
                    .set_ssekms_key_id(options.sse_kms_key_id.clone())
                    .set_tagging(options.tagging())
                    .set_object_lock_mode(options.lock_mode())
                    .set_object_lock_retain_until_date(options.lock_until());
                if let Some(class) = &options.storage_class {
                    request = request.storage_class(StorageClass::from(class.as_str()));
                }
                let created = request
                    .send()
                    .await
                    .map_err(Error::s3("CreateMultipartUpload", &key))?;
                created.upload_id().map(str::to_owned).ok_or_else(|| {
                    Error::S3(format!("S3 CreateMultipartUpload `{key}`: no upload id"))
                })
            }
            Store::Local { .. } => {
                let id = format!(
                    "{}-{}",
                    std::process::id(),
                    Utc::now().timestamp_nanos_opt().unwrap_or_default()
                );
                let partial = partial_path(archive, &id);
                let dir = partial.parent().unwrap_or(Path::new("."));
                std::fs::create_dir_all(dir).map_err(Error::io("create directory", dir))?;
                std::fs::File::create(&partial).map_err(Error::io("create", &partial))?;
                Ok(id)
            }
        }
    }

    /// The parts the destination holds for an open upload; `None` if the upload is gone.
    pub(crate) async fn stored_parts(
        &self,
        archive: &ArchiveRef,
        upload_id: &str,
        expected: &BTreeMap<i32, StoredPart>,
    ) -> Result<Option<BTreeMap<i32, StoredPart>>, Error> {
        let key = archive.key(ARCHIVE_OBJECT);
        match self {
            Store::S3 { client, bucket, .. } => {
                let mut parts = BTreeMap::new();
                let mut marker: Option<String> = None;
                loop {
                    let page = client
                        .list_parts()
                        .bucket(bucket)
                        .key(&key)
                        .upload_id(upload_id)
                        .set_part_number_marker(marker.clone())
                        .send()
                        .await;
                    let page = match page {
                        Ok(page) => page,
                        Err(e) if is_not_found(&e) => {
                            return Ok(None);
                        }
                        Err(e) => return Err(Error::s3("ListParts", &key)(e)),
                    };
                    for part in page.parts() {
                        if let (Some(number), Some(etag)) = (part.part_number(), part.e_tag()) {
                            let size =
                                u64::try_from(part.size().unwrap_or_default()).unwrap_or_default();
                            parts.insert(
                                number,
                                StoredPart {
                                    size,
                                    etag: etag.to_owned(),
                                },
                            );
                        }
                    }
                    if page.is_truncated() != Some(true) {
                        break;
                    }
                    marker = page.next_part_number_marker().map(str::to_owned);
                    if marker.is_none() {
                        break;
                    }
                }
                Ok(Some(parts))
            }
            Store::Local { .. } => {
                let partial = partial_path(archive, upload_id);
                let Ok(metadata) = std::fs::metadata(&partial) else {
                    return Ok(None);
                };
                // A part is there if the file reaches its end; its content was fsynced before it
                // was acknowledged. Every part but the last is full-size, so part n starts at
                // (n - 1) x the full size, whichever parts are missing (concurrent uploads).
                let full = expected.values().map(|p| p.size).max().unwrap_or_default();
                let parts = expected
                    .iter()
                    .filter(|(number, part)| {
                        let start = u64::try_from(**number - 1).unwrap_or_default() * full;
                        start + part.size <= metadata.len()
                    })
                    .map(|(number, part)| (*number, part.clone()))
                    .collect();
                Ok(Some(parts))
            }
        }
    }

    pub(crate) async fn put_part(
        &self,
        archive: &ArchiveRef,
        upload_id: &str,
        number: i32,
        offset: u64,
        bytes: bytes::Bytes,
        sha256: &[u8],
    ) -> Result<StoredPart, Error> {
        let key = archive.key(ARCHIVE_OBJECT);
        let size = bytes.len() as u64;
        match self {
            Store::S3 { client, bucket, .. } => {
                let uploaded = client
                    .upload_part()
                    .bucket(bucket)
                    .key(&key)
                    .upload_id(upload_id)
                    .part_number(number)
                    .checksum_sha256(base64::engine::general_purpose::STANDARD.encode(sha256))
                    .body(ByteStream::from(bytes))
                    .send()
                    .await
                    .map_err(Error::s3(&format!("UploadPart {number}"), &key))?;
                let etag = uploaded.e_tag().unwrap_or_default().to_owned();
                Ok(StoredPart { size, etag })
            }
            Store::Local { .. } => {
                let partial = partial_path(archive, upload_id);
                tokio::task::spawn_blocking(move || {
                    let mut file = std::fs::OpenOptions::new()
                        .write(true)
                        .open(&partial)
                        .map_err(Error::io("open", &partial))?;
                    file.seek(SeekFrom::Start(offset))
                        .and_then(|_| file.write_all(&bytes))
                        .and_then(|()| file.sync_data())
                        .map_err(Error::io("write", &partial))?;
                    Ok(StoredPart {
                        size,
                        etag: "local".into(),
                    })
                })
                .await
                .map_err(|e| Error::Internal(format!("a part writer crashed: {e}")))?
            }
        }
    }

    /// Makes the uploaded parts the archive object, refusing to overwrite one.
    pub(crate) async fn complete(
        &self,
        archive: &ArchiveRef,
        upload_id: &str,
        parts: &BTreeMap<i32, (StoredPart, String)>,
    ) -> Result<(), Error> {
        let key = archive.key(ARCHIVE_OBJECT);
        match self {
            Store::S3 { client, bucket, .. } => {
                let completed = parts
                    .iter()
                    .map(|(number, (part, sha256))| {
                        CompletedPart::builder()
                            .part_number(*number)
                            .e_tag(&part.etag)
                            .checksum_sha256(sha256)
                            .build()
                    })
                    .collect();
                client
                    .complete_multipart_upload()
                    .bucket(bucket)
                    .key(&key)
                    .upload_id(upload_id)
                    .if_none_match("*")
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(completed))
                            .build(),
                    )
                    .send()
                    .await
                    .map_err(Error::s3("CompleteMultipartUpload", &key))?;
                Ok(())
            }
            Store::Local { .. } => {
                let partial = partial_path(archive, upload_id);
                let size: u64 = parts.values().map(|(p, _)| p.size).sum();
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&partial)
                    .map_err(Error::io("open", &partial))?;
                file.set_len(size)
                    .and_then(|()| file.sync_all())
                    .map_err(Error::io("finish", &partial))?;
                link_into_place(&partial, Path::new(&key))?;
                std::fs::remove_file(&partial).map_err(Error::io("remove", &partial))
            }
        }
    }

    pub(crate) async fn abort(&self, archive: &ArchiveRef, upload_id: &str) -> Result<(), Error> {
        let key = archive.key(ARCHIVE_OBJECT);
        self.abort_key(&key, upload_id, archive).await
    }

    async fn abort_key(
        &self,
        key: &str,
        upload_id: &str,
        archive: &ArchiveRef,
    ) -> Result<(), Error> {
        match self {
            Store::S3 { client, bucket, .. } => {
                match client
                    .abort_multipart_upload()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .send()
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(e) if is_not_found(&e) => Ok(()),
                    Err(e) => Err(Error::s3("AbortMultipartUpload", key)(e)),
                }
            }
            Store::Local { .. } => {
                let partial = partial_path(archive, upload_id);
                match std::fs::remove_file(&partial) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        Err(Error::io("remove", &partial)(e))
                    }
                    _ => Ok(()),
                }
            }
        }
    }

    /// Writes the manifest, refusing to overwrite one. It gets the archive's encryption, tags
    /// and retention (a bucket that demands SSE-KMS takes it, and a retained archive cannot
    /// lose its manifest), but S3's default storage class: it is read on every verify, list
    /// and restore, and is a few KiB.
    pub(crate) async fn put_manifest(
        &self,
        archive: &ArchiveRef,
        bytes: Vec<u8>,
        options: &S3Options,
    ) -> Result<(), Error> {
        let key = archive.key(MANIFEST_OBJECT);
        match self {
            Store::S3 { client, bucket, .. } => {
                client
                    .put_object()
                    .bucket(bucket)
                    .key(&key)
                    .content_type("application/json")
                    // Object lock needs an integrity checksum on the request.
                    .checksum_algorithm(ChecksumAlgorithm::Sha256)
                    .set_server_side_encryption(options.encryption())
                    .set_ssekms_key_id(options.sse_kms_key_id.clone())
                    .set_tagging(options.tagging())
                    .set_object_lock_mode(options.lock_mode())
                    .set_object_lock_retain_until_date(options.lock_until())
                    .if_none_match("*")
                    .body(ByteStream::from(bytes))
                    .send()
                    .await
                    .map_err(Error::s3("PutObject", &key))?;
                Ok(())
            }
            Store::Local { .. } => {
                let target = PathBuf::from(&key);
                let temp = target.with_extension(format!("json.{}.tmp", std::process::id()));
                let mut file = std::fs::File::create(&temp).map_err(Error::io("create", &temp))?;
                file.write_all(&bytes)
                    .and_then(|()| file.sync_all())
                    .map_err(Error::io("write", &temp))?;
                link_into_place(&temp, &target)?;
                std::fs::remove_file(&temp).map_err(Error::io("remove", &temp))
            }
        }
    }

    pub(crate) async fn get_manifest(&self, archive: &ArchiveRef) -> Result<Vec<u8>, Error> {
        let key = archive.key(MANIFEST_OBJECT);
        match self {
            Store::S3 { client, bucket, .. } => {
                let object = client
                    .get_object()
                    .bucket(bucket)
                    .key(&key)
                    .send()
                    .await
                    .map_err(|e| {
                        if is_not_found(&e) {
                            Error::BadInput(format!("there is no archive `{archive}` (no `{key}`)"))
                        } else {
                            Error::s3("GetObject", &key)(e)
                        }
                    })?;
                let body = object
                    .body
                    .collect()
                    .await
                    .map_err(|e| Error::S3(format!("S3 GetObject `{key}`: {e}")))?;
                Ok(body.into_bytes().to_vec())
            }
            Store::Local { .. } => std::fs::read(&key).map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Error::BadInput(format!("there is no archive `{archive}` (no `{key}`)"))
                } else {
                    Error::io("read", Path::new(&key))(e)
                }
            }),
        }
    }

    /// The archive object as a blocking reader (for a `spawn_blocking` thread): S3's body is
    /// forwarded through a small bounded channel, so memory stays flat.
    pub(crate) async fn open_archive(
        &self,
        archive: &ArchiveRef,
    ) -> Result<Box<dyn Read + Send>, Error> {
        let key = archive.key(ARCHIVE_OBJECT);
        match self {
            Store::S3 { client, bucket, .. } => {
                let object = client
                    .get_object()
                    .bucket(bucket)
                    .key(&key)
                    .send()
                    .await
                    .map_err(Error::s3("GetObject", &key))?;
                let (sender, receiver) =
                    tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(16);
                let mut body = object.body;
                let stall = stall_timeout();
                tokio::spawn(async move {
                    loop {
                        let item = match tokio::time::timeout(stall, body.try_next()).await {
                            Ok(Ok(Some(chunk))) => Ok(chunk),
                            Ok(Ok(None)) => break,
                            Ok(Err(e)) => Err(std::io::Error::other(sunset_outcome::chain(&e))),
                            Err(_) => Err(std::io::Error::new(
                                std::io::ErrorKind::TimedOut,
                                format!(
                                    "the download of `{key}` stalled: no data for {}s",
                                    stall.as_secs()
                                ),
                            )),
                        };
                        let failed = item.is_err();
                        if sender.send(item).await.is_err() || failed {
                            break;
                        }
                    }
                });
                Ok(Box::new(ChannelReader {
                    receiver,
                    current: bytes::Bytes::new(),
                }))
            }
            Store::Local { .. } => {
                let file = std::fs::File::open(&key).map_err(Error::io("open", Path::new(&key)))?;
                Ok(Box::new(std::io::BufReader::with_capacity(1 << 20, file)))
            }
        }
    }

    /// Names of the complete archives (those with a manifest) in the destination.
    pub(crate) async fn list(&self) -> Result<Vec<String>, Error> {
        match self {
            Store::S3 {
                client,
                bucket,
                prefix,
            } => {
                let base = if prefix.is_empty() {
                    String::new()
                } else {
                    format!("{prefix}/")
                };
                let mut names = Vec::new();
                let mut pages = client
                    .list_objects_v2()
                    .bucket(bucket)
                    .prefix(&base)
                    .into_paginator()
                    .send();
                while let Some(page) = pages.next().await {
                    let page = page.map_err(Error::s3("ListObjectsV2", &base))?;
                    for object in page.contents() {
                        let Some(key) = object.key() else { continue };
                        if let Some(name) = key
                            .strip_prefix(&base)
                            .and_then(|rest| rest.strip_suffix(&format!("/{MANIFEST_OBJECT}")))
                            .filter(|name| !name.contains('/'))
                        {
                            names.push(name.to_owned());
                        }
                    }
                }
                Ok(names)
            }
            Store::Local { dir } => {
                let mut names = Vec::new();
                let entries = match std::fs::read_dir(dir) {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(Error::BadInput(format!(
                            "`{}` does not exist",
                            dir.display()
                        )));
                    }
                    Err(e) => return Err(Error::io("list", dir)(e)),
                };
                for entry in entries.flatten() {
                    if entry.path().join(MANIFEST_OBJECT).is_file() {
                        names.push(entry.file_name().to_string_lossy().into_owned());
                    }
                }
                names.sort();
                Ok(names)
            }
        }
    }

    /// Uploads left open under the destination (stopped or crashed runs).
    pub(crate) async fn open_uploads(&self) -> Result<Vec<OpenUpload>, Error> {
        let dest = self.destination();
        match self {
            Store::S3 {
                client,
                bucket,
                prefix,
            } => {
                // The prefix is a directory: `infra` must not reach `infra-2/...`.
                let base = if prefix.is_empty() {
                    String::new()
                } else {
                    format!("{prefix}/")
                };
                let mut uploads = Vec::new();
                let mut key_marker: Option<String> = None;
                let mut id_marker: Option<String> = None;
                loop {
                    let page = client
                        .list_multipart_uploads()
                        .bucket(bucket)
                        .prefix(&base)
                        .set_key_marker(key_marker.clone())
                        .set_upload_id_marker(id_marker.clone())
                        .send()
                        .await
                        .map_err(Error::s3("ListMultipartUploads", &base))?;
                    for upload in page.uploads() {
                        let (Some(key), Some(id)) = (upload.key(), upload.upload_id()) else {
                            continue;
                        };
                        // Only sunset's own objects: `NAME/archive.tar.gz` right under the prefix.
                        let Some(name) = key
                            .strip_prefix(&base)
                            .and_then(|rest| rest.strip_suffix(&format!("/{ARCHIVE_OBJECT}")))
                            .filter(|name| dest.archive(name).is_ok())
                        else {
                            continue;
                        };
                        uploads.push(OpenUpload {
                            name: name.to_owned(),
                            key: key.to_owned(),
                            upload_id: id.to_owned(),
                            initiated: upload
                                .initiated()
                                .and_then(|t| DateTime::from_timestamp(t.secs(), 0)),
                        });
                    }
                    if page.is_truncated() != Some(true) {
                        break;
                    }
                    key_marker = page.next_key_marker().map(str::to_owned);
                    id_marker = page.next_upload_id_marker().map(str::to_owned);
                }
                Ok(uploads)
            }
            Store::Local { dir } => {
                let mut uploads = Vec::new();
                let Ok(archives) = std::fs::read_dir(dir) else {
                    return Ok(uploads);
                };
                for archive in archives.flatten() {
                    let Ok(files) = std::fs::read_dir(archive.path()) else {
                        continue;
                    };
                    for file in files.flatten() {
                        let name = file.file_name().to_string_lossy().into_owned();
                        let Some(id) = name
                            .strip_prefix(&format!(".{ARCHIVE_OBJECT}."))
                            .and_then(|rest| rest.strip_suffix(".partial"))
                        else {
                            continue;
                        };
                        let initiated = file
                            .metadata()
                            .and_then(|m| m.modified())
                            .ok()
                            .map(DateTime::<Utc>::from);
                        uploads.push(OpenUpload {
                            name: archive.file_name().to_string_lossy().into_owned(),
                            key: archive.path().join(ARCHIVE_OBJECT).display().to_string(),
                            upload_id: id.to_owned(),
                            initiated,
                        });
                    }
                }
                Ok(uploads)
            }
        }
    }

    pub(crate) async fn abort_open_upload(&self, upload: &OpenUpload) -> Result<(), Error> {
        let archive = self.destination().archive(&upload.name)?;
        self.abort_key(&upload.key, &upload.upload_id, &archive)
            .await
    }
}
