//! What the process-level tests share: a fresh database per test with a blocking face, and the
//! built binary run against it.

use std::path::PathBuf;
use std::process::{Command, Output};

pub(crate) use sunset_test_support::harness::{Running, code, stderr};
use sunset_test_support::service_env;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_sunset-backfill");

/// The shared test database, with the plans a test writes and the binary run against it.
pub(crate) struct Db {
    db: sunset_test_support::harness::Db,
    dir: tempfile::TempDir,
}

impl std::ops::Deref for Db {
    type Target = sunset_test_support::harness::Db;
    fn deref(&self) -> &Self::Target {
        &self.db
    }
}

impl Db {
    pub(crate) fn new(prefix: &str) -> Db {
        Db {
            db: sunset_test_support::harness::Db::new(prefix),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub(crate) fn plan(&self, name: &str, yaml: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, yaml).unwrap();
        path
    }

    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .envs(service_env())
            .env("DATABASE_URL", &self.url)
            .env("RUST_LOG", "warn");
        command
    }

    pub(crate) fn backfill(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run sunset-backfill")
    }

    /// Runs the binary and fails the test (saying `what`, with its output) unless it exits 0.
    pub(crate) fn succeed(&self, args: &[&str], what: &str) -> Output {
        let output = self.backfill(args);
        assert_eq!(
            code(&output),
            0,
            "{what}: {}",
            sunset_test_support::harness::text(&output)
        );
        output
    }

    pub(crate) fn spawn(&self, args: &[&str]) -> Running {
        Running::spawn(&mut self.command(args), self.dir.path())
    }

    pub(crate) fn status(&self, plan: &str) -> serde_json::Value {
        let output = self.backfill(&["status", plan, "--json"]);
        assert!(
            output.status.success(),
            "status failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    }

    /// Makes every `event` statement on `table` sleep 4 ms, so that a run lasts long enough to
    /// be killed or paused mid-way however fast the machine: batches are counted, not timed.
    pub(crate) fn slow_down_each_statement(&self, table: &str, event: &str) {
        self.exec(&format!(
            "CREATE OR REPLACE FUNCTION slow_down() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN PERFORM pg_sleep(0.004); RETURN NULL; END $$;
             CREATE TRIGGER slow_down AFTER {event} ON {table}
                 FOR EACH STATEMENT EXECUTE FUNCTION slow_down();"
        ));
    }

    /// Starts `run PLAN` and SIGKILLs it after a random 100-350 ms, twenty times (the run may
    /// end on its own at most twice). Returns the seed of the random delays, for failure messages.
    pub(crate) fn run_and_kill_twenty_times(&self, plan: &str) -> u64 {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos() as u64
            | 1;
        let mut jitter = seed;
        let mut kills = 0;
        let mut finished_early = 0;
        while kills < 20 {
            let mut child = self.spawn(&["run", plan]);
            jitter ^= jitter << 13;
            jitter ^= jitter >> 7;
            jitter ^= jitter << 17;
            std::thread::sleep(std::time::Duration::from_millis(100 + jitter % 250));
            if let Some(status) = child.try_wait().unwrap() {
                finished_early += 1;
                assert!(
                    finished_early < 3,
                    "the run ended ({status}) before 20 kills (seed {seed}); make it slower"
                );
                continue;
            }
            child.kill().unwrap();
            child.wait().unwrap();
            kills += 1;
        }
        seed
    }
}
