//! Who holds a run lock, so a refused second runner can tell the operator whom to ask.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    pub host: String,
    pub started_at: DateTime<Utc>,
}

impl Holder {
    /// This process, now.
    pub fn current() -> Holder {
        Holder {
            pid: std::process::id(),
            host: gethostname::gethostname().to_string_lossy().into_owned(),
            started_at: Utc::now(),
        }
    }
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pid {} on host `{}`, started {}",
            self.pid,
            self.host,
            self.started_at.to_rfc3339_opts(SecondsFormat::Secs, true)
        )
    }
}
