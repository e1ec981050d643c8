//! The PostgreSQL store: checkpoints as rows of `sunset.checkpoints`, written through the caller's
//! client so they commit or roll back with the caller's transaction. That is what makes a backfill
//! exactly-once: the batch and the record of having done it are one atomic unit.

use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use tokio_postgres::{Client, GenericClient};

use crate::format::CheckpointRecord;
use crate::holder::Holder;
use crate::{Checkpoint, Error, check_resume};

/// Serializes concurrent first-time schema creation (`CREATE ... IF NOT EXISTS` races on the
/// catalog's unique indexes when two runners start at once).
const SCHEMA_LOCK_KEY: i64 = 0x5375_6e73_6574_0001;

const SCHEMA: &str = "
CREATE SCHEMA IF NOT EXISTS sunset;
CREATE TABLE IF NOT EXISTS sunset.checkpoints (
    run            text PRIMARY KEY,
    format_version integer NOT NULL,
    fingerprint    text NOT NULL,
    state          jsonb NOT NULL,
    written_at     timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS sunset.run_locks (
    run         text PRIMARY KEY,
    pid         integer NOT NULL,
    host        text NOT NULL,
    started_at  timestamptz NOT NULL,
    backend_pid integer NOT NULL
);
COMMENT ON SCHEMA sunset IS 'Progress, locks and undo journals of sunset runs';
";

/// The checkpoint row of one run.
#[derive(Debug, Clone)]
pub struct PgStore {
    run: String,
}

impl PgStore {
    /// Creates the `sunset` schema and tables if needed, then returns the store of `run`.
    pub async fn open(client: &mut Client, run: &str) -> Result<PgStore, Error> {
        ensure_schema(client).await?;
        Ok(PgStore {
            run: run.to_owned(),
        })
    }

    /// The store of `run` when the caller knows the schema exists (it opened a store before).
    pub fn open_existing(run: &str) -> PgStore {
        PgStore {
            run: run.to_owned(),
        }
    }

    pub fn run(&self) -> &str {
        &self.run
    }

    /// Reads the committed checkpoint (or, inside a transaction, the transaction's own view).
    pub async fn load<S: DeserializeOwned>(
        &self,
        client: &impl GenericClient,
    ) -> Result<Option<Checkpoint<S>>, Error> {
        let row = client
            .query_opt(
                "SELECT format_version, fingerprint, state, written_at FROM sunset.checkpoints WHERE run = $1",
                &[&self.run],
            )
            .await
            .map_err(Error::pg("read checkpoint"))?;
        let Some(row) = row else { return Ok(None) };
        let version: i32 = row.get(0);
        let record = CheckpointRecord {
            version: u32::try_from(version).unwrap_or(u32::MAX),
            run: self.run.clone(),
            fingerprint: row.get(1),
            state: row.get(2),
            written_at: row.get(3),
        };
        record.into_checkpoint(&self.location()).map(Some)
    }

    /// Loads the checkpoint to resume from under the plan with `fingerprint`; see [`check_resume`].
    pub async fn resume<S: DeserializeOwned>(
        &self,
        client: &impl GenericClient,
        fingerprint: &str,
        restart: bool,
    ) -> Result<Option<Checkpoint<S>>, Error> {
        check_resume(self.load(client).await?, fingerprint, restart)
    }

    /// Writes the checkpoint through `client`: pass a `Transaction` to make it part of it.
    pub async fn save<S: Serialize>(
        &self,
        client: &impl GenericClient,
        fingerprint: &str,
        state: &S,
    ) -> Result<(), Error> {
        let record = CheckpointRecord::new(&self.run, fingerprint, state)?;
        let version = i32::try_from(record.version).unwrap_or(i32::MAX);
        client
            .execute(
                "INSERT INTO sunset.checkpoints (run, format_version, fingerprint, state, written_at)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (run) DO UPDATE SET format_version = EXCLUDED.format_version,
                     fingerprint = EXCLUDED.fingerprint, state = EXCLUDED.state, written_at = EXCLUDED.written_at",
                &[&record.run, &version, &record.fingerprint, &record.state, &record.written_at],
            )
            .await
            .map_err(Error::pg("write checkpoint"))?;
        Ok(())
    }

    /// Deletes the checkpoint (a finished or restarted run).
    pub async fn clear(&self, client: &impl GenericClient) -> Result<(), Error> {
        client
            .execute(
                "DELETE FROM sunset.checkpoints WHERE run = $1",
                &[&self.run],
            )
            .await
            .map_err(Error::pg("delete checkpoint"))?;
        Ok(())
    }

    fn location(&self) -> String {
        format!("sunset.checkpoints[{}]", self.run)
    }
}

async fn ensure_schema(client: &mut Client) -> Result<(), Error> {
    let transaction = client
        .transaction()
        .await
        .map_err(Error::pg("begin schema setup"))?;
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK_KEY])
        .await
        .map_err(Error::pg("lock schema setup"))?;
    transaction
        .batch_execute(SCHEMA)
        .await
        .map_err(Error::pg("create the sunset schema"))?;
    transaction
        .commit()
        .await
        .map_err(Error::pg("commit schema setup"))
}

