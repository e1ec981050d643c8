//! Fixtures shared by the end-to-end tests and the fixture processes they SIGKILL.

use serde::{Deserialize, Serialize};

/// The fingerprint the crash fixtures checkpoint under.
pub const CRASH_FINGERPRINT: &str = "crash-test-plan";

/// A checkpoint state large enough (256 KiB) that a SIGKILL often lands in the middle of writing
/// it, and self-describing, so a reader can tell a torn or mixed checkpoint from a whole one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrashState {
    pub counter: u64,
    pub filler: String,
}

impl CrashState {
    pub fn new(counter: u64) -> CrashState {
        CrashState {
            counter,
            filler: filler(counter),
        }
    }

    /// Whether the filler belongs to the counter, i.e. the state was written whole.
    pub fn is_whole(&self) -> bool {
        self.filler == filler(self.counter)
    }
}

fn filler(counter: u64) -> String {
    format!("{counter:016}|").repeat(256 * 1024 / 17)
}
