//! `validate`: the run's result judged against its sources. In place, the types per legacy value
//! (and the rows a plan without `overwrite` kept); in copy mode, every source row's copy, its type
//! and every mapped column's value.

use sunset_plan::format::Unmapped;
use tokio_postgres::Client;

use crate::catalog::{Backfill, InPlace, Mode, Source};
use crate::error::Error;
use crate::preflight;
use crate::sql::Params;
use crate::statements::{self, KeyText};

/// One line of `validate`'s per-type report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TypeCount {
    pub legacy: Option<String>,
    pub found: Option<String>,
    /// What the map says the type should be (`None`: left alone by `unmapped: skip`/`fail`).
    pub expected: Option<String>,
    pub rows: i64,
}

/// One line of `validate`'s per-source report (copy mode).
#[derive(Debug, Clone, serde::Serialize)]
pub struct SourceCount {
    pub source: String,
    pub type_name: String,
    /// Source rows in scope.
    pub rows: i64,
    /// Of those, rows whose key the STI table lacks.
    pub missing: i64,
    /// Of those, rows whose key the STI table has with another type.
    pub mismatched: i64,
    /// Rows this run copied whose values now differ from what their source row maps to.
    pub differing: i64,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Validation {
    /// In place: rows per (legacy value, type found).
    pub counts: Vec<TypeCount>,
    /// Copy: one line per source.
    pub sources: Vec<SourceCount>,
    /// Rows whose type is not the one their legacy value (or source) says.
    pub mismatched: i64,
    /// Rows left without a type that should have one.
    pub untyped: i64,
    /// Copy: source rows with no row in the STI table.
    pub missing: i64,
    /// In place without `overwrite`: rows that have another type than the mapping's and keep
    /// it (the run leaves them alone); listed, not a failure.
    pub kept: i64,
    /// The first of those, in key order.
    pub kept_keys: Vec<KeyText>,
    /// Copy: rows the run copied whose mapped columns differ from their source row's values.
    pub differing: i64,
    /// The first of those: the STI key and the columns that differ.
    pub differing_rows: Vec<(KeyText, Vec<String>)>,
    /// The first offending keys (of the STI table), in key order.
    pub offending_keys: Vec<KeyText>,
}

impl Validation {
    pub fn passed(&self) -> bool {
        self.failures() == 0
    }

