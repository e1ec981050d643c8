//! What the process-level tests share: a fresh database per test with a blocking face, and the
//! built binary run against it.

use std::path::PathBuf;
use std::process::{Command, Output};

pub(crate) use sunset_test_support::harness::{Running, code, stderr};
use sunset_test_support::service_env;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_sunset-backfill");

/// Accounts with sparse ids (multiples of 7), some already typed right, some typed wrong, some
/// soft-deleted (out of scope), and a trigger that counts every update of `type` per row.
pub(crate) const ACCOUNTS: &str = "
CREATE TABLE accounts (id bigint PRIMARY KEY, legacy_kind text, type text, deleted_at timestamptz);
INSERT INTO accounts
SELECT g * 7, (ARRAY['personal', 'business', 'partner'])[1 + g % 3],
       CASE WHEN g % 10 = 0 THEN (ARRAY['PersonalAccount', 'BusinessAccount', 'PartnerAccount'])[1 + g % 3]
            WHEN g % 13 = 0 THEN 'LegacyAccount' END,
       CASE WHEN g % 50 = 0 THEN now() END
FROM generate_series(1, ROWS) g;
CREATE TABLE type_updates (id bigint PRIMARY KEY, n int NOT NULL);
CREATE FUNCTION count_type_updates() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO type_updates VALUES (NEW.id, 1) ON CONFLICT (id) DO UPDATE SET n = type_updates.n + 1;
    RETURN NEW;
END $$;
CREATE TRIGGER count_type_updates AFTER UPDATE OF type ON accounts FOR EACH ROW EXECUTE FUNCTION count_type_updates();
CREATE TABLE snapshot AS SELECT id, type FROM accounts;
";

/// The plan most tests run: it replaces the rows typed wrong (`overwrite: true`), which
/// `rows_typed_otherwise_are_counted_by_preflight_and_kept_unless_overwrite` compares with the
/// default.
pub(crate) fn accounts_plan(extra: &str) -> String {
    format!(
        "backfill: accounts-sti
table: public.accounts
key: id
discriminator: type
from: legacy_kind
map: {{ personal: PersonalAccount, business: BusinessAccount, partner: PartnerAccount }}
unmapped: fail
where: \"deleted_at IS NULL\"
coverage: trigger
overwrite: true
{extra}"
    )
}

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

    /// Starts `run PLAN` and SIGKILLs it twenty times, each kill only after that process
    /// committed at least one batch of `run` (journal rows counted, not time waited); every other
    /// kill lands while one of its sessions is inside a write transaction (a batch in flight,
    /// seen in `pg_stat_activity`), and at least one such kill is required. A run that ends on
    /// its own (at most twice) must exit 0. Returns the seed of the random delays.
    pub(crate) fn run_and_kill_twenty_times(&self, plan: &str, run: &str) -> u64 {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos() as u64
            | 1;
        let mut jitter = seed;
        let (mut kills, mut finished_early, mut in_flight) = (0, 0, 0);
        while kills < 20 {
            let committed = self.committed_batches(run);
            let since = self.text("SELECT clock_timestamp()::text").unwrap();
            let mut child = self.spawn(&["run", plan]);
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            let mut ended = None;
            while self.committed_batches(run) <= committed {
                if let Some(status) = child.try_wait().unwrap() {
                    ended = Some(status);
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "no batch committed within 60 s (seed {seed}): {}",
                    child.stderr_text()
                );
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            jitter ^= jitter << 13;
            jitter ^= jitter >> 7;
            jitter ^= jitter << 17;
            let mid_batch = kills % 2 == 0;
            if ended.is_none() {
                if mid_batch {
                    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
                    while !self.batch_in_flight(&since) && std::time::Instant::now() < until {
                        if child.try_wait().unwrap().is_some() {
                            break;
                        }
                    }
                } else {
                    std::thread::sleep(std::time::Duration::from_millis(jitter % 30));
                }
            }
            if let Some(status) = ended.or_else(|| child.try_wait().unwrap()) {
                finished_early += 1;
                assert!(
                    status.success(),
                    "a run that ended on its own failed ({status}, seed {seed}): {}",
                    child.stderr_text()
                );
                assert!(
                    finished_early < 3,
                    "the run ended before 20 kills (seed {seed}); make it slower"
                );
                continue;
            }
            if self.batch_in_flight(&since) {
                in_flight += 1;
            }
            child.kill().unwrap();
            child.wait().unwrap();
            kills += 1;
        }
        assert!(
            in_flight > 0,
            "no kill landed while a batch was in flight (seed {seed})"
        );
        seed
    }

    /// Batches of `run` committed so far (each commits one journal row with its changes).
    fn committed_batches(&self, run: &str) -> i64 {
        if self
            .text("SELECT to_regclass('sunset.backfill_undo')::text")
            .is_none()
        {
            return 0;
        }
        self.int(&format!(
            "SELECT count(*) FROM sunset.backfill_undo WHERE run = '{run}'"
        ))
    }

    /// A backfill session inside a transaction that has written (it holds a transaction id).
    /// Only sessions that began at `since` or later count: a killed run's backend can outlive
    /// its process for a moment.
    fn batch_in_flight(&self, since: &str) -> bool {
        self.int(&format!(
            "SELECT count(*) FROM pg_stat_activity
             WHERE application_name = 'sunset-backfill' AND backend_xid IS NOT NULL
               AND backend_start >= '{since}'::timestamptz"
        )) > 0
    }
}
