//! The statements of a backfill. Each batch is ONE statement: it locks the next keyset chunk,
//! computes the new discriminator, updates only rows whose value differs (`IS DISTINCT FROM`),
//! journals their old values (`ON CONFLICT DO NOTHING`), and returns where the chunk ended.
//! The caller commits it in one transaction with the range's progress row.

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
    let sql = format!(
        "WITH batch AS (
            SELECT {chunk_keys}, t.{disc}::text AS old_value, {new_value} AS new_value
            FROM {table} t
            WHERE {condition}
            ORDER BY {key_order}
            LIMIT {limit}
            FOR NO KEY UPDATE OF t
        ), changed AS (
            UPDATE {table} t SET {disc} = b.new_value
            FROM batch b
            WHERE {t_tuple} = {b_tuple} AND b.new_value IS NOT NULL AND t.{disc} IS DISTINCT FROM b.new_value
            RETURNING {returning}, b.old_value
        ), journal AS (
            INSERT INTO sunset.backfill_journal (run, key, old_value)
            SELECT {run}, jsonb_build_array({c_array}), c.old_value FROM changed c
            ON CONFLICT (run, key) DO NOTHING
        )
        SELECT (SELECT count(*) FROM batch), (SELECT count(*) FROM changed),
               (SELECT jsonb_build_array({b_texts}) FROM batch b ORDER BY {b_order} LIMIT 1)",
        key_order = backfill.key_list("t"),
        t_tuple = backfill.key_tuple("t"),
    );
    (sql, params)
}

/// One rollback batch: restores the oldest journalled values and deletes their journal entries,
/// in one statement (so one transaction). Returns (entries replayed, rows restored).
pub(crate) fn rollback_batch(backfill: &Backfill, limit: u64) -> (String, Params) {
    let mut params = Params::default();
    let run = params.bind(Some(&backfill.run), "text");
    let limit = params.bind(Some(&limit.to_string()), "bigint");
    let table = backfill.table.quoted();
    let disc = ident(&backfill.discriminator.name);
    let journal_key: Vec<String> = backfill
        .key
        .iter()
        .enumerate()
        .map(|(i, c)| format!("(j.key->>{i})::{}", c.sql_type))
        .collect();
    let sql = format!(
        "WITH j AS (
            SELECT key, old_value FROM sunset.backfill_journal
            WHERE run = {run} ORDER BY seq LIMIT {limit} FOR UPDATE
        ), restored AS (
            UPDATE {table} t SET {disc} = CAST(j.old_value AS {disc_type})
            FROM j WHERE {t_tuple} = ({journal_key})
            RETURNING 1
        ), deleted AS (
            DELETE FROM sunset.backfill_journal d USING j
            WHERE d.run = {run} AND d.key = j.key
            RETURNING 1
        )
        SELECT (SELECT count(*) FROM deleted), (SELECT count(*) FROM restored)",
        disc_type = backfill.discriminator.sql_type,
        t_tuple = backfill.key_tuple("t"),
        journal_key = journal_key.join(", "),
    );
    (sql, params)
}
