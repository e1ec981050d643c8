//! The statements of a backfill. Each batch is ONE statement: it reads the next keyset chunk,
//! computes the new discriminator, updates only rows whose value differs (`IS DISTINCT FROM`)
//! and still holds the value it read, journals those old values in one undo row, and returns
//! where the chunk ended. The caller commits it in one transaction with the range's progress row.
//!
//! Exact old values without locking the chunk first: under READ COMMITTED, PostgreSQL re-checks
//! the UPDATE's condition on the latest version of a row another transaction changed meanwhile.
//! The condition includes "the discriminator still equals the value read", so a row is updated
//! (and journalled) only if the journalled value is exactly the one overwritten; a concurrent
//! application write wins and is left alone. Locking the chunk first cost about 40% per batch.

use sunset_plan::format::Unmapped;

use crate::catalog::Backfill;
use crate::sql::{Params, ident};

/// A key as it travels in checkpoints, ranges and the journal: each column's text form.
pub type KeyText = Vec<String>;

/// The CASE expression mapping the legacy column to the type name (NULL: leave the row alone).
pub(crate) fn type_expression(backfill: &Backfill, params: &mut Params, alias: &str) -> String {
    let mut case = format!("CASE {}::text", backfill.from.on(alias));
    for (legacy, type_name) in &backfill.map {
        let when = params.bind(Some(legacy), "text");
        let then = params.bind(Some(type_name), "text");
        case.push_str(&format!(" WHEN {when} THEN {then}"));
    }
    match &backfill.unmapped {
        Unmapped::Default(type_name) => {
            let default = params.bind(Some(type_name.as_str()), "text");
            case.push_str(&format!(" ELSE {default}"));
        }
        Unmapped::Fail | Unmapped::Skip => case.push_str(" ELSE NULL"),
    }
    format!("CAST({case} END AS {})", backfill.discriminator.sql_type)
}

/// `(alias.k1, alias.k2) > (lower)` and `<= (upper)`, with the bounds bound as typed parameters.
pub(crate) fn range_condition(
    backfill: &Backfill,
    params: &mut Params,
    alias: &str,
    lower: Option<&[String]>,
    upper: &[String],
) -> String {
    let bound = |params: &mut Params, values: &[String]| -> String {
        let parts: Vec<String> = backfill
            .key
            .iter()
            .zip(values)
            .map(|(column, value)| params.bind(Some(value), &column.sql_type))
            .collect();
        format!("({})", parts.join(", "))
    };
    let tuple = backfill.key_tuple(alias);
    let mut condition = format!("{tuple} <= {}", bound(params, upper));
    if let Some(lower) = lower {
        condition = format!("{tuple} > {} AND {condition}", bound(params, lower));
    }
    if let Some(filter) = &backfill.filter {
        condition.push_str(&format!(" AND ({filter})"));
    }
    condition
}

