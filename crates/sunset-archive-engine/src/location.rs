//! Where archives live. A destination is `s3://bucket/prefix` or a local directory; the archive
//! named NAME in it is addressed as `DEST/NAME` and stored as two objects under that prefix:
//! `archive.tar.gz` and `manifest.json` (written last).

use std::fmt;
use std::path::PathBuf;

use crate::error::Error;

pub const ARCHIVE_OBJECT: &str = "archive.tar.gz";
pub const MANIFEST_OBJECT: &str = "manifest.json";

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum Destination {
    S3 { bucket: String, prefix: String },
    Local(PathBuf),
}

impl Destination {
    pub fn parse(text: &str) -> Result<Destination, Error> {
        let Some(rest) = text.strip_prefix("s3://") else {
            if text.contains("://") {
                return Err(Error::BadInput(format!(
                    "`{text}` is not a destination: expected s3://bucket/prefix or a local directory"
                )));
            }
            if text.is_empty() {
                return Err(Error::BadInput("the destination is empty".into()));
            }
            return Ok(Destination::Local(PathBuf::from(text)));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        check_bucket_name(bucket).map_err(|why| {
            Error::BadInput(format!(
                "`{text}`: bucket name `{bucket}` {why} (expected s3://bucket/prefix)"
            ))
        })?;
        Ok(Destination::S3 {
            bucket: bucket.to_owned(),
            prefix: prefix.trim_matches('/').to_owned(),
        })
    }

    /// The archive `name` in this destination.
    pub fn archive(&self, name: &str) -> Result<ArchiveRef, Error> {
        check_archive_name(name)?;
        Ok(ArchiveRef {
            dest: self.clone(),
            name: name.to_owned(),
        })
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            Destination::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            Destination::Local(dir) => write!(f, "{}", dir.display()),
        }
    }
}

/// One archive: `DEST/NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveRef {
    pub dest: Destination,
    pub name: String,
}

impl ArchiveRef {
    /// Parses `DEST/NAME` (the last path segment is the name).
    pub fn parse(text: &str) -> Result<ArchiveRef, Error> {
        let trimmed = text.trim_end_matches('/');
        let (dest, name) = trimmed.rsplit_once('/').ok_or_else(|| {
            Error::BadInput(format!(
                "`{text}` is not an archive address: expected DEST/NAME, as in s3://bucket/prefix/NAME or DIR/NAME"
            ))
        })?;
        let dest = if dest.is_empty() { "/" } else { dest };
        let dest = if dest == "s3:/" {
            return Err(Error::BadInput(format!(
                "`{text}` names a bucket, not an archive: expected s3://bucket/prefix/NAME"
            )));
        } else {
            Destination::parse(dest)?
        };
        dest.archive(name)
    }

    /// The key (S3) or path (local) of one of the archive's objects.
    pub fn key(&self, object: &str) -> String {
        match &self.dest {
            Destination::S3 { prefix, .. } if prefix.is_empty() => {
                format!("{}/{object}", self.name)
            }
            Destination::S3 { prefix, .. } => format!("{prefix}/{}/{object}", self.name),
            Destination::Local(dir) => dir.join(&self.name).join(object).display().to_string(),
        }
    }
}

impl fmt::Display for ArchiveRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.dest {
            Destination::Local(dir) => write!(f, "{}", dir.join(&self.name).display()),
            s3 => write!(f, "{s3}/{}", self.name),
        }
    }
}

fn check_archive_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::BadInput(format!(
            "archive name `{name}`: expected letters, digits, `-`, `_` and `.`"
        )))
    }
}

/// S3's bucket naming rules, so a typo fails before any call.
fn check_bucket_name(bucket: &str) -> Result<(), &'static str> {
    if !(3..=63).contains(&bucket.len()) {
        return Err("must be 3 to 63 characters");
    }
    if !bucket
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
    {
        return Err("may hold only lowercase letters, digits, `-` and `.`");
    }
    let edges_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !edges_ok(bucket.chars().next()) || !edges_ok(bucket.chars().last()) {
        return Err("must begin and end with a letter or digit");
    }
    if bucket.contains("..") {
        return Err("may not contain `..`");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_and_archive_addresses_parse_both_ways() {
        let dest = Destination::parse("s3://legacy-archive/infra/2026").unwrap();
        assert_eq!(
            dest,
            Destination::S3 {
                bucket: "legacy-archive".into(),
                prefix: "infra/2026".into()
            }
        );
        let archive = dest.archive("metrics").unwrap();
        assert_eq!(
            archive.to_string(),
            "s3://legacy-archive/infra/2026/metrics"
        );
        assert_eq!(
            archive.key(MANIFEST_OBJECT),
            "infra/2026/metrics/manifest.json"
        );
        assert_eq!(
            ArchiveRef::parse("s3://legacy-archive/infra/2026/metrics").unwrap(),
            archive
        );
        let bare = ArchiveRef::parse("s3://bucket-1/metrics").unwrap();
        assert_eq!(bare.key(ARCHIVE_OBJECT), "metrics/archive.tar.gz");
        let local = ArchiveRef::parse("/srv/archives/metrics/").unwrap();
        assert_eq!(local.dest, Destination::Local("/srv/archives".into()));
        assert_eq!(
            local.key(ARCHIVE_OBJECT),
            "/srv/archives/metrics/archive.tar.gz"
        );
    }

    #[test]
    fn bad_addresses_say_what_was_expected() {
        for (text, needle) in [
            ("s3://Bad_Bucket/x", "lowercase"),
            ("s3://ab/x", "3 to 63"),
            ("s3://-bucket/x", "begin and end"),
            ("gs://bucket/x", "not a destination"),
        ] {
            let error = Destination::parse(text).unwrap_err().to_string();
            assert!(error.contains(needle), "{text}: {error}");
        }
        assert!(ArchiveRef::parse("s3://bucket-only").is_err());
        assert!(
            Destination::parse("s3://bucket")
                .unwrap()
                .archive("a/b")
                .is_err()
        );
    }
}
