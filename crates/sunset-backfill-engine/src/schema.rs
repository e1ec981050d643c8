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
-- The verdict `validate` last recorded (rows it found wrong; 0 passed), for metrics and status.
-- Added only once: ALTER TABLE locks the table, and every command runs this setup.
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'sunset.backfill_runs'::regclass
                   AND attname = 'validation_failures' AND NOT attisdropped) THEN
        ALTER TABLE sunset.backfill_runs ADD COLUMN validated_at timestamptz,
                                         ADD COLUMN validation_failures bigint;
    END IF;
END $$;
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
-- Which table a range walks: 0 in place; the source's position in copy mode.
ALTER TABLE sunset.backfill_ranges ADD COLUMN IF NOT EXISTS walk integer NOT NULL DEFAULT 0;
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
-- A batch's arrays (about 4 kB for 1,000 keys once compressed) stay inline, compressed with
-- lz4 where the server has it: no TOAST table writes, and lz4 is several times faster than
-- pglz. Together about a tenth of a millisecond per 1,000-row batch. Altered only once: ALTER
-- TABLE locks the table, and every command runs this setup.
DO $$ BEGIN
    IF EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'sunset.backfill_undo'::regclass
               AND attname = 'keys' AND attstorage <> 'm') THEN
        ALTER TABLE sunset.backfill_undo SET (toast_tuple_target = 8160),
            ALTER COLUMN keys SET STORAGE MAIN, ALTER COLUMN old_values SET STORAGE MAIN;
        BEGIN
            ALTER TABLE sunset.backfill_undo ALTER COLUMN keys SET COMPRESSION lz4,
                                             ALTER COLUMN old_values SET COMPRESSION lz4;
        EXCEPTION WHEN feature_not_supported OR invalid_parameter_value OR syntax_error THEN NULL;
        END;
    END IF;
END $$;
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
