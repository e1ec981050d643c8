//! The gates' Prometheus client: the HTTP API over reqwest (HTTP or HTTPS, a path prefix,
//! credentials in the URL), answers parsed by `sunset-promql`. Every request is audited like an
//! AWS call, without its credentials.

use std::time::Duration;

use sunset_promql::Series;

use crate::Error;
use crate::audit::AuditLog;

/// How long one request may take: a range query over an hour of a few hundred series answers
/// in well under a second on a healthy server.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) struct Prometheus<'a> {
    base: String,
    client: reqwest::Client,
    audit: &'a AuditLog,
}

impl<'a> Prometheus<'a> {
    pub(crate) fn new(url: &str, audit: &'a AuditLog) -> Result<Self, Error> {
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| Error::Probe(format!("cannot build an HTTP client: {e}")))?;
        Ok(Prometheus {
            base: url.trim_end_matches('/').to_owned(),
            client,
            audit,
        })
    }

    /// A range query; times in Unix seconds.
    pub(crate) async fn query_range(
        &self,
        expr: &str,
        start: f64,
        end: f64,
        step: f64,
    ) -> Result<Vec<Series>, Error> {
        let (start, end, step) = (start.to_string(), end.to_string(), step.to_string());
        let body = self
            .get(
                "query_range",
                &[
                    ("query", expr),
                    ("start", &start),
                    ("end", &end),
                    ("step", &step),
                ],
            )
            .await?;
        sunset_promql::parse_matrix(&body).map_err(|e| self.refused(expr, &e))
    }

    /// The metric names with a series between `start` and `end` matching `selector` (all of
    /// them without one).
    pub(crate) async fn metric_names(
        &self,
        selector: Option<&str>,
        start: f64,
        end: f64,
    ) -> Result<Vec<String>, Error> {
        let (start, end) = (start.to_string(), end.to_string());
        let mut params = vec![("start", start.as_str()), ("end", end.as_str())];
        if let Some(selector) = selector {
            params.push(("match[]", selector));
        }
        let body = self.get("label/__name__/values", &params).await?;
        sunset_promql::parse_strings(&body).map_err(|e| self.refused("metric names", &e))
    }

    /// Whether the server answers its API at all (plan time: a wrong URL is bad input).
    pub(crate) async fn reachable(&self) -> Result<(), Error> {
        self.get("status/buildinfo", &[]).await.map(drop)
    }

    fn refused(&self, what: &str, error: &sunset_promql::Error) -> Error {
        Error::Probe(format!(
            "Prometheus at {} refused `{what}`: {error}",
            self.shown()
        ))
    }

    /// The URL without credentials, for messages and the audit log.
    fn shown(&self) -> String {
        without_credentials(&self.base)
    }

    async fn get(&self, endpoint: &str, params: &[(&str, &str)]) -> Result<String, Error> {
        let url = format!("{}/api/v1/{endpoint}", self.base);
        let operation = format!("GET {}/api/v1/{endpoint}", self.shown());
        let answer = async {
            let response = self
                .client
                .get(&url)
                .query(params)
                .send()
                .await
                .map_err(|e| format!("{operation}: {}", without_url(&e)))?;
            let status = response.status();
            let body = response
                .text()
                .await
                .map_err(|e| format!("{operation}: reading the answer: {}", without_url(&e)))?;
            // The API explains a refused query in the JSON of a 400 or 422.
            if status.is_success()
                || (status.is_client_error() && body.trim_start().starts_with('{'))
            {
                Ok(body)
            } else {
                let excerpt: String = body.chars().take(300).collect();
                Err(format!("{operation}: HTTP {status}: {excerpt}"))
            }
        }
        .await;
        match answer {
            Ok(body) => {
                self.audit
                    .record("prometheus", &operation, false, &[], Ok(()))?;
                Ok(body)
            }
            Err(message) => {
                self.audit
                    .record("prometheus", &operation, false, &[], Err(&message))?;
                Err(Error::Probe(message))
            }
        }
    }
}

/// `url` without the `user:password@` it may carry: what messages, plans and logs show.
pub(crate) fn without_credentials(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((_, host)) => format!("{scheme}://{host}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// reqwest's error without the request's URL (which may carry credentials).
fn without_url(error: &reqwest::Error) -> String {
    let mut message = error.to_string();
    if let Some(url) = error.url() {
        message = message
            .replace(&format!(" ({url})"), "")
            .replace(url.as_str(), "");
    }
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
