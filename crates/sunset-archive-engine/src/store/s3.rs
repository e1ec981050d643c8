//! What only the S3 backend needs: the client, the options of `create`, tags, and the reader
//! a download's body is streamed through.

use std::io::Read;

use aws_sdk_s3::types::{ObjectLockMode, ServerSideEncryption, StorageClass};
use chrono::{DateTime, Utc};

/// S3 options of `create`; a local destination ignores them.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct S3Options {
    pub storage_class: Option<String>,
    pub sse_kms_key_id: Option<String>,
    pub tags: Vec<(String, String)>,
    pub retain_until: Option<DateTime<Utc>>,
}

/// A storage class S3 knows (`GLACIER_IR`, ...): a typo is bad input before any upload, not an
/// `InvalidStorageClass` from the last call of it.
pub fn parse_storage_class(text: &str) -> Result<String, String> {
    let known = StorageClass::values();
    if known.contains(&text) {
        Ok(text.to_owned())
    } else {
        let hint = sunset_plan::closest(text, known)
            .map(|c| format!(" (did you mean `{c}`?)"))
            .unwrap_or_default();
        Err(format!(
            "unknown storage class `{text}`{hint}; expected one of {}",
            known.join(", ")
        ))
    }
}

impl S3Options {
    pub(super) fn encryption(&self) -> Option<ServerSideEncryption> {
        self.sse_kms_key_id
            .as_ref()
            .map(|_| ServerSideEncryption::AwsKms)
    }

    pub(super) fn tagging(&self) -> Option<String> {
        (!self.tags.is_empty()).then(|| tagging(&self.tags))
    }

    pub(super) fn lock_mode(&self) -> Option<ObjectLockMode> {
        self.retain_until.map(|_| ObjectLockMode::Compliance)
    }

    pub(super) fn lock_until(&self) -> Option<aws_sdk_s3::primitives::DateTime> {
        self.retain_until
            .map(|until| aws_sdk_s3::primitives::DateTime::from_secs(until.timestamp()))
    }
}

/// S3 through the standard credential chain; `AWS_ENDPOINT_URL` points it at an S3-compatible
/// store or an emulator, which want path-style addressing.
pub(crate) async fn s3_client() -> aws_sdk_s3::Client {
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let custom_endpoint = std::env::var_os("AWS_ENDPOINT_URL").is_some()
        || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some();
    // Every call gives up rather than hang: a connection within 10 s, an attempt (a part of up
    // to 5 GiB included) within 15 minutes; a download's body has its own stall timeout.
    let timeouts = aws_sdk_s3::config::timeout::TimeoutConfig::builder()
        .connect_timeout(std::time::Duration::from_secs(10))
        .operation_attempt_timeout(std::time::Duration::from_secs(15 * 60))
        .build();
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&config)
            .timeout_config(timeouts)
            .force_path_style(custom_endpoint)
            // Downloads are hashed against the manifest's SHA-256 anyway; the SDK's own check
            // misreads the composite checksum some S3-compatible stores return for multipart
            // objects as a whole-object one.
            .response_checksum_validation(
                aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired,
            )
            .build(),
    )
}

/// How long a download may go without a byte before it fails (`SUNSET_S3_STALL_TIMEOUT`,
/// seconds; 60 by default).
pub(super) fn stall_timeout() -> std::time::Duration {
    let seconds = std::env::var("SUNSET_S3_STALL_TIMEOUT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    std::time::Duration::from_secs(seconds)
}

/// S3's "no such bucket, key or upload": an answer, not a failure, for the calls that ask.
pub(super) fn is_not_found<E>(
    error: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> bool {
    error
        .raw_response()
        .is_some_and(|r| r.status().as_u16() == 404)
}

/// URL-encoded `k=v&k2=v2`, as the `x-amz-tagging` header wants.
pub(super) fn tagging(tags: &[(String, String)]) -> String {
    fn encode(text: &str) -> String {
        text.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    }
    tags.iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

pub(super) struct ChannelReader {
    pub(super) receiver: tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>,
    pub(super) current: bytes::Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.receiver.blocking_recv() {
                Some(chunk) => self.current = chunk?,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_url_encoded() {
        assert_eq!(
            tagging(&[
                ("team".into(), "ops".into()),
                ("why".into(), "a b&c".into())
            ]),
            "team=ops&why=a%20b%26c"
        );
    }
}
