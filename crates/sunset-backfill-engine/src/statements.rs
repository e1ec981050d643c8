//! The statements of a backfill. Each batch is ONE statement: it reads the next keyset chunk,
//! changes what it must, journals the undo information in one undo row, and returns where the
//! chunk ended. The caller commits it in one transaction with the range's progress row.
//!
//! In place, a batch computes the new discriminator and updates only rows whose value differs
//! (`IS DISTINCT FROM`) and still holds the value it read; the journal keeps the old values.
//! Copy, a batch inserts a source chunk with `ON CONFLICT (key) DO NOTHING`; the journal keeps
//! the inserted keys (rollback deletes them).
//!
//! Exact old values without locking the chunk first: under READ COMMITTED, PostgreSQL re-checks
//! the UPDATE's condition on the latest version of a row another transaction changed meanwhile.
//! The condition includes "the discriminator still equals the value read", so a row is updated
//! (and journalled) only if the journalled value is exactly the one overwritten; a concurrent
//! application write wins and is left alone. Locking the chunk first cost about 40% per batch.

use sunset_plan::format::Unmapped;

use crate::catalog::{Backfill, Column, InPlace, Mode, Source, Walk};
use crate::sql::{Params, ident};

/// A key as it travels in checkpoints, ranges and the journal: each column's text form.
pub type KeyText = Vec<String>;

/// The CASE expression mapping the legacy column to the type name (NULL: leave the row alone).
pub(crate) fn type_expression(
    in_place: &InPlace,
    discriminator: &Column,
    params: &mut Params,
    alias: &str,
) -> String {
    let mut case = format!("CASE {}::text", in_place.from.on(alias));
    for (legacy, type_name) in &in_place.map {
        let when = params.bind(Some(legacy), "text");
        let then = params.bind(Some(type_name), "text");
        case.push_str(&format!(" WHEN {when} THEN {then}"));
    }
    match &in_place.unmapped {
        Unmapped::Default(type_name) => {
            let default = params.bind(Some(type_name.as_str()), "text");
            case.push_str(&format!(" ELSE {default}"));
        }
        Unmapped::Fail | Unmapped::Skip => case.push_str(" ELSE NULL"),
    }
    format!("CAST({case} END AS {})", discriminator.sql_type)
}

/// Where a chunk starts (exclusive).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Lower<'a> {
    /// At the start of the key space.
    Open,
    /// After this key.
    Given(&'a [String]),
    /// After the key the leased range row records (`done_upto`, else its `lo`), read by the
    /// statement itself: statements can then be pipelined, each continuing where the one before
    /// it committed.
    Lease,
}

/// `(alias.k1, alias.k2) > (lower)` and `<= (upper)`, with the bounds bound as typed parameters,
/// and the walk's filter.
pub(crate) fn range_condition(
    walk: &Walk,
    params: &mut Params,
    alias: &str,
    lower: Lower<'_>,
    upper: &[String],
) -> String {
    let bound = |params: &mut Params, values: &[String]| -> String {
        let parts: Vec<String> = walk
            .key
            .iter()
            .zip(values)
            .map(|(column, value)| params.bind(Some(value), &column.sql_type))
            .collect();
        format!("({})", parts.join(", "))
    };
    let tuple = walk.key_tuple(alias);
    let mut condition = format!("{tuple} <= {}", bound(params, upper));
    match lower {
        Lower::Open => {}
        Lower::Given(lower) => {
            condition = format!("{tuple} > {} AND {condition}", bound(params, lower));
        }
        Lower::Lease => {
            // One scalar subquery per column: an index condition, unlike a row subquery.
            let parts: Vec<String> = walk
                .key
                .iter()
                .enumerate()
                .map(|(i, c)| format!("(SELECT (l.lower->>{i})::{} FROM lease l)", c.sql_type))
                .collect();
            condition = format!("{tuple} > ({}) AND {condition}", parts.join(", "));
        }
    }
    if let Some(filter) = &walk.filter {
        condition.push_str(&format!(" AND ({filter})"));
    }
    condition
}

/// The pieces every batch shares: the chunk's key columns under aliases `k0..`, and how to
/// return the chunk's last key.
struct Chunk {
    aliases: Vec<String>,
    /// `alias.col AS k0, ...` for the chunk's SELECT.
    select_keys: String,
    /// A query of one row over `batch`: `seen` (rows in the chunk) and `last` (its last key as
    /// a JSON array of texts, NULL when empty).
    summary: String,
}

/// Key types whose `max()` aggregate orders like the keyset walk does.
const MAX_ORDERED_TYPES: &[&str] = &[
    "smallint",
    "integer",
    "bigint",
    "numeric",
    "text",
    "date",
    "timestamp without time zone",
    "timestamp with time zone",
];

