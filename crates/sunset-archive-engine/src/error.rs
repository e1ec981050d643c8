//! The archive engine's error type. Bad input is kept apart from runtime failures because
//! operators script on the difference (exit 2 versus exit 1), and a stop on request apart from
//! both (exit 3: the upload is checkpointed and `create` resumes it).

use std::path::{Path, PathBuf};

use sunset_outcome::{Classify, chain};
pub(crate) use sunset_pg::describe;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Arguments or sources the user must fix (missing directory, unknown table, bad URL, an
    /// archive that already exists): nothing was uploaded.
    #[error("{0}")]
    BadInput(String),
    /// The cause is the `source` (shown by `{:#}` and error chains), not repeated here.
    #[error("{context} `{}`", path.display())]
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
    /// The database URL is wrong (bad input) or the server could not be reached.
    #[error(transparent)]
    Connection(#[from] sunset_pg::Error),
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
}

impl Classify for Error {
    fn is_bad_input(&self) -> bool {
        match self {
            Error::Connection(error) => error.is_bad_input(),
            Error::Checkpoint(error) => error.is_bad_input(),
            other => matches!(other, Error::BadInput(_)),
        }
    }

    fn is_stopped(&self) -> bool {
        matches!(self, Error::Stopped)
    }
}

pub(crate) fn describe_s3<E>(error: &aws_sdk_s3::error::SdkError<E>) -> String
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    aws_error_line(error)
}

/// One line for any AWS SDK error, as a user needs it: the service's error code, its own
/// message and the request id; for a transport failure (refused, timed out), the chain of
/// causes. Never the SDK's `Debug` dump.
pub fn aws_error_line<E>(error: &E) -> String
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error,
{
    let meta = error.meta();
    let request_id = meta
        .extra("aws_request_id")
        .map(|id| format!(" (request id {id})"))
        .unwrap_or_default();
    match (meta.code(), meta.message()) {
        (Some(code), Some(message)) if !message.is_empty() => {
            format!("{code}: {message}{request_id}")
        }
        (Some(code), _) => format!("{code}{request_id}"),
        // Transport errors: the chain says what happened (connection refused, timeout).
        _ => chain(error),
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_s3::error::ErrorMetadata;
    use aws_sdk_s3::operation::get_object::GetObjectError;

    use super::*;

    #[test]
    fn an_aws_error_is_its_code_message_and_request_id() {
        let meta = ErrorMetadata::builder()
            .code("InvalidInput")
            .message("Invalid XML ; cvc-complex-type.2.4.a")
            .custom("aws_request_id", "9b2f-41c7")
            .build();
        assert_eq!(
            aws_error_line(&GetObjectError::generic(meta)),
            "InvalidInput: Invalid XML ; cvc-complex-type.2.4.a (request id 9b2f-41c7)"
        );
        let bare = ErrorMetadata::builder().code("InvalidRequest").build();
        assert_eq!(
            aws_error_line(&GetObjectError::generic(bare)),
            "InvalidRequest"
        );
    }
}