/// The batch statement. Returns rows: (rows in chunk, rows changed, last key of the chunk).
pub(crate) fn batch(
    backfill: &Backfill,
    lower: Option<&[String]>,
    upper: &[String],
    limit: u64,
) -> (String, Params) {
    let mut params = Params::default();
    let table = backfill.table.quoted();
    let disc = ident(&backfill.discriminator.name);
    let aliases: Vec<String> = (0..backfill.key.len()).map(|i| format!("k{i}")).collect();
    let chunk_keys: String = backfill
        .key
        .iter()
        .zip(&aliases)
        .map(|(c, a)| format!("{} AS {a}", c.on("t")))
        .collect::<Vec<_>>()
        .join(", ");
    let new_value = type_expression(backfill, &mut params, "t");
    let condition = range_condition(backfill, &mut params, "t", lower, upper);
    let limit = params.bind(Some(&limit.to_string()), "bigint");
    let run = params.bind(Some(&backfill.run), "text");
    let b_tuple = format!(
        "({})",
        aliases
            .iter()
            .map(|a| format!("b.{a}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let t_texts = backfill.key_texts("t");
    let c_array = aliases
        .iter()
        .map(|a| format!("c.{a}"))
        .collect::<Vec<_>>()
        .join(", ");
    let b_texts = aliases
        .iter()
        .map(|a| format!("b.{a}::text"))
        .collect::<Vec<_>>()
        .join(", ");
    let b_order = aliases
        .iter()
        .map(|a| format!("b.{a} DESC"))
        .collect::<Vec<_>>()
        .join(", ");
    let returning: String = t_texts
        .split(", ")
        .zip(&aliases)
        .map(|(t, a)| format!("{t} AS {a}"))
        .collect::<Vec<_>>()
        .join(", ");
    let key_rows = format!("ARRAY[{c_array}]");
    let sql = format!(
        "WITH batch AS (
            SELECT {chunk_keys}, t.{disc}::text AS old_value, {new_value} AS new_value
            FROM {table} t
            WHERE {condition}
            ORDER BY {key_order}
            LIMIT {limit}
        ), changed AS (
            UPDATE {table} t SET {disc} = b.new_value
            FROM batch b
            WHERE {t_tuple} = {b_tuple} AND b.new_value IS NOT NULL AND t.{disc} IS DISTINCT FROM b.new_value
              AND t.{disc}::text IS NOT DISTINCT FROM b.old_value
            RETURNING {returning}, b.old_value
        ), journal AS (
            INSERT INTO sunset.backfill_undo (run, keys, old_values)
            SELECT {run}, array_agg({key_rows}), array_agg(c.old_value) FROM changed c HAVING count(*) > 0
        )
        SELECT (SELECT count(*) FROM batch), (SELECT count(*) FROM changed),
               (SELECT jsonb_build_array({b_texts}) FROM batch b ORDER BY {b_order} LIMIT 1)",
        key_order = backfill.key_list("t"),
        t_tuple = backfill.key_tuple("t"),
    );
    (sql, params)
}

/// One rollback step: replays the newest undo row (one original batch) and deletes it, in one
/// statement (so one transaction). Newest first, so a key journalled twice ends at its oldest
/// value. Returns (entries replayed, rows restored).
pub(crate) fn rollback_batch(backfill: &Backfill) -> (String, Params) {
    let mut params = Params::default();
    let run = params.bind(Some(&backfill.run), "text");
    let table = backfill.table.quoted();
    let disc = ident(&backfill.discriminator.name);
    let entry_keys: Vec<String> = backfill
        .key
        .iter()
        .enumerate()
        .map(|(n, c)| format!("(u.keys[i][{}])::{}", n + 1, c.sql_type))
        .collect();
    let entry_aliases: Vec<String> = (0..backfill.key.len()).map(|n| format!("e.k{n}")).collect();
    let entry_select: Vec<String> = entry_keys
        .iter()
        .enumerate()
        .map(|(n, k)| format!("{k} AS k{n}"))
        .collect();
    let sql = format!(
        "WITH u AS (
            DELETE FROM sunset.backfill_undo
            WHERE (run, batch) = (SELECT run, batch FROM sunset.backfill_undo WHERE run = {run} ORDER BY batch DESC LIMIT 1)
            RETURNING keys, old_values
        ), e AS (
            SELECT {entry_select}, u.old_values[i] AS old_value FROM u, generate_subscripts(u.old_values, 1) AS i
        ), restored AS (
            UPDATE {table} t SET {disc} = CAST(e.old_value AS {disc_type})
            FROM e WHERE {t_tuple} = ({entry_aliases})
            RETURNING 1
        )
        SELECT (SELECT count(*) FROM e), (SELECT count(*) FROM restored)",
        disc_type = backfill.discriminator.sql_type,
        t_tuple = backfill.key_tuple("t"),
        entry_select = entry_select.join(", "),
        entry_aliases = entry_aliases.join(", "),
    );
    (sql, params)
}
