//! Prometheus's HTTP API: the parsing of its answers (vectors, matrices, lists of names), used
//! by the cutover gates over their own HTTPS-capable client; a small blocking client over plain
//! HTTP (instant and range queries, the readiness probe) for the tests and the demo; and
//! [`FileTarget`], a scrape target handed to Prometheus through file-based discovery. The
//! blocking client is hand-written (HTTP/1.0, so answers are never chunked) because a few GETs
//! from a test do not justify an HTTP client stack.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("`{0}` is not a Prometheus URL this client reads (http://HOST:PORT)")]
    Url(String),
    #[error("cannot reach Prometheus at {authority}")]
    Io {
        authority: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Prometheus answered HTTP {status}: {body}")]
    Http { status: String, body: String },
    #[error("Prometheus refused the query ({kind}): {message}")]
    Query { kind: String, message: String },
    #[error("Prometheus's answer is not the JSON its API documents")]
    Json(#[source] serde_json::Error),
}

/// A scrape target published as `DIR/NAME.json` for a Prometheus whose `file_sd_configs` read
/// `DIR/*.json`; removed (so scraping stops) when dropped.
#[derive(Debug)]
pub struct FileTarget {
    file: std::path::PathBuf,
}

impl FileTarget {
    /// Publishes `addr` with one extra `label` on its series, written aside and renamed so
    /// Prometheus never reads half a file.
    pub fn publish(
        dir: &std::path::Path,
        name: &str,
        addr: &str,
        label: (&str, &str),
    ) -> std::io::Result<FileTarget> {
        let file = dir.join(format!("{name}.json"));
        let partial = dir.join(format!(".{name}.partial"));
        let body = serde_json::json!([{ "targets": [addr], "labels": { label.0: label.1 } }]);
        std::fs::write(&partial, body.to_string())?;
        std::fs::rename(&partial, &file)?;
        Ok(FileTarget { file })
    }
}

impl Drop for FileTarget {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
    }
}

/// One series of an instant query's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

#[derive(Debug, Clone)]
pub struct Client {
    /// `host:port`.
    authority: String,
}

impl Client {
    pub fn new(url: &str) -> Result<Client, Error> {
        let authority = url
            .strip_prefix("http://")
            .map(|rest| rest.trim_end_matches('/'))
            .filter(|rest| !rest.is_empty() && !rest.contains('/'))
            .ok_or_else(|| Error::Url(url.to_owned()))?;
        Ok(Client {
            authority: authority.to_owned(),
        })
    }

    /// Whether Prometheus says it is ready to serve queries.
    pub fn ready(&self) -> Result<(), Error> {
        self.get("/-/ready").map(drop)
    }

    /// An instant query (`/api/v1/query`) evaluated now: its series, or Prometheus's own
    /// explanation of why it refused the expression.
    pub fn query(&self, expr: &str) -> Result<Vec<Sample>, Error> {
        parse_vector(&self.get(&format!("/api/v1/query?query={}", percent_encode(expr)))?)
    }

    /// A range query (`/api/v1/query_range`) from `start` to `end` (Unix seconds) every `step`
    /// seconds.
    pub fn query_range(
        &self,
        expr: &str,
        start: f64,
        end: f64,
        step: f64,
    ) -> Result<Vec<Series>, Error> {
        parse_matrix(&self.get(&format!(
            "/api/v1/query_range?query={}&start={start}&end={end}&step={step}",
            percent_encode(expr)
        ))?)
    }

    /// One GET; the body of a 2xx answer, or of a 4xx one whose body is the API's JSON error
    /// (Prometheus explains a bad expression in a 400 or 422).
    fn get(&self, path_and_query: &str) -> Result<String, Error> {
        let io = |source| Error::Io {
            authority: self.authority.clone(),
            source,
        };
        let mut stream = TcpStream::connect(&self.authority).map_err(io)?;
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(io)?;
        write!(
            stream,
            "GET {path_and_query} HTTP/1.0\r\nHost: {}\r\n\r\n",
            self.authority
        )
        .map_err(io)?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).map_err(io)?;
        let response = String::from_utf8_lossy(&response);
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        let status = head.split(' ').nth(1).unwrap_or_default().to_owned();
        let api_error = status.starts_with('4') && body.trim_start().starts_with('{');
        if status.starts_with('2') || api_error {
            Ok(body.to_owned())
        } else {
            Err(Error::Http {
                status,
                body: body.chars().take(500).collect(),
            })
        }
    }
}

/// The `data` of a successful answer, or Prometheus's explanation of a refused one.
fn data(body: &str) -> Result<serde_json::Value, Error> {
    let mut answer: serde_json::Value = serde_json::from_str(body).map_err(Error::Json)?;
    if answer["status"] != "success" {
        return Err(Error::Query {
            kind: answer["errorType"].as_str().unwrap_or("error").to_owned(),
            message: answer["error"].as_str().unwrap_or(body).to_owned(),
        });
    }
    Ok(answer["data"].take())
}

