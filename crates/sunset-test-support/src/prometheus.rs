//! The Prometheus that `cargo xtask services up` runs: a test hands it a `--metrics-addr` to
//! scrape (a file-based service discovery file, removed when the guard drops) and asks it
//! questions through its HTTP API, the way a dashboard does.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::{HOW_TO_START, service_var};

pub struct Prometheus {
    /// `host:port` of its HTTP API.
    authority: String,
    targets: PathBuf,
}

/// A scrape target; Prometheus stops scraping it when this drops.
pub struct ScrapeTarget {
    file: PathBuf,
}

impl Drop for ScrapeTarget {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
    }
}

impl Prometheus {
    /// The services' Prometheus; panics with how to start it when it is not up.
    pub fn from_env() -> Prometheus {
        let url =
            service_var("SUNSET_PROMETHEUS_URL").unwrap_or_else(|message| panic!("{message}"));
        let targets =
            service_var("SUNSET_PROMETHEUS_TARGETS").unwrap_or_else(|message| panic!("{message}"));
        let authority = url
            .strip_prefix("http://")
            .unwrap_or(&url)
            .trim_end_matches('/')
            .to_owned();
        let prometheus = Prometheus {
            authority,
            targets: PathBuf::from(targets),
        };
        if let Err(error) = prometheus.get("/-/ready") {
            panic!("Prometheus at {url} does not answer ({error}): {HOW_TO_START}");
        }
        prometheus
    }

    /// Starts scraping `addr` (every second), with `test="<name>"` on its series.
    pub fn scrape(&self, name: &str, addr: SocketAddr) -> ScrapeTarget {
        let file = self.targets.join(format!("{name}.json"));
        let body =
            serde_json::json!([{ "targets": [addr.to_string()], "labels": { "test": name } }]);
        // Written aside and renamed, so Prometheus never reads half a file.
        let partial = self.targets.join(format!(".{name}.partial"));
        std::fs::write(&partial, body.to_string()).expect("write the scrape target");
        std::fs::rename(&partial, &file).expect("publish the scrape target");
        ScrapeTarget { file }
    }

    /// An instant query: the result's series (`data.result`), or Prometheus's error.
    pub fn query(&self, expr: &str) -> Result<Vec<serde_json::Value>, String> {
        let body = self.get(&format!("/api/v1/query?query={}", percent_encode(expr)))?;
        let answer: serde_json::Value = serde_json::from_str(&body).map_err(|e| {
            format!("Prometheus answered with something other than JSON ({e}): {body}")
        })?;
        if answer["status"] != "success" {
            return Err(format!(
                "{}: {}",
                answer["errorType"].as_str().unwrap_or("error"),
                answer["error"].as_str().unwrap_or(&body)
            ));
        }
        Ok(answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// Polls `expr` until it returns a series (the series), or panics after `timeout`.
    pub fn wait_for(&self, expr: &str, timeout: Duration) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.query(expr) {
                Ok(series) if !series.is_empty() => return series,
                Err(error) if error.starts_with("bad_data") => panic!("`{expr}`: {error}"),
                _ if Instant::now() > deadline => {
                    panic!("`{expr}` returned no series within {timeout:?}")
                }
                _ => std::thread::sleep(Duration::from_millis(250)),
            }
        }
    }

    /// One GET over HTTP/1.0 (so the answer is never chunked); the body of a 2xx or 4xx answer
    /// (Prometheus explains a bad query in a 400's JSON body).
    fn get(&self, path_and_query: &str) -> Result<String, String> {
        let mut stream = TcpStream::connect(&self.authority).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        write!(
            stream,
            "GET {path_and_query} HTTP/1.0\r\nHost: {}\r\n\r\n",
            self.authority
        )
        .map_err(|e| e.to_string())?;
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .map_err(|e| e.to_string())?;
        let (head, body) = response
            .split_once("\r\n\r\n")
            .ok_or_else(|| format!("a malformed HTTP answer: {response}"))?;
        let status = head.split(' ').nth(1).unwrap_or_default();
        if status.starts_with('2') || status.starts_with('4') {
            Ok(body.to_owned())
        } else {
            Err(format!("HTTP {status}: {body}"))
        }
    }
}

/// Every byte but the unreserved ones as `%XX` (RFC 3986), for a query parameter.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn queries_are_percent_encoded() {
        assert_eq!(
            super::percent_encode(r#"rate(x{run=~"a b"}[1m]) / 2"#),
            "rate%28x%7Brun%3D~%22a%20b%22%7D%5B1m%5D%29%20%2F%202"
        );
    }
}
