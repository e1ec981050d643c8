//! The archive engine's error type. Bad input is kept apart from runtime failures because
//! operators script on the difference (exit 2 versus exit 1), and a stop on request apart from
//! both (exit 3: the upload is checkpointed and `create` resumes it).

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Arguments or sources the user must fix (missing directory, unknown table, bad URL, an
    /// archive that already exists): nothing was uploaded.
    #[error("{0}")]
    Invalid(String),
    #[error("{context} `{}`: {source}", path.display())]
    Io {
        context: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// An S3 call failed; the message names the call and the key, never credentials.
    #[error("{0}")]
    S3(String),
    /// The server's message is interpolated (tokio-postgres alone says only "db error").
    #[error("{context}: {}", describe(cause))]
    Database {
        context: String,
        cause: tokio_postgres::Error,
    },
    #[error(transparent)]
    Checkpoint(#[from] sunset_checkpoint::Error),
    /// The sources no longer produce the bytes of the interrupted upload, so it cannot be
    /// resumed; it was aborted.
    #[error("{0}")]
    SourcesChanged(String),
    /// `verify` found the archive different from its manifest.
    #[error("{0}")]
    Mismatch(String),
    /// An archive that would do harm if restored (paths leaving `--to`, entries the manifest
    /// does not list, special bits not asked for, SQL where a type belongs): nothing was
    /// written or loaded.
    #[error("archive refused: {0}")]
    Refused(String),
    /// Ctrl-C or SIGTERM: acknowledged parts are checkpointed; run `create` again to resume.
    #[error("stopped on request; run the same `create` again to resume the upload")]
    Stopped,
    /// A fault of sunset itself.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub(crate) fn io(context: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.to_owned();
        move |source| Error::Io {
            context,
            path,
            source,
        }
    }

    pub(crate) fn db(context: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> Error {
        let context = context.into();
        move |cause| Error::Database { context, cause }
    }

    /// An S3 error with the call and the key it was about. The SDK's display of a service
    /// error is just "service error"; the code and message are what help.
    pub(crate) fn s3<E>(
        call: &str,
        key: &str,
    ) -> impl FnOnce(aws_sdk_s3::error::SdkError<E>) -> Error
    where
        E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let context = format!("S3 {call} `{key}`");
        move |error| Error::S3(format!("{context}: {}", describe_s3(&error)))
    }

    /// Whether the error is the user's input rather than a failure of the run.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            Error::Invalid(_) | Error::Checkpoint(sunset_checkpoint::Error::PlanChanged { .. })
        )
    }
}

pub(crate) fn describe_s3<E>(error: &aws_sdk_s3::error::SdkError<E>) -> String
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    use aws_sdk_s3::error::ProvideErrorMetadata;
    match (error.code(), error.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_owned(),
        // Transport errors: the chain says what happened (connection refused, timeout).
        _ => crate::store::chain(error),
    }
}

pub(crate) fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => db.message().to_owned(),
        None => {
            let mut text = error.to_string();
            if let Some(cause) = std::error::Error::source(error) {
                text.push_str(&format!(": {cause}"));
            }
            text
        }
    }
}