    /// Rows found wrong: mismatched, untyped, missing or differing.
    pub fn failures(&self) -> i64 {
        self.mismatched + self.untyped + self.missing + self.differing
    }
}

/// Records the verdict on the run's row (a run never started has none: nothing to record), so a
/// run's metrics and dashboards show the last validation beside its progress.
pub async fn record(client: &Client, run: &str, validation: &Validation) -> Result<(), Error> {
    client
        .execute(
            "UPDATE sunset.backfill_runs SET validated_at = now(), validation_failures = $2 WHERE run = $1",
            &[&run, &validation.failures()],
        )
        .await
        .map_err(Error::db("recording the validation on the run"))?;
    Ok(())
}

/// In place: per-type counts against the legacy column and no row left without a type. Copy:
/// every source row in scope has its row in the STI table with the source's type, and no STI row
/// is left without a type.
pub async fn validate(client: &Client, backfill: &Backfill) -> Result<Validation, Error> {
    match &backfill.mode {
        Mode::InPlace(in_place) => validate_in_place(client, backfill, in_place).await,
        Mode::Copy(sources) => validate_copy(client, backfill, sources).await,
    }
}

async fn validate_copy(
    client: &Client,
    backfill: &Backfill,
    sources: &[Source],
) -> Result<Validation, Error> {
    let mut validation = Validation::default();
    let table = backfill.table.quoted();
    let disc = backfill.discriminator.on("t");
    let t_tuple = backfill.target().key_tuple("t");
    let m_tuple = preflight::mapped_tuple(backfill);
    let m_texts = (0..backfill.key.len())
        .map(|i| format!("m.k{i}::text"))
        .collect::<Vec<_>>()
        .join(", ");
    for source in sources {
        let mut params = Params::default();
        let type_name = params.bind(Some(&source.type_name), "text");
        let mapped = preflight::mapped_keys(backfill, source);
        let joined = format!("({mapped}) m LEFT JOIN {table} t ON {t_tuple} = {m_tuple}");
        let row = client
            .query_one(
                &format!(
                    "SELECT count(*), count(*) FILTER (WHERE t.ctid IS NULL),
                            count(*) FILTER (WHERE t.ctid IS NOT NULL AND {disc}::text IS DISTINCT FROM {type_name})
                     FROM {joined}"
                ),
                &params.refs(),
            )
            .await
            .map_err(|e| crate::queries::plan_sql_error(&source.walk, e, "comparing a source with the STI table"))?;
        let (differing, differing_rows) = compare_copied_values(client, backfill, source).await?;
        validation.differing += differing;
        for row in differing_rows {
            if validation.differing_rows.len() < 10 {
                validation.differing_rows.push(row);
            }
        }
        let count = SourceCount {
            source: source.walk.table.display(),
            type_name: source.type_name.clone(),
            rows: row.get(0),
            missing: row.get(1),
            mismatched: row.get(2),
            differing,
        };
        validation.missing += count.missing;
        validation.mismatched += count.mismatched;
        if (count.missing > 0 || count.mismatched > 0) && validation.offending_keys.len() < 10 {
            let rows = client
                .query(
                    &format!(
                        "SELECT ARRAY[{m_texts}] FROM {joined}
                         WHERE t.ctid IS NULL OR {disc}::text IS DISTINCT FROM {type_name}
                         ORDER BY {m_tuple} LIMIT 10"
                    ),
                    &params.refs(),
                )
                .await
                .map_err(Error::db("finding offending keys"))?;
            validation
                .offending_keys
                .extend(rows.iter().map(|r| r.get::<_, KeyText>(0)));
            validation.offending_keys.truncate(10);
        }
        validation.sources.push(count);
    }
    validation.untyped = client
        .query_one(
            &format!("SELECT count(*) FROM {table} t WHERE {disc} IS NULL"),
            &[],
        )
        .await
        .map_err(Error::db("counting rows without a type"))?
        .get(0);
    Ok(validation)
}

/// Every mapped column of every row this run copied from `source` (its keys in the journal),
/// against the value the mapping computes from the source row now: the count, and the first ten
/// rows with the columns that differ. Rows the STI table held before the run are not the run's,
/// and are left out.
async fn compare_copied_values(
    client: &Client,
    backfill: &Backfill,
    source: &Source,
) -> Result<(i64, Vec<(KeyText, Vec<String>)>), Error> {
    let table = backfill.table.quoted();
    let mut params = Params::default();
    let run = params.bind(Some(&backfill.run), "text");
    let mapped: Vec<String> = source
        .columns
        .iter()
        .enumerate()
        .map(|(i, (column, sql))| format!("CAST({sql} AS {}) AS c{i}", column.sql_type))
        .chain(backfill.key.iter().enumerate().map(|(i, c)| {
            format!(
                "CAST({} AS {}) AS k{i}",
                source.value_of(&c.name),
                c.sql_type
            )
        }))
        .collect();
    let journal_key = (0..backfill.key.len())
        .map(|i| format!("m.k{i}::text"))
        .collect::<Vec<_>>()
        .join(", ");
    let differs: Vec<String> = source
        .columns
        .iter()
        .enumerate()
        .map(|(i, (column, _))| format!("{} IS DISTINCT FROM m.c{i}", column.on("t")))
        .collect();
    if differs.is_empty() {
        return Ok((0, Vec::new()));
    }
    let named: Vec<String> = source
        .columns
        .iter()
        .zip(&differs)
        .map(|((column, _), differ)| {
            format!(
                "CASE WHEN {differ} THEN {} END",
                crate::sql::literal(&column.name)
            )
        })
        .collect();
    let joined = format!(
        "(SELECT {} FROM {} s{}) m
         JOIN (SELECT DISTINCT key FROM sunset.backfill_journal WHERE run = {run}) j
           ON j.key = jsonb_build_array({journal_key})
         JOIN {table} t ON {} = {}",
        mapped.join(", "),
        source.walk.table.quoted(),
        source.walk.where_clause(),
        backfill.target().key_tuple("t"),
        preflight::mapped_tuple(backfill),
    );
    let any_differs = differs.join(" OR ");
    let count: i64 = client
        .query_one(
            &format!("SELECT count(*) FILTER (WHERE {any_differs}) FROM {joined}"),
            &params.refs(),
        )
        .await
        .map_err(|e| {
            crate::queries::plan_sql_error(
                &source.walk,
                e,
                "comparing copied values with their sources",
            )
        })?
        .get(0);
    if count == 0 {
        return Ok((0, Vec::new()));
    }
    let rows = client
        .query(
            &format!(
                "SELECT ARRAY[{journal_key}], array_remove(ARRAY[{}]::text[], NULL) FROM {joined}
                 WHERE {any_differs} ORDER BY {} LIMIT 10",
                named.join(", "),
                preflight::mapped_tuple(backfill),
            ),
            &params.refs(),
        )
        .await
        .map_err(Error::db("finding the copied rows that differ"))?;
    Ok((count, rows.iter().map(|r| (r.get(0), r.get(1))).collect()))
}

/// The first ten keys, in key order, of the rows in scope where `condition(expected, disc)`
/// holds: `expected` is the SQL of the type the mapping gives the row, `disc` its type now.
async fn first_keys(
    client: &Client,
    backfill: &Backfill,
    in_place: &InPlace,
    what: &'static str,
    condition: impl Fn(&str, &str) -> String,
) -> Result<Vec<KeyText>, Error> {
    let mut params = Params::default();
    let expected = statements::type_expression(in_place, &backfill.discriminator, &mut params, "t");
    let condition = condition(&expected, &backfill.discriminator.on("t"));
    let rows = client
        .query(
            &format!(
                "SELECT ARRAY[{}] FROM {} t WHERE {condition}{} ORDER BY {} LIMIT 10",
                backfill.key_texts("t"),
                backfill.table.quoted(),
                backfill.and_filter(),
                backfill.key_list("t"),
            ),
            &params.refs(),
        )
        .await
        .map_err(Error::db(what))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

async fn validate_in_place(
    client: &Client,
    backfill: &Backfill,
    in_place: &InPlace,
) -> Result<Validation, Error> {
    let table = backfill.table.quoted();
    let filter = backfill
        .filter
        .as_deref()
        .map(|f| format!(" WHERE ({f})"))
        .unwrap_or_default();
    let rows = client
        .query(
            &format!(
                "SELECT {from}::text, {disc}::text, count(*) FROM {table} t{filter} GROUP BY 1, 2 ORDER BY 1 NULLS FIRST, 2 NULLS FIRST",
                from = in_place.from.on("t"),
                disc = backfill.discriminator.on("t"),
            ),
            &[],
        )
        .await
        .map_err(Error::db("counting types per legacy value"))?;
    let expected_for = |legacy: Option<&str>| -> Option<String> {
        legacy
            .and_then(|l| {
                in_place
                    .map
                    .iter()
                    .find(|(k, _)| k == l)
                    .map(|(_, v)| v.clone())
            })
            .or_else(|| match &in_place.unmapped {
                Unmapped::Default(type_name) => Some(type_name.to_string()),
                Unmapped::Fail | Unmapped::Skip => None,
            })
    };
    let mut validation = Validation::default();
    for row in rows {
        let (legacy, found, count): (Option<String>, Option<String>, i64) =
            (row.get(0), row.get(1), row.get(2));
        let expected = expected_for(legacy.as_deref());
        match (&expected, &found) {
            (Some(e), Some(f)) if e != f && !in_place.overwrite => validation.kept += count,
            (Some(e), Some(f)) if e != f => validation.mismatched += count,
            (Some(_), None) => validation.untyped += count,
            (None, None) if in_place.unmapped == Unmapped::Fail => validation.untyped += count,
            _ => {}
        }
        validation.counts.push(TypeCount {
            legacy,
            found,
            expected,
            rows: count,
        });
    }
    if !validation.passed() {
        let fail_mode = in_place.unmapped == Unmapped::Fail;
        validation.offending_keys = first_keys(client, backfill, in_place, "finding offending keys", |expected, disc| {
            format!("((({expected}) IS NOT NULL AND {disc} IS DISTINCT FROM ({expected})) OR ({disc} IS NULL AND {fail_mode}))")
        })
        .await?;
    }
    if validation.kept > 0 {
        validation.kept_keys = first_keys(
            client,
            backfill,
            in_place,
            "finding the rows that keep another type",
            |expected, disc| format!("{disc}::text <> ({expected})::text"),
        )
        .await?;
    }
    Ok(validation)
}