/// An instant query's answer (`vector` or `scalar`) as samples.
pub fn parse_vector(body: &str) -> Result<Vec<Sample>, Error> {
    let data = data(body)?;
    let points: Vec<(BTreeMap<String, String>, &serde_json::Value)> =
        match data["resultType"].as_str() {
            Some("vector") => data["result"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|series| (labels(&series["metric"]), &series["value"]))
                .collect(),
            Some("scalar") => vec![(BTreeMap::new(), &data["result"])],
            _ => Vec::new(),
        };
    Ok(points
        .into_iter()
        .map(|(labels, point)| Sample {
            labels,
            value: sample_value(point),
        })
        .collect())
}

/// One series of a range query's answer: its labels and its `(unix seconds, value)` points.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: BTreeMap<String, String>,
    pub points: Vec<(f64, f64)>,
}

/// A range query's answer (`matrix`) as series.
pub fn parse_matrix(body: &str) -> Result<Vec<Series>, Error> {
    let data = data(body)?;
    if data["resultType"] != "matrix" {
        return Err(Error::Query {
            kind: "unexpected".to_owned(),
            message: format!(
                "a range query answered `{}`, not a matrix",
                data["resultType"]
            ),
        });
    }
    Ok(data["result"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|series| Series {
            labels: labels(&series["metric"]),
            points: series["values"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|point| (point[0].as_f64().unwrap_or(f64::NAN), sample_value(point)))
                .collect(),
        })
        .collect())
}

/// A list of strings (`/api/v1/label/NAME/values`).
pub fn parse_strings(body: &str) -> Result<Vec<String>, Error> {
    Ok(data(body)?
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|value| value.as_str().map(str::to_owned))
        .collect())
}

fn labels(metric: &serde_json::Value) -> BTreeMap<String, String> {
    metric
        .as_object()
        .into_iter()
        .flatten()
        .map(|(key, value)| (key.clone(), value.as_str().unwrap_or_default().to_owned()))
        .collect()
}

/// `[timestamp, "value"]`, the value a string as Prometheus writes it (`NaN`, `+Inf` included).
fn sample_value(point: &serde_json::Value) -> f64 {
    match point[1].as_str() {
        Some("+Inf") => f64::INFINITY,
        Some("-Inf") => f64::NEG_INFINITY,
        Some(text) => text.parse().unwrap_or(f64::NAN),
        None => f64::NAN,
    }
}

/// Every byte but the unreserved ones as `%XX` (RFC 3986), for a query parameter.
pub fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(byte).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_percent_encoded() {
        assert_eq!(
            percent_encode(r#"rate(x{run=~"a b"}[1m]) / 2"#),
            "rate%28x%7Brun%3D~%22a%20b%22%7D%5B1m%5D%29%20%2F%202"
        );
    }

    #[test]
    fn only_plain_http_urls_of_a_server_are_taken() {
        assert!(Client::new("http://127.0.0.1:9090").is_ok());
        assert!(Client::new("http://127.0.0.1:9090/").is_ok());
        for bad in [
            "https://x:9090",
            "127.0.0.1:9090",
            "http://",
            "http://x/prefix",
        ] {
            assert!(matches!(Client::new(bad), Err(Error::Url(_))), "{bad}");
        }
    }

    #[test]
    fn answers_parse_as_the_api_documents_them() {
        let matrix = r#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{"__name__":"up","job":"a"},"values":[[10,"1"],[11.5,"NaN"]]}]}}"#;
        let series = parse_matrix(matrix).unwrap();
        assert_eq!(series[0].labels["job"], "a");
        assert_eq!(series[0].points[0], (10.0, 1.0));
        assert!(series[0].points[1].1.is_nan());
        let names = r#"{"status":"success","data":["pg_up","up"]}"#;
        assert_eq!(parse_strings(names).unwrap(), ["pg_up", "up"]);
        let refused = r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
        assert!(
            matches!(parse_vector(refused), Err(Error::Query { kind, .. }) if kind == "bad_data")
        );
        assert!(
            parse_matrix(r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#)
                .is_err()
        );
    }

    #[test]
    fn values_as_prometheus_writes_them() {
        for (text, expected) in [
            ("1.5", 1.5),
            ("+Inf", f64::INFINITY),
            ("-Inf", f64::NEG_INFINITY),
        ] {
            assert_eq!(sample_value(&serde_json::json!([0, text])), expected);
        }
        assert!(sample_value(&serde_json::json!([0, "NaN"])).is_nan());
    }
}