/// A session advisory lock on a run, on a connection of its own. PostgreSQL releases it when the
/// connection ends, so a killed runner never leaves it behind, and runners on other machines see it.
#[derive(Debug)]
pub struct PgRunLock {
    /// The session that holds the lock; dropping it releases the lock.
    client: Client,
    run: String,
    key: i64,
}

impl PgRunLock {
    /// Takes the lock of `run` on a new connection to `database_url`, or fails naming the holder.
    pub async fn acquire(database_url: &str, run: &str) -> Result<PgRunLock, Error> {
        let mut client = sunset_pg::connect(database_url, "sunset run lock").await?;
        ensure_schema(&mut client).await?;
        let key = advisory_key(run);
        let acquired: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
            .await
            .map_err(Error::pg("try the run lock"))?
            .get(0);
        if !acquired {
            let row = client
                .query_opt(
                    "SELECT pid, host, started_at FROM sunset.run_locks WHERE run = $1",
                    &[&run],
                )
                .await
                .map_err(Error::pg("read the run lock holder"))?;
            return Err(match row {
                Some(row) => Error::Locked {
                    run: run.to_owned(),
                    holder: Holder {
                        pid: u32::try_from(row.get::<_, i32>(0)).unwrap_or_default(),
                        host: row.get(1),
                        started_at: row.get(2),
                    },
                },
                None => Error::LockedByUnknown {
                    run: run.to_owned(),
                },
            });
        }
        let holder = Holder::current();
        let pid = i32::try_from(holder.pid).unwrap_or(i32::MAX);
        client
            .execute(
                "INSERT INTO sunset.run_locks (run, pid, host, started_at, backend_pid)
                 VALUES ($1, $2, $3, $4, pg_backend_pid())
                 ON CONFLICT (run) DO UPDATE SET pid = EXCLUDED.pid, host = EXCLUDED.host,
                     started_at = EXCLUDED.started_at, backend_pid = EXCLUDED.backend_pid",
                &[&run, &pid, &holder.host, &holder.started_at],
            )
            .await
            .map_err(Error::pg("record the run lock holder"))?;
        Ok(PgRunLock {
            client,
            run: run.to_owned(),
            key,
        })
    }

    pub fn run(&self) -> &str {
        &self.run
    }

    /// Whether the lock is still held: its session answers within `timeout`. A session lock
    /// lives exactly as long as its session, so a dead connection means another runner may
    /// already have taken the run.
    pub async fn is_held(&self, timeout: std::time::Duration) -> bool {
        if self.client.is_closed() {
            return false;
        }
        matches!(
            tokio::time::timeout(timeout, self.client.simple_query("SELECT 1")).await,
            Ok(Ok(_))
        )
    }

    /// Releases the lock now instead of when the connection drops.
    pub async fn release(self) -> Result<(), Error> {
        self.client
            .execute(
                "DELETE FROM sunset.run_locks WHERE run = $1 AND backend_pid = pg_backend_pid()",
                &[&self.run],
            )
            .await
            .map_err(Error::pg("clear the run lock holder"))?;
        self.client
            .execute("SELECT pg_advisory_unlock($1)", &[&self.key])
            .await
            .map_err(Error::pg("release the run lock"))?;
        Ok(())
    }
}

/// A stable 64-bit advisory lock key for a run, namespaced so it can't collide with the
/// application's own advisory locks by accident.
fn advisory_key(run: &str) -> i64 {
    let digest = Sha256::digest(format!("sunset-run:{run}").as_bytes());
    i64::from_be_bytes(
        digest[..8]
            .try_into()
            .expect("a SHA-256 digest has 32 bytes"),
    )
}
