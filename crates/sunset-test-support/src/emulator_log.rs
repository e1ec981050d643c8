//! The AWS emulator's own request log (moto's recorder), as an oracle that is not sunset's audit
//! log: what reached the emulator, not what sunset says it sent. One test's requests are told
//! apart from every other test's (the emulator is shared, tests run in parallel) by an app id in
//! the user agent: the binaries under test get `AWS_SDK_UA_APP_ID`, which aws-config puts into
//! every request's `x-amz-user-agent` as `app/<id>`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use base64::Engine;

use crate::{aws_endpoint_url, unique_name};

/// The variable aws-config reads the app id from.
pub const APP_ID_VAR: &str = "AWS_SDK_UA_APP_ID";

/// One request as the emulator received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The signing service from the credential scope (`ec2`, `elasticloadbalancing`, `route53`).
    pub service: String,
    /// The Query protocol's `Action` (`TerminateInstances`), else `METHOD /path` (REST APIs).
    pub operation: String,
    /// Anything but a read: a Query action not named Describe*/Get*/List*, a REST call not GET/HEAD.
    pub mutating: bool,
}

/// The requests one test's processes send, read back from the emulator.
pub struct EmulatorLog {
    app_id: String,
    endpoint: String,
}

impl EmulatorLog {
    /// Turns the emulator's recorder on (it stays on; `cargo xtask test` turns it off after the
    /// tests that use it) and picks an app id of this test's own.
    pub fn start(prefix: &str) -> EmulatorLog {
        let endpoint = aws_endpoint_url();
        let log = EmulatorLog {
            app_id: unique_name(prefix),
            endpoint,
        };
        log.call("POST", "/moto-api/recorder/start-recording");
        log
    }

    /// The environment a process under test needs for its requests to be found here.
    pub fn env(&self) -> (&'static str, &str) {
        (APP_ID_VAR, &self.app_id)
    }

    /// Every request with this test's app id, in the order the emulator received them.
    pub fn requests(&self) -> Vec<Request> {
        let body = self.call("GET", "/moto-api/recorder/download-recording");
        let marker = format!("app/{}", self.app_id);
        String::from_utf8_lossy(&body)
            .lines()
            .filter(|line| line.contains(&marker))
            .map(|line| parse(line, &marker))
            .collect()
    }

    /// The mutating requests' operations.
    pub fn mutations(&self) -> Vec<String> {
        self.requests()
            .into_iter()
            .filter(|r| r.mutating)
            .map(|r| r.operation)
            .collect()
    }

    /// A plain HTTP/1.0 exchange with the emulator's own API; panics on anything but 200.
    fn call(&self, method: &str, path: &str) -> Vec<u8> {
        let authority = self
            .endpoint
            .split("://")
            .nth(1)
            .unwrap_or(&self.endpoint)
            .trim_end_matches('/');
        let mut stream = TcpStream::connect(authority)
            .unwrap_or_else(|e| panic!("the AWS emulator at {authority} is not reachable: {e}"));
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        write!(
            stream,
            "{method} {path} HTTP/1.0\r\nHost: {authority}\r\nContent-Length: 0\r\n\r\n"
        )
        .unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        let split = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("an HTTP response");
        let head = String::from_utf8_lossy(&response[..split]);
        assert!(
            head.lines().next().is_some_and(|l| l.contains(" 200")),
            "the emulator's recorder refused {method} {path}: {head}"
        );
        response[split + 4..].to_vec()
    }
}

fn parse(line: &str, marker: &str) -> Request {
    let entry: serde_json::Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("the emulator's log has a line that is not JSON ({e}): {line}"));
    let headers = entry["headers"].as_object().cloned().unwrap_or_default();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .and_then(|(_, value)| value.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        headers
            .values()
            .any(|v| v.as_str().is_some_and(|v| v.contains(marker))),
        "{line}"
    );
    // `Credential=KEY/DATE/REGION/SERVICE/aws4_request`
    let service = header("Authorization")
        .split("Credential=")
        .nth(1)
        .and_then(|scope| scope.split('/').nth(3))
        .unwrap_or_default()
        .to_owned();
    let method = entry["method"].as_str().unwrap_or_default().to_owned();
    let url = entry["url"].as_str().unwrap_or_default();
    let body = match (entry["body"].as_str(), entry["body_encoded"].as_bool()) {
        (Some(text), Some(true)) => base64::engine::general_purpose::STANDARD
            .decode(text)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default(),
        (Some(text), _) => text.to_owned(),
        (None, _) => String::new(),
    };
    let query = url.split_once('?').map_or("", |(_, q)| q);
    let action = [body.as_str(), query]
        .into_iter()
        .flat_map(|params| params.split('&'))
        .find_map(|pair| pair.strip_prefix("Action="))
        .map(str::to_owned);
    match action {
        Some(action) => Request {
            service,
            mutating: !["Describe", "Get", "List"]
                .iter()
                .any(|read| action.starts_with(read)),
            operation: action,
        },
        None => {
            let path = url
                .split("://")
                .nth(1)
                .and_then(|rest| rest.find('/').map(|slash| &rest[slash..]))
                .unwrap_or("/");
            let path = path.split('?').next().unwrap_or(path);
            Request {
                service,
                mutating: !matches!(method.as_str(), "GET" | "HEAD"),
                operation: format!("{method} {path}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_rest_requests_are_read_from_the_log() {
        let marker = "app/t-1";
        let query = r#"{"headers": {"X-Amz-User-Agent": "aws-sdk-rust/1 app/t-1", "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20261203/us-east-2/ec2/aws4_request, SignedHeaders=host"}, "method": "POST", "url": "http://127.0.0.1:5000/", "body": "QWN0aW9uPVRlcm1pbmF0ZUluc3RhbmNlcyZWZXJzaW9uPTIwMTYtMTEtMTU=", "body_encoded": true}"#;
        assert_eq!(
            parse(query, marker),
            Request {
                service: "ec2".into(),
                operation: "TerminateInstances".into(),
                mutating: true
            }
        );
        let rest = r#"{"headers": {"user-agent": "app/t-1", "authorization": "AWS4-HMAC-SHA256 Credential=testing/20261203/us-east-1/route53/aws4_request"}, "method": "GET", "url": "http://127.0.0.1:5000/2013-04-01/hostedzone?maxitems=100", "body": "", "body_encoded": false}"#;
        assert_eq!(
            parse(rest, marker),
            Request {
                service: "route53".into(),
                operation: "GET /2013-04-01/hostedzone".into(),
                mutating: false
            }
        );
    }
}
