//! The AWS clients of one run, and the one place every call goes through: it writes the audit
//! line and turns SDK errors into [`Error::Aws`] with the service's error code kept.

use std::future::Future;
use std::sync::Arc;

use aws_sdk_ec2::error::ProvideErrorMetadata;

use crate::Error;
use crate::audit::AuditLog;

/// EC2 accepts many ids per call, but a request is limited in size: this many ids per call.
pub(crate) const IDS_PER_CALL: usize = 200;

pub struct Cloud {
    pub(crate) ec2: aws_sdk_ec2::Client,
    pub(crate) route53: aws_sdk_route53::Client,
    pub(crate) elb: aws_sdk_elasticloadbalancingv2::Client,
    /// Only the `no_traffic` gate's load balancer metrics.
    pub(crate) cloudwatch: aws_sdk_cloudwatch::Client,
    pub(crate) sts: aws_sdk_sts::Client,
    pub(crate) audit: Arc<AuditLog>,
    pub(crate) region: String,
}

/// Attempts per call in the adaptive retry mode (the SDK's standard mode makes 3).
const ADAPTIVE_ATTEMPTS: u32 = 8;

impl Cloud {
    /// Clients from the standard chain (`AWS_PROFILE`, `AWS_REGION`, `AWS_ENDPOINT_URL`, ...);
    /// `region` (the sequence's) wins over the chain's.
    pub async fn connect(region: Option<&str>, audit: Arc<AuditLog>) -> Result<Cloud, Error> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        // Throttling by AWS (a thousand per-instance reads) slows the run down instead of failing
        // it: the SDK's adaptive mode paces requests from the throttling it sees. The user's
        // AWS_RETRY_MODE or AWS_MAX_ATTEMPTS wins.
        if std::env::var_os("AWS_RETRY_MODE").is_none()
            && std::env::var_os("AWS_MAX_ATTEMPTS").is_none()
        {
            loader = loader.retry_config(
                aws_config::retry::RetryConfig::adaptive().with_max_attempts(ADAPTIVE_ATTEMPTS),
            );
        }
        if let Some(region) = region {
            loader = loader.region(aws_config::Region::new(region.to_owned()));
        }
        let config = loader.load().await;
        let region = config.region().map(|r| r.to_string()).ok_or_else(|| {
            Error::BadInput("no AWS region: set `region` in the sequence or AWS_REGION".to_owned())
        })?;
        Ok(Cloud {
            ec2: aws_sdk_ec2::Client::new(&config),
            route53: aws_sdk_route53::Client::new(&config),
            elb: aws_sdk_elasticloadbalancingv2::Client::new(&config),
            cloudwatch: aws_sdk_cloudwatch::Client::new(&config),
            sts: aws_sdk_sts::Client::new(&config),
            audit,
            region,
        })
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// Sends one request, audits it, and maps its error.
    pub(crate) async fn call<T, E>(
        &self,
        service: &str,
        operation: &str,
        mutating: bool,
        ids: &[String],
        request: impl Future<Output = Result<T, E>>,
    ) -> Result<T, Error>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        match request.await {
            Ok(output) => {
                self.audit
                    .record(service, operation, mutating, ids, Ok(()))?;
                Ok(output)
            }
            Err(error) => {
                let code = error.code().map(str::to_owned);
                let message = sunset_archive_engine::aws_error_line(&error);
                self.audit
                    .record(service, operation, mutating, ids, Err(&message))?;
                Err(Error::Aws {
                    operation: format!("{service} {operation}"),
                    code,
                    message,
                })
            }
        }
    }

    /// The account the credentials belong to (STS GetCallerIdentity).
    pub async fn account(&self) -> Result<String, Error> {
        let identity = self
            .call(
                "sts",
                "GetCallerIdentity",
                false,
                &[],
                self.sts.get_caller_identity().send(),
            )
            .await?;
        identity
            .account()
            .map(str::to_owned)
            .ok_or_else(|| Error::Aws {
                operation: "sts GetCallerIdentity".to_owned(),
                code: None,
                message: "the answer named no account".to_owned(),
            })
    }
}

/// A delete whose resource is already gone has done its work: `Ok` for that error too.
pub(crate) fn already_gone_is_done<T>(result: Result<T, Error>) -> Result<(), Error> {
    match result {
        Err(error) if !is_not_found(&error) => Err(error),
        _ => Ok(()),
    }
}

/// Whether an AWS error says the resource does not exist (so a delete already happened).
fn is_not_found(error: &Error) -> bool {
    matches!(error, Error::Aws { code: Some(code), .. }
        if code.ends_with(".NotFound") || code.ends_with("NotFound") || code == "NoSuchHostedZone")
}