impl Chunk {
    fn new(walk: &Walk, alias: &str) -> Chunk {
        let aliases: Vec<String> = (0..walk.key.len()).map(|i| format!("k{i}")).collect();
        let select_keys = walk
            .key
            .iter()
            .zip(&aliases)
            .map(|(c, a)| format!("{} AS {a}", c.on(alias)))
            .collect::<Vec<_>>()
            .join(", ");
        // A one-column key of an ordered type: its count and max() in one pass. Sorting a
        // 1,000-row chunk for its last key cost 15% of a batch.
        let summary = match walk.key.as_slice() {
            [column] if MAX_ORDERED_TYPES.contains(&column.sql_type.as_str()) => {
                "SELECT count(*) AS seen, CASE WHEN count(*) > 0 THEN jsonb_build_array(max(b.k0)::text) END AS last FROM batch b"
                    .to_owned()
            }
            _ => {
                let texts = join(&aliases, |a| format!("b.{a}::text"));
                let order = join(&aliases, |a| format!("b.{a} DESC"));
                format!(
                    "SELECT (SELECT count(*) FROM batch) AS seen,
                            (SELECT jsonb_build_array({texts}) FROM batch b ORDER BY {order} LIMIT 1) AS last"
                )
            }
        };
        Chunk {
            select_keys,
            summary,
            aliases,
        }
    }
}

fn join(items: &[String], each: impl Fn(&str) -> String) -> String {
    items.iter().map(|i| each(i)).collect::<Vec<_>>().join(", ")
}

/// A chunk's CTEs: `batch` (the chunk read), the CTE of the rows it changed, and `journal`.
struct Parts {
    ctes: String,
    /// The CTE whose rows were changed (updated or inserted).
    changed: &'static str,
    /// `seen` and `last` of the chunk (see [`Chunk`]).
    summary: String,
    /// The placeholder of the chunk size.
    limit: String,
}

/// What a chunk of walk `walk_no` is: the walk's range, the chunk size, and an extra condition
/// that gates the read (used by [`leased_batch`]).
struct ChunkSpec<'a> {
    walk_no: usize,
    lower: Lower<'a>,
    upper: &'a [String],
    limit: u64,
    gate: &'a str,
}

fn parts(backfill: &Backfill, spec: &ChunkSpec<'_>, params: &mut Params) -> Parts {
    match &backfill.mode {
        Mode::InPlace(in_place) => update_batch(backfill, in_place, spec, params),
        Mode::Copy(sources) => copy_batch(backfill, &sources[spec.walk_no], spec, params),
    }
}

/// One chunk of walk `walk_no`, alone (preflight explains and times it). Returns one row: (rows
/// in chunk, rows changed, last key of the chunk).
pub(crate) fn batch(
    backfill: &Backfill,
    walk_no: usize,
    lower: Option<&[String]>,
    upper: &[String],
    limit: u64,
) -> (String, Params) {
    let mut params = Params::default();
    let spec = ChunkSpec {
        walk_no,
        lower: lower.map_or(Lower::Open, Lower::Given),
        upper,
        limit,
        gate: "",
    };
    let Parts {
        ctes,
        changed,
        summary,
        ..
    } = parts(backfill, &spec, &mut params);
    let sql = format!(
        "WITH {ctes}
        SELECT c.seen, (SELECT count(*) FROM {changed}), c.last FROM ({summary}) c"
    );
    (sql, params)
}

/// The chunk a worker runs: ONE statement, so one transaction in autocommit, with one round trip.
/// It reads the control row (nothing happens unless the run is `running`) and the leased range
/// row (nothing happens once the lease is lost or the range is done), changes and journals the
/// chunk after the range's recorded progress, and records the new progress. Returns one row:
/// (running, lease held, rows in chunk, rows changed, last key of the chunk, progress recorded).
///
/// No row lock on the range row: a lease is only taken over after it expired or its session
/// died, and a chunk changed twice changes nothing the second time (the `IS DISTINCT FROM` and
/// "still the value read" guards, `ON CONFLICT DO NOTHING`).
pub(crate) fn leased_batch(
    backfill: &Backfill,
    range_no: i32,
    walk_no: usize,
    lower: Lower<'_>,
    upper: &[String],
    limit: u64,
) -> (String, Params) {
    let mut params = Params::default();
    let run = params.bind(Some(&backfill.run), "text");
    let range = params.bind(Some(&range_no.to_string()), "integer");
    let gate = " AND EXISTS (SELECT 1 FROM control) AND EXISTS (SELECT 1 FROM lease)";
    let spec = ChunkSpec {
        walk_no,
        lower,
        upper,
        limit,
        gate,
    };
    let Parts {
        ctes,
        summary,
        limit,
        ..
    } = parts(backfill, &spec, &mut params);
    let sql = format!(
        "WITH control AS (
            SELECT 1 FROM sunset.backfill_runs WHERE run = {run} AND state = 'running'
        ), lease AS (
            SELECT COALESCE(done_upto, lo) AS lower FROM sunset.backfill_ranges
            WHERE run = {run} AND range_no = {range} AND leased_backend = pg_backend_pid() AND state = 'leased'
        ), {ctes}, summary AS (
            SELECT c.seen, COALESCE((SELECT rows FROM journal), 0)::bigint AS changed, c.last FROM ({summary}) c
        ), progress AS (
            UPDATE sunset.backfill_ranges r
            SET done_upto = COALESCE(s.last, r.done_upto),
                rows_seen = r.rows_seen + s.seen,
                rows_changed = r.rows_changed + s.changed,
                lease_until = now() + interval '60 seconds',
                state = CASE WHEN s.seen < {limit} THEN 'done' ELSE r.state END
            FROM summary s
            WHERE r.run = {run} AND r.range_no = {range} AND r.leased_backend = pg_backend_pid()
              AND r.state = 'leased'{gate}
            RETURNING 1
        )
        SELECT (SELECT count(*) FROM control), (SELECT count(*) FROM lease), s.seen, s.changed, s.last,
               (SELECT count(*) FROM progress)
        FROM summary s"
    );
    (sql, params)
}

