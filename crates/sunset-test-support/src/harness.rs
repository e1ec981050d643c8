//! The blocking harness every process-level test shares: tests drive the built binaries as
//! operators do, so they block anyway. A fresh database per test ([`Db`]), a binary started in
//! the background and killed if the test fails ([`Running`]), and what a finished one said
//! ([`code`], [`stderr`], [`text`]).

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use crate::{connect, fresh_database};

/// The runtime of one test: one worker, enough to drive clients while the test blocks.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a test runtime")
}

/// A database of its own for one test, with a synchronous face.
pub struct Db {
    pub runtime: tokio::runtime::Runtime,
    pub client: tokio_postgres::Client,
    pub url: String,
}

impl Db {
    pub fn new(prefix: &str) -> Db {
        let runtime = runtime();
        let url = runtime.block_on(fresh_database(prefix));
        let client = runtime.block_on(connect(&url));
        Db {
            runtime,
            client,
            url,
        }
    }

    /// The server's major version (15, 18, ...): where its output legitimately differs.
    pub fn major(&self) -> i64 {
        self.int("SELECT current_setting('server_version_num')::int8 / 10000")
    }

    pub fn exec(&self, sql: &str) {
        self.runtime
            .block_on(self.client.batch_execute(sql))
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }

    /// Like [`Db::exec`], the server's message as the error.
    pub fn try_exec(&self, sql: &str) -> Result<(), String> {
        self.runtime
            .block_on(self.client.batch_execute(sql))
            .map_err(|e| {
                e.as_db_error()
                    .map_or_else(|| e.to_string(), |d| d.message().to_owned())
            })
    }

    /// The first column of the one row `sql` returns.
    pub fn int(&self, sql: &str) -> i64 {
        self.one(sql).get(0)
    }

    /// The first column of the one row `sql` returns.
    pub fn text(&self, sql: &str) -> Option<String> {
        self.one(sql).get(0)
    }

    /// The first column of every row (NULL as the empty string).
    pub fn strings(&self, sql: &str) -> Vec<String> {
        self.runtime
            .block_on(self.client.query(sql, &[]))
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
            .iter()
            .map(|r| r.get::<_, Option<String>>(0).unwrap_or_default())
            .collect()
    }

    /// A digest of every row of `table`, to prove a refused command changed nothing.
    pub fn digest(&self, table: &str) -> Option<String> {
        self.text(&format!(
            "SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) FROM {table} t"
        ))
    }

    fn one(&self, sql: &str) -> tokio_postgres::Row {
        self.runtime
            .block_on(self.client.query_one(sql, &[]))
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
    }
}

/// A binary running in the background: killed if the test fails before it ends (a panicking
/// test must not leave a run working against the shared services), its stderr in a file that a
/// failing test prints. Nobody reads a running child's output (a full pipe would block it).
pub struct Running {
    pub child: Child,
    log: tempfile::NamedTempFile,
}

impl Running {
    /// Starts `command` with stdout discarded and stderr logged to a file in `dir`.
    pub fn spawn(command: &mut Command, dir: &Path) -> Running {
        let log = tempfile::NamedTempFile::new_in(dir).expect("child log file");
        let child = command
            .stdout(Stdio::null())
            .stderr(log.reopen().expect("child log file"))
            .spawn()
            .expect("start the binary");
        Running { child, log }
    }

    /// What the child wrote to stderr so far.
    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}

impl std::ops::Deref for Running {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.child
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for Running {
    #[expect(
        clippy::print_stderr,
        reason = "the test harness shows a failing test's stderr"
    )]
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- stderr of pid {} ---\n{}",
                self.child.id(),
                self.stderr_text()
            );
        }
    }
}

/// The exit code (-1 when killed by a signal).
pub fn code(output: &Output) -> i32 {
    output.status.code().unwrap_or(-1)
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The exit code, stdout and stderr: everything a user saw, labelled for failure messages.
pub fn text(output: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        stderr(output)
    )
}
