//! What the process-level tests share: a fresh database per test with a blocking face, and the
//! built binary run against it.

use std::path::Path;
use std::process::{Command, Output};

pub(crate) use sunset_test_support::harness::text;
use sunset_test_support::service_env;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_sunset-drop-column");

/// The shared test database, with the engine's catalog dump and the binary run against it.
pub(crate) struct Db(sunset_test_support::harness::Db);

impl std::ops::Deref for Db {
    type Target = sunset_test_support::harness::Db;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Db {
    pub(crate) fn new(prefix: &str) -> Db {
        Db(sunset_test_support::harness::Db::new(prefix))
    }

    /// The engine's catalog dump: what "the schema is the same" means in these tests.
    pub(crate) fn catalog(&self) -> Vec<String> {
        self.runtime
            .block_on(sunset_drop_column_engine::snapshot::catalog(&self.client))
            .unwrap()
    }

    /// Runs the binary against this database.
    pub(crate) fn run(&self, args: &[&str], cwd: &Path) -> Output {
        Command::new(BIN)
            .args(args)
            .current_dir(cwd)
            .envs(service_env())
            .env("DATABASE_URL", &self.url)
            .env_remove("RUST_LOG")
            .output()
            .expect("the binary runs")
    }

    /// `check --json`: the exit code and the findings.
    pub(crate) fn check(&self, args: &[&str]) -> (i32, serde_json::Value) {
        self.check_as(&self.url, args)
    }

    /// `check --json` through another URL (another role on the same server).
    pub(crate) fn check_as(&self, url: &str, args: &[&str]) -> (i32, serde_json::Value) {
        let mut all = vec!["check", "--json"];
        all.extend_from_slice(args);
        let output = Command::new(BIN)
            .args(&all)
            .envs(service_env())
            .env("DATABASE_URL", url)
            .env_remove("RUST_LOG")
            .output()
            .expect("the binary runs");
        let json = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!(
                "check printed no JSON ({e}): {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )
        });
        (output.status.code().unwrap_or(-1), json)
    }
}

/// Where the snapshots of generated text for this server's major live (`snapshots/pg15`, ...):
/// view and constraint definitions are printed by the server, and differently across majors.
pub(crate) fn snapshots(db: &Db) -> String {
    format!("snapshots/pg{}", db.major())
}

/// `pg_dump --schema-only` of the database, as a sorted list of statements: the oracle for "the
/// down restores the schema" that is not the engine's own catalog reading. Normalised for what
/// no SQL can see: the order of a table's columns (a column added back goes last), statement
/// order, comments, `SET` lines and pg_dump's `\restrict` keys.
pub(crate) fn schema_dump(db: &Db) -> Vec<String> {
    let pg_dump = pg_dump();
    let output = Command::new(&pg_dump)
        .args(["--schema-only", "--no-tablespaces", "--dbname", &db.url])
        .env_remove("PGSERVICE")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", pg_dump.display()));
    assert!(
        output.status.success(),
        "pg_dump failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    normalise_dump(&String::from_utf8_lossy(&output.stdout))
}

/// The server's own pg_dump (`SUNSET_PG_BIN_DIR`, which `cargo xtask services` sets), else PATH's.
fn pg_dump() -> std::path::PathBuf {
    match sunset_test_support::service_var("SUNSET_PG_BIN_DIR") {
        Ok(dir) => Path::new(&dir).join("pg_dump"),
        Err(_) => "pg_dump".into(),
    }
}

fn normalise_dump(dump: &str) -> Vec<String> {
    let mut statements = Vec::new();
    let mut current: Vec<String> = Vec::new();
    for line in dump.lines() {
        let noise = line.is_empty()
            || line.starts_with("--")
            || line.starts_with("SET ")
            || line.starts_with("SELECT pg_catalog.set_config")
            || line.starts_with("\\restrict")
            || line.starts_with("\\unrestrict");
        if noise {
            continue;
        }
        current.push(line.to_owned());
        if line.ends_with(';') {
            statements.push(sorted_columns(&current));
            current.clear();
        }
    }
    assert!(
        current.is_empty(),
        "pg_dump ended mid-statement: {current:?}"
    );
    statements.sort();
    statements
}

/// A `CREATE TABLE` with its column lines sorted (and their trailing commas dropped).
fn sorted_columns(statement: &[String]) -> String {
    let is_table = statement
        .first()
        .is_some_and(|first| first.starts_with("CREATE TABLE") && first.ends_with('('));
    if !is_table || statement.len() < 3 {
        return statement.join("\n");
    }
    let last = statement.len() - 1;
    let mut columns: Vec<&str> = statement[1..last]
        .iter()
        .map(|line| line.trim_end_matches(','))
        .collect();
    columns.sort_unstable();
    [statement[0].as_str()]
        .into_iter()
        .chain(columns)
        .chain([statement[last].as_str()])
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs git in `dir` as a fixed test identity; panics with its output when it fails.
pub(crate) fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .output()
        .expect("git runs");
    assert!(output.status.success(), "git {args:?}: {}", text(&output));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// `(code, object)` of every finding.
pub(crate) fn codes(json: &serde_json::Value) -> Vec<(String, String)> {
    json["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| {
            (
                f["code"].as_str().unwrap_or_default().to_owned(),
                f["object"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// The table every catalog test starts from.
pub(crate) const BASE: &str = "
    CREATE TABLE accounts (
        id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        tenant_id int NOT NULL,
        type text,
        legacy_kind text
    );
    INSERT INTO accounts (tenant_id, type, legacy_kind)
    SELECT g % 7, CASE WHEN g % 2 = 0 THEN 'PersonalAccount' ELSE 'BusinessAccount' END,
           CASE WHEN g % 2 = 0 THEN 'personal' ELSE 'business' END
    FROM generate_series(1, 200) g;
";
