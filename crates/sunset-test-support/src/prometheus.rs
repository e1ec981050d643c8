//! The Prometheus that `cargo xtask services up` runs: a test hands it a `--metrics-addr` to
//! scrape (a file-based service discovery file, removed when the guard drops) and asks it
//! questions through its HTTP API, the way a dashboard does.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use sunset_promql::{Client, Error};
pub use sunset_promql::{FileTarget, Sample};

use crate::{HOW_TO_START, service_var};

pub struct Prometheus {
    client: Client,
    targets: PathBuf,
}

impl Prometheus {
    /// The services' Prometheus; panics with how to start it when it is not up.
    pub fn from_env() -> Prometheus {
        let var = |name| service_var(name).unwrap_or_else(|message| panic!("{message}"));
        let url = var("SUNSET_PROMETHEUS_URL");
        let client = Client::new(&url).unwrap_or_else(|error| panic!("{error}"));
        if let Err(error) = client.ready() {
            panic!("Prometheus at {url} does not answer ({error}): {HOW_TO_START}");
        }
        Prometheus {
            client,
            targets: PathBuf::from(var("SUNSET_PROMETHEUS_TARGETS")),
        }
    }

    /// Starts scraping `addr` (every second, within five seconds of this call), with
    /// `test="<name>"` on its series.
    pub fn scrape(&self, name: &str, addr: SocketAddr) -> FileTarget {
        FileTarget::publish(&self.targets, name, &addr.to_string(), ("test", name))
            .expect("publish the scrape target")
    }

    /// An instant query: its series, or Prometheus's reason for refusing it.
    pub fn query(&self, expr: &str) -> Result<Vec<Sample>, Error> {
        self.client.query(expr)
    }

    /// Polls `expr` until it returns a series (the series); panics after `timeout`, or at once
    /// when Prometheus refuses the expression.
    pub fn wait_for(&self, expr: &str, timeout: Duration) -> Vec<Sample> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.query(expr) {
                Ok(series) if !series.is_empty() => return series,
                Err(error @ Error::Query { .. }) => panic!("`{expr}`: {error}"),
                _ if Instant::now() > deadline => {
                    panic!("`{expr}` returned no series within {timeout:?}")
                }
                _ => std::thread::sleep(Duration::from_millis(250)),
            }
        }
    }

    /// The value of `expr`'s first series, waiting for one as [`Prometheus::wait_for`] does.
    pub fn value(&self, expr: &str, timeout: Duration) -> f64 {
        self.wait_for(expr, timeout)[0].value
    }
}