/// In-place: set the discriminator of one chunk of the STI table.
fn update_batch(
    backfill: &Backfill,
    in_place: &InPlace,
    spec: &ChunkSpec<'_>,
    params: &mut Params,
) -> Parts {
    let target = backfill.target();
    let table = backfill.table.quoted();
    let disc = ident(&backfill.discriminator.name);
    let chunk = Chunk::new(&target, "t");
    let new_value = type_expression(in_place, &backfill.discriminator, params, "t");
    let condition = range_condition(&target, params, "t", spec.lower, spec.upper);
    let limit = params.bind(Some(&spec.limit.to_string()), "bigint");
    let run = params.bind(Some(&backfill.run), "text");
    let b_tuple = format!("({})", join(&chunk.aliases, |a| format!("b.{a}")));
    let returning: String = target
        .key
        .iter()
        .zip(&chunk.aliases)
        .map(|(c, a)| format!("{}::text AS {a}", c.on("t")))
        .collect::<Vec<_>>()
        .join(", ");
    let key_rows = format!("ARRAY[{}]", join(&chunk.aliases, |a| format!("c.{a}")));
    // The chunk's key range, repeated on the UPDATE: the planner then reads the chunk's rows with
    // one index range scan merged with the batch, instead of one index descent per row (about
    // 10% of a batch).
    let chunk_end = match target.key.as_slice() {
        [column] if MAX_ORDERED_TYPES.contains(&column.sql_type.as_str()) => {
            "(SELECT max(e.k0) FROM batch e)".to_owned()
        }
        _ => {
            let order = join(&chunk.aliases, |a| format!("e.{a} DESC"));
            format!(
                "({})",
                join(&chunk.aliases, |a| format!(
                    "(SELECT e.{a} FROM batch e ORDER BY {order} LIMIT 1)"
                ))
            )
        }
    };
    let ctes = format!(
        "batch AS (
            SELECT {select_keys}, t.{disc}::text AS old_value, {new_value} AS new_value
            FROM {table} t
            WHERE {condition}{gate}
            ORDER BY {key_order}
            LIMIT {limit}
        ), changed AS (
            UPDATE {table} t SET {disc} = b.new_value
            FROM batch b
            WHERE {t_tuple} = {b_tuple} AND b.new_value IS NOT NULL AND t.{disc} IS DISTINCT FROM b.new_value
              AND t.{disc}::text IS NOT DISTINCT FROM b.old_value{keep_other_types}
              AND {condition} AND {t_tuple} <= {chunk_end}
            RETURNING {returning}, b.old_value
        ), journal AS (
            INSERT INTO sunset.backfill_undo (run, keys, old_values)
            SELECT {run}, array_agg({key_rows}), array_agg(c.old_value) FROM changed c HAVING count(*) > 0
            RETURNING cardinality(old_values) AS rows
        )",
        select_keys = chunk.select_keys,
        gate = spec.gate,
        key_order = target.key_list("t"),
        t_tuple = target.key_tuple("t"),
        // Without `overwrite`, a row that already has a type keeps it.
        keep_other_types = if in_place.overwrite {
            ""
        } else {
            " AND b.old_value IS NULL"
        },
    );
    Parts {
        ctes,
        changed: "changed",
        summary: chunk.summary,
        limit,
    }
}

