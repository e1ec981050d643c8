//! What the process-level tests share: a fresh database per test with a blocking face, and the
//! built binary run against it.
#![allow(dead_code, reason = "each test binary uses a different part")]

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

use sunset_test_support::{connect, fresh_database, service_env};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_sunset-backfill");

/// A test database with a synchronous face: tests drive processes, so they block anyway.
pub(crate) struct Db {
    pub(crate) runtime: tokio::runtime::Runtime,
    pub(crate) client: tokio_postgres::Client,
    pub(crate) url: String,
    dir: tempfile::TempDir,
}

impl Db {
    pub(crate) fn new(prefix: &str) -> Db {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let url = runtime.block_on(fresh_database(prefix));
        let client = runtime.block_on(connect(&url));
        Db {
            runtime,
            client,
            url,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub(crate) fn exec(&self, sql: &str) {
        self.runtime
            .block_on(self.client.batch_execute(sql))
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }

    pub(crate) fn int(&self, sql: &str) -> i64 {
        let row = self
            .runtime
            .block_on(self.client.query_one(sql, &[]))
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        row.get(0)
    }

    pub(crate) fn text(&self, sql: &str) -> Option<String> {
        let row = self
            .runtime
            .block_on(self.client.query_one(sql, &[]))
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        row.get(0)
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

    pub(crate) fn spawn(&self, args: &[&str]) -> Running {
        // Nobody reads a running child's output while it runs (a full pipe would block it), so
        // its stderr goes to a file that a failing test prints.
        let log = tempfile::NamedTempFile::new_in(self.dir.path()).expect("child log file");
        let child = self
            .command(args)
            .stdout(Stdio::null())
            .stderr(log.reopen().expect("child log file"))
            .spawn();
        Running(child.expect("start sunset-backfill"), log)
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

    /// A digest of every row, to prove bad input changed nothing.
    pub(crate) fn digest(&self, table: &str) -> Option<String> {
        self.text(&format!(
            "SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) FROM {table} t"
        ))
    }
}

/// A running `sunset-backfill` that is killed if the test fails before it ends (a panicking test
/// must not leave a run behind working against the shared server), and whose stderr a failing
/// test prints.
pub(crate) struct Running(pub(crate) Child, tempfile::NamedTempFile);

impl std::ops::Deref for Running {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Running {
    /// What the child wrote to stderr so far.
    pub(crate) fn stderr_text(&self) -> String {
        std::fs::read_to_string(self.1.path()).unwrap_or_default()
    }
}

impl Drop for Running {
    #[expect(
        clippy::print_stderr,
        reason = "the test harness shows a failing test's stderr"
    )]
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.1.path()).unwrap_or_default();
            eprintln!(
                "--- stderr of sunset-backfill (pid {}) ---\n{log}",
                self.0.id()
            );
        }
    }
}

pub(crate) fn code(output: &Output) -> i32 {
    output.status.code().unwrap_or(-1)
}

pub(crate) fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}
