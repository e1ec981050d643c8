//! The backfill's own tables in the `sunset` schema: the control row any psql session can update
//! (`pause`, `resume`, `cancel`), the work table of key ranges workers lease, and the undo journal.

use tokio_postgres::Client;

use crate::error::Error;

/// Serializes first-time creation across concurrent runners (catalog unique-index races).
const SCHEMA_LOCK_KEY: i64 = 0x5375_6e73_6574_0002;

const SCHEMA: &str = "
CREATE SCHEMA IF NOT EXISTS sunset;
CREATE TABLE IF NOT EXISTS sunset.backfill_runs (
    run         text PRIMARY KEY,
    state       text NOT NULL DEFAULT 'running'
                CHECK (state IN ('running', 'paused', 'cancelling', 'done', 'rolled_back')),
    throttle    text,
    batch_size  integer,
    total_rows  bigint NOT NULL DEFAULT 0,
    started_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON COLUMN sunset.backfill_runs.state IS
    'set to paused, running or cancelling from any session to control a running backfill';
CREATE TABLE IF NOT EXISTS sunset.backfill_ranges (
    run            text NOT NULL,
    range_no       integer NOT NULL,
    lo             jsonb,
    hi             jsonb NOT NULL,
    done_upto      jsonb,
    state          text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'leased', 'done')),
    leased_by      text,
    leased_backend integer,
    lease_until    timestamptz,
    rows_seen      bigint NOT NULL DEFAULT 0,
    rows_changed   bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (run, range_no)
);
CREATE TABLE IF NOT EXISTS sunset.backfill_journal (
    run       text NOT NULL,
    key       jsonb NOT NULL,
    old_value text,
    seq       bigserial,
    PRIMARY KEY (run, key)
);
CREATE INDEX IF NOT EXISTS backfill_journal_by_seq ON sunset.backfill_journal (run, seq);
";

pub(crate) async fn ensure(client: &mut Client) -> Result<(), Error> {
    let transaction = client
        .transaction()
        .await
        .map_err(Error::db("beginning schema setup"))?;
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK_KEY])
        .await
        .map_err(Error::db("locking schema setup"))?;
    transaction
        .batch_execute(SCHEMA)
        .await
        .map_err(Error::db("creating the sunset backfill tables"))?;
    transaction
        .commit()
        .await
        .map_err(Error::db("committing schema setup"))
}