/// Copy: insert one chunk of a legacy source into the STI table, typed, skipping keys already
/// there. The chunk's source rows are key-share locked until commit, so a concurrent DELETE of
/// one waits and then its coverage trigger sees (and removes) the copied row.
fn copy_batch(
    backfill: &Backfill,
    source: &Source,
    spec: &ChunkSpec<'_>,
    params: &mut Params,
) -> Parts {
    let chunk = Chunk::new(&source.walk, "s");
    let condition = range_condition(&source.walk, params, "s", spec.lower, spec.upper);
    let limit = params.bind(Some(&spec.limit.to_string()), "bigint");
    let run = params.bind(Some(&backfill.run), "text");
    let type_name = params.bind(Some(&source.type_name), &backfill.discriminator.sql_type);
    let values: Vec<String> = (0..source.columns.len()).map(|i| format!("c{i}")).collect();
    let select_values = source
        .columns
        .iter()
        .zip(&values)
        .map(|((_, sql), alias)| format!("{sql} AS {alias}"))
        .collect::<Vec<_>>()
        .join(", ");
    let target = backfill.target();
    let inserted_keys: Vec<String> = (0..target.key.len()).map(|i| format!("i{i}")).collect();
    let returning = target
        .key
        .iter()
        .zip(&inserted_keys)
        .map(|(c, a)| format!("{}::text AS {a}", c.on("t")))
        .collect::<Vec<_>>()
        .join(", ");
    let ctes = format!(
        "batch AS (
            SELECT {select_keys}, {select_values}
            FROM {source_table} s
            WHERE {condition}{gate}
            ORDER BY {source_order}
            LIMIT {limit}
            FOR KEY SHARE OF s
        ), inserted AS (
            INSERT INTO {table} AS t ({target_columns}, {disc}) OVERRIDING SYSTEM VALUE
            SELECT {batch_values}, {type_name} FROM batch b
            ON CONFLICT ({target_key}) DO NOTHING
            RETURNING {returning}
        ), journal AS (
            INSERT INTO sunset.backfill_undo (run, keys, old_values)
            SELECT {run}, array_agg(ARRAY[{inserted_row}]), array_agg(NULL::text) FROM inserted c HAVING count(*) > 0
            RETURNING cardinality(old_values) AS rows
        )",
        select_keys = chunk.select_keys,
        gate = spec.gate,
        source_table = source.walk.table.quoted(),
        source_order = source.walk.key_list("s"),
        table = backfill.table.quoted(),
        target_columns = source
            .columns
            .iter()
            .map(|(c, _)| ident(&c.name))
            .collect::<Vec<_>>()
            .join(", "),
        disc = ident(&backfill.discriminator.name),
        batch_values = join(&values, |v| format!("b.{v}")),
        target_key = target.key.iter().map(|c| ident(&c.name)).collect::<Vec<_>>().join(", "),
        inserted_row = join(&inserted_keys, |k| format!("c.{k}")),
    );
    Parts {
        ctes,
        changed: "inserted",
        summary: chunk.summary,
        limit,
    }
}

/// One rollback step: replays the newest undo row (one original batch) and deletes it, in one
/// statement (so one transaction). In-place: newest first, so a key journalled twice ends at its
/// oldest value. Copy: the rows the run inserted are deleted. Returns (entries replayed, rows
/// restored or removed).
pub(crate) fn rollback_batch(backfill: &Backfill) -> (String, Params) {
    let mut params = Params::default();
    let run = params.bind(Some(&backfill.run), "text");
    let table = backfill.table.quoted();
    let entry_select = backfill
        .key
        .iter()
        .enumerate()
        .map(|(n, c)| format!("(u.keys[i][{}])::{} AS k{n}", n + 1, c.sql_type))
        .collect::<Vec<_>>()
        .join(", ");
    let entry_tuple = format!(
        "({})",
        (0..backfill.key.len())
            .map(|n| format!("e.k{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let t_tuple = backfill.target().key_tuple("t");
    let undo = match &backfill.mode {
        Mode::InPlace(_) => format!(
            "UPDATE {table} t SET {disc} = CAST(e.old_value AS {disc_type})
             FROM e WHERE {t_tuple} = {entry_tuple}
             RETURNING 1",
            disc = ident(&backfill.discriminator.name),
            disc_type = backfill.discriminator.sql_type,
        ),
        Mode::Copy(_) => {
            format!("DELETE FROM {table} t USING e WHERE {t_tuple} = {entry_tuple} RETURNING 1")
        }
    };
    let sql = format!(
        "WITH u AS (
            DELETE FROM sunset.backfill_undo
            WHERE (run, batch) = (SELECT run, batch FROM sunset.backfill_undo WHERE run = {run} ORDER BY batch DESC LIMIT 1)
            RETURNING keys, old_values
        ), e AS (
            SELECT {entry_select}, u.old_values[i] AS old_value FROM u, generate_subscripts(u.old_values, 1) AS i
        ), undone AS (
            {undo}
        )
        SELECT (SELECT count(*) FROM e), (SELECT count(*) FROM undone)"
    );
    (sql, params)
}
