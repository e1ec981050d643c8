//! Prometheus metrics on `--metrics-addr`, the same way in every binary: [`MetricsArgs`] for the
//! flag, [`Exposition`] to write the text format, and [`serve`], a minimal HTTP/1 endpoint that
//! answers every request with what the command's render function returns at that moment.
//! Hand-written because one GET handler does not justify an HTTP server dependency.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::run::Failure;

/// `--metrics-addr`, flattened into the commands that run long.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct MetricsArgs {
    /// Serve Prometheus metrics on this address while the command runs (for example
    /// 127.0.0.1:9187).
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
}

impl MetricsArgs {
    /// Starts the endpoint when the flag was given; a port that cannot be bound is bad input,
    /// reported before the command changes anything. Serving stops when the handle drops.
    pub async fn serve(
        &self,
        render: impl Fn() -> String + Send + Sync + 'static,
    ) -> Result<Option<Endpoint>, Failure> {
        match self.metrics_addr {
            None => Ok(None),
            Some(addr) => serve(addr, Arc::new(render))
                .await
                .map(Some)
                .map_err(|e| Failure::bad_input(format!("cannot serve metrics on `{addr}`: {e}"))),
        }
    }
}

/// A running metrics endpoint; aborted when dropped.
#[derive(Debug)]
pub struct Endpoint {
    task: tokio::task::JoinHandle<()>,
    addr: SocketAddr,
}

impl Endpoint {
    /// The bound address (the real port when `:0` was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a metrics render function is.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// Binds `addr` and answers every request with `render()`.
pub async fn serve(addr: SocketAddr, render: Render) -> std::io::Result<Endpoint> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let body = render();
            tokio::spawn(async move {
                // The request is read (so the client's write does not fail) but not parsed:
                // every path answers with the metrics.
                let mut request = [0u8; 2048];
                let _ = socket.read(&mut request).await;
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    Ok(Endpoint { task, addr })
}

/// What a metric family is, for its `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// The Prometheus text exposition format, one family at a time; every sample carries the
/// labels given to [`Exposition::new`] (the run, the sequence) before its own.
#[derive(Debug, Default)]
pub struct Exposition {
    common: String,
    out: String,
}

impl Exposition {
    pub fn new(common: &[(&str, &str)]) -> Exposition {
        Exposition {
            common: labels(common),
            out: String::new(),
        }
    }

    /// One family with one sample per label set (an empty one for an unlabelled sample).
    pub fn family<'a, L: AsRef<[(&'a str, &'a str)]>>(
        &mut self,
        name: &str,
        help: &str,
        kind: Kind,
        samples: impl IntoIterator<Item = (L, f64)>,
    ) {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (own, value) in samples {
            self.sample(name, own.as_ref(), value);
        }
    }

    /// One family with a single sample of the common labels.
    pub fn single(&mut self, name: &str, help: &str, kind: Kind, value: f64) {
        self.family(name, help, kind, [([], value)]);
    }

    /// A state as one gauge per possible value: 1 for the current one, 0 for the others, so a
    /// dashboard sees every value (and a value that never occurs still has a series).
    pub fn one_of(&mut self, name: &str, help: &str, label: &str, values: &[(&str, bool)]) {
        let samples = values
            .iter()
            .map(|(value, on)| ([(label, *value)], f64::from(u8::from(*on))));
        self.family(name, help, Kind::Gauge, samples);
    }

    /// A histogram from per-bucket counts (not cumulative; one more than `bounds`, for +Inf).
    pub fn histogram(&mut self, name: &str, help: &str, bounds: &[f64], counts: &[u64], sum: f64) {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        let bound_labels = bounds
            .iter()
            .map(|bound| bound.to_string())
            .chain(["+Inf".to_owned()]);
        for (bound, count) in bound_labels.zip(counts) {
            cumulative += count;
            self.sample(
                &format!("{name}_bucket"),
                &[("le", &bound)],
                cumulative as f64,
            );
        }
        self.sample(&format!("{name}_sum"), &[], sum);
        self.sample(&format!("{name}_count"), &[], cumulative as f64);
    }

    pub fn finish(self) -> String {
        self.out
    }

    fn sample(&mut self, name: &str, own: &[(&str, &str)], value: f64) {
        let own = labels(own);
        let joined = match (self.common.is_empty(), own.is_empty()) {
            (true, true) => String::new(),
            (false, true) => format!("{{{}}}", self.common),
            (true, false) => format!("{{{own}}}"),
            (false, false) => format!("{{{},{own}}}", self.common),
        };
        let value = if value.is_nan() {
            "NaN".to_owned()
        } else if value.is_infinite() {
            if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
        } else {
            value.to_string()
        };
        let _ = writeln!(self.out, "{name}{joined} {value}");
    }
}

/// `a="x",b="y"`, values escaped as the text format wants (backslash, quote, newline).
fn labels(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(key, value)| {
            let value = value
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{key}=\"{value}\"")
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;

    #[test]
    fn families_histograms_and_escaped_labels() {
        let mut out = Exposition::new(&[("run", "a\"b\\c\nd")]);
        out.single("x_total", "Things.", Kind::Counter, 3.0);
        out.one_of(
            "x_state",
            "One per state.",
            "state",
            &[("on", true), ("off", false)],
        );
        out.histogram("x_seconds", "Durations.", &[0.1, 1.0], &[2, 1, 1], 2.5);
        out.single("x_ratio", "Unknown yet.", Kind::Gauge, f64::NAN);
        expect![[r#"
            # HELP x_total Things.
            # TYPE x_total counter
            x_total{run="a\"b\\c\nd"} 3
            # HELP x_state One per state.
            # TYPE x_state gauge
            x_state{run="a\"b\\c\nd",state="on"} 1
            x_state{run="a\"b\\c\nd",state="off"} 0
            # HELP x_seconds Durations.
            # TYPE x_seconds histogram
            x_seconds_bucket{run="a\"b\\c\nd",le="0.1"} 2
            x_seconds_bucket{run="a\"b\\c\nd",le="1"} 3
            x_seconds_bucket{run="a\"b\\c\nd",le="+Inf"} 4
            x_seconds_sum{run="a\"b\\c\nd"} 2.5
            x_seconds_count{run="a\"b\\c\nd"} 4
            # HELP x_ratio Unknown yet.
            # TYPE x_ratio gauge
            x_ratio{run="a\"b\\c\nd"} NaN
        "#]]
        .assert_eq(&out.finish());
    }

    #[tokio::test]
    async fn the_endpoint_answers_with_the_current_render() {
        let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let seen = counter.clone();
        let render: Render = Arc::new(move || {
            let n = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            format!("n {n}\n")
        });
        let endpoint = serve("127.0.0.1:0".parse().unwrap(), render).await.unwrap();
        for expected in ["n 0\n", "n 1\n"] {
            let mut stream = tokio::net::TcpStream::connect(endpoint.addr())
                .await
                .unwrap();
            stream
                .write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
                .await
                .unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).await.unwrap();
            assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
            assert!(response.ends_with(expected), "{response}");
        }
    }
}
