//! Fixture processes that tests start, read and SIGKILL.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

/// A running fixture process whose stdout lines arrive on a channel.
pub(crate) struct Fixture {
    child: Child,
    lines: Receiver<String>,
    /// Every line read so far.
    pub(crate) seen: Vec<String>,
}

impl Fixture {
    pub(crate) fn spawn(program: &str, args: &[&str]) -> Fixture {
        let mut child = Command::new(program)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {program}: {e}"));
        let stdout = child.stdout.take().expect("stdout is piped");
        let (sender, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Fixture {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the line `wanted`; panics (with what was seen) if the process exits or 30s pass.
    pub(crate) fn wait_for(&mut self, wanted: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let done = line == wanted;
                    self.seen.push(line);
                    if done {
                        return;
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                    let status = self.child.try_wait().ok().flatten();
                    panic!(
                        "fixture never printed {wanted:?} (exit status {status:?}); it printed {:?}",
                        self.seen
                    );
                }
            }
        }
    }

    /// SIGKILLs the process, reaps it, and collects what it printed before dying.
    pub(crate) fn kill(mut self) -> Vec<String> {
        self.child.kill().expect("SIGKILL the fixture");
        self.child.wait().expect("reap the fixture");
        self.seen.extend(self.lines.try_iter());
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
            self.seen.push(line);
        }
        self.seen
    }
}

/// The counter of the last `saved N` line: the last checkpoint the fixture saw durable.
pub(crate) fn last_saved(lines: &[String]) -> Option<u64> {
    lines
        .iter()
        .rev()
        .find_map(|line| line.strip_prefix("saved ")?.parse().ok())
}

/// A cheap deterministic pseudo-random sequence (xorshift), so kill timings vary between rounds
/// but a failing run can be repeated with the same seed.
pub(crate) struct Jitter(u64);

impl Jitter {
    pub(crate) fn new(seed: u64) -> Jitter {
        Jitter(seed.max(1))
    }

    pub(crate) fn millis(&mut self, range: std::ops::Range<u64>) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Duration::from_millis(range.start + self.0 % (range.end - range.start))
    }
}
