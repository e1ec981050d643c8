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
-- The undo journal: one row per committed batch (one insert and one index entry per batch, not
-- per row: per-row journalling made a batch about 2x slower). `keys` is two-dimensional: one
-- row of key columns (as text) per changed row, aligned with `old_values`.
CREATE TABLE IF NOT EXISTS sunset.backfill_undo (
    run        text NOT NULL,
    batch      bigserial,
    keys       text[] NOT NULL,
    old_values text[] NOT NULL,
    PRIMARY KEY (run, batch)
);
-- One row per journalled change, for people and tests: `key` is the key columns as a JSON array.
CREATE OR REPLACE VIEW sunset.backfill_journal AS
    SELECT u.run, u.batch,
           (SELECT jsonb_agg(k ORDER BY o) FROM unnest(u.keys[i:i][:]) WITH ORDINALITY AS x(k, o)) AS key,
           u.old_values[i] AS old_value
    FROM sunset.backfill_undo u, generate_subscripts(u.old_values, 1) AS i;
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
