//! `validate`: the run's result judged against its sources. In place, the types per legacy value
//! (and the rows a plan without `overwrite` kept); in copy mode, every source row's copy, its type
//! and every mapped column's value.

use sunset_plan::format::Unmapped;
use tokio_postgres::Client;

use crate::catalog::{Backfill, Column, InPlace, Mode, Source, Walk};
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
    collect_copied_keys(client, backfill).await?;
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
            if validation.differing_rows.len() < DIFFERING_SHOWN {
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
    client
        .batch_execute(&format!("DROP TABLE {COPIED}"))
        .await
        .map_err(Error::db("dropping the table of copied keys"))?;
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

/// The keys of the rows this run inserted (its journal), in an indexed temporary table read once
/// per `validate`: each journal row is one batch's array of keys, unnested once.
/// Reading them through the `backfill_journal` view instead (one slice and one JSON array per
/// key) made `validate` of 1M copied rows take 140 s.
const COPIED: &str = "pg_temp.sunset_validate_copied";

async fn collect_copied_keys(client: &Client, backfill: &Backfill) -> Result<(), Error> {
    let width = backfill.key.len();
    let columns: Vec<String> = backfill
        .key
        .iter()
        .enumerate()
        .map(|(i, c)| format!("k{i} {}", c.sql_type))
        .collect();
    let aliases = (0..width)
        .map(|i| format!("k{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    // One key column: the array's elements are the keys. Several: its rows, rebuilt from the
    // flattened elements by their position.
    let keys = if width == 1 {
        format!(
            "SELECT CAST(x.v AS {}) FROM sunset.backfill_undo u, unnest(u.keys) AS x(v) WHERE u.run = $1",
            backfill.key[0].sql_type
        )
    } else {
        let casts: Vec<String> = backfill
            .key
            .iter()
            .enumerate()
            .map(|(i, c)| format!("CAST(g.key[{}] AS {})", i + 1, c.sql_type))
            .collect();
        format!(
            "SELECT {} FROM (
                 SELECT array_agg(x.v ORDER BY x.o) AS key
                 FROM sunset.backfill_undo u, unnest(u.keys) WITH ORDINALITY AS x(v, o)
                 WHERE u.run = $1 GROUP BY u.batch, (x.o - 1) / {width}
             ) g",
            casts.join(", ")
        )
    };
    client
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS {COPIED}; CREATE TEMPORARY TABLE {} ({});",
            COPIED.trim_start_matches("pg_temp."),
            columns.join(", ")
        ))
        .await
        .map_err(Error::db("creating the table of copied keys"))?;
    client
        .execute(
            &format!("INSERT INTO {COPIED} ({aliases}) {keys}"),
            &[&backfill.run],
        )
        .await
        .map_err(Error::db("reading the keys this run copied"))?;
    client
        .batch_execute(&format!("CREATE INDEX ON {COPIED} ({aliases})"))
        .await
        .map_err(Error::db("indexing the keys this run copied"))?;
    // Its own statement: VACUUM can not run in a batch's implicit transaction. It fills the
    // visibility map, so the comparison's lookups read the index only.
    client
        .batch_execute(&format!("VACUUM ANALYZE {COPIED}"))
        .await
        .map_err(Error::db("analyzing the keys this run copied"))
}

/// How many rows [`compare_copied_values`] names.
const DIFFERING_SHOWN: usize = 10;

/// Every mapped column of every row this run copied from `source` (its keys in the journal),
/// against the value the mapping computes from the source row now: the count, and the first
/// rows with the columns that differ. Rows the STI table held before the run are not the run's,
/// and are left out.
///
/// Range by range over the source's key (the runner's split): each statement is short on a
/// live database and its memory bounded by one range. A range with differences is then narrowed
/// to its first keys and their columns. Both sides are in one database and joined by key, so a
/// per-range count of differing rows costs what a per-range hash would, and is exact.
async fn compare_copied_values(
    client: &Client,
    backfill: &Backfill,
    source: &Source,
) -> Result<(i64, Vec<(KeyText, Vec<String>)>), Error> {
    if source.columns.is_empty() {
        return Ok((0, Vec::new()));
    }
    let Some(upper) = crate::queries::largest_key(client, &source.walk).await? else {
        return Ok((0, Vec::new()));
    };
    let ranges = crate::queries::split(client, &source.walk, &upper).await?;
    let same_key = keeps_its_key(backfill, source);
    if !same_key {
        // Each range's source rows drive index lookups into the copies; a hash join would read
        // every copied key once per range instead.
        client
            .batch_execute("SET enable_hashjoin = off; SET enable_mergejoin = off")
            .await
            .map_err(Error::db("choosing index lookups for the comparison"))?;
    }
    let mut lower: Option<KeyText> = None;
    let mut count = 0;
    let mut rows = Vec::new();
    for upper in &ranges {
        let range = RangeComparison::new(backfill, source, lower.as_deref(), upper, same_key);
        let differing: i64 = client
            .query_one(&range.count_sql(), &range.params.refs())
            .await
            .map_err(|e| {
                crate::queries::plan_sql_error(
                    &source.walk,
                    e,
                    "comparing copied values with their sources",
                )
            })?
            .get(0);
        if differing > 0 && rows.len() < DIFFERING_SHOWN {
            let first = client
                .query(
                    &range.first_sql(DIFFERING_SHOWN - rows.len()),
                    &range.params.refs(),
                )
                .await
                .map_err(Error::db("finding the copied rows that differ"))?;
            rows.extend(first.iter().map(|r| (r.get(0), r.get(1))));
        }
        count += differing;
        lower = Some(upper.clone());
    }
    if !same_key {
        client
            .batch_execute("RESET enable_hashjoin; RESET enable_mergejoin")
            .await
            .map_err(Error::db("resetting the planner settings"))?;
    }
    Ok((count, rows))
}

/// Key types that order the same in every table (no collation).
const UNCOLLATED_KEY_TYPES: &[&str] = &[
    "smallint",
    "integer",
    "bigint",
    "numeric",
    "uuid",
    "date",
    "timestamp without time zone",
    "timestamp with time zone",
];

/// The source's key columns are the STI table's, unchanged (the usual copy), of a type without
/// a collation: a source key range is then the same range of the copies' keys, and every side of
/// the comparison reads one index range. (Text keys may sort by another collation in each table.)
fn keeps_its_key(backfill: &Backfill, source: &Source) -> bool {
    backfill.key.len() == source.walk.key.len()
        && backfill
            .key
            .iter()
            .zip(&source.walk.key)
            .all(|(target, own)| {
                target.sql_type == own.sql_type
                    && UNCOLLATED_KEY_TYPES.contains(&own.sql_type.as_str())
                    && source.value_of(&target.name) == crate::sql::ident(&own.name)
            })
}

/// The statements comparing the copies of one key range of a source with their sources.
struct RangeComparison {
    /// The source rows of the range mapped as the run maps them, joined to their rows in the STI
    /// table, those of them the run copied (`WHERE EXISTS`: a key journalled twice counts once).
    joined: String,
    /// Any mapped column differs.
    any_differs: String,
    /// The names of the columns that differ, as a text array.
    differing_columns: String,
    journal_key: String,
    order: String,
    params: Params,
}

impl RangeComparison {
    fn new(
        backfill: &Backfill,
        source: &Source,
        lower: Option<&[String]>,
        upper: &[String],
        same_key: bool,
    ) -> Self {
        let mut params = Params::default();
        let lower = lower.map_or(statements::Lower::Open, statements::Lower::Given);
        let condition = statements::range_condition(&source.walk, &mut params, "s", lower, upper);
        let (copied_range, target_range) = if same_key {
            let copied = Walk {
                key: (backfill.key.iter().enumerate())
                    .map(|(i, c)| Column {
                        name: format!("k{i}"),
                        ..c.clone()
                    })
                    .collect(),
                ..backfill.target()
            };
            let on_copied = statements::range_condition(&copied, &mut params, "j", lower, upper);
            let on_target =
                statements::range_condition(&backfill.target(), &mut params, "t", lower, upper);
            (format!(" AND {on_copied}"), format!(" AND {on_target}"))
        } else {
            Default::default()
        };
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
        let width = backfill.key.len();
        let m_tuple = preflight::mapped_tuple(backfill);
        let copied_tuple = format!(
            "({})",
            (0..width)
                .map(|i| format!("j.k{i}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let differs: Vec<String> = source
            .columns
            .iter()
            .enumerate()
            .map(|(i, (column, _))| format!("{} IS DISTINCT FROM m.c{i}", column.on("t")))
            .collect();
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
        Self {
            joined: format!(
                "(SELECT {} FROM {} s WHERE {condition}{}) m
                 JOIN {} t ON {} = {m_tuple}{target_range}
                 WHERE EXISTS (SELECT FROM {COPIED} j WHERE {copied_tuple} = {m_tuple}{copied_range})",
                mapped.join(", "),
                source.walk.table.quoted(),
                source.walk.and_filter(),
                backfill.table.quoted(),
                backfill.target().key_tuple("t"),
            ),
            any_differs: differs.join(" OR "),
            differing_columns: format!("array_remove(ARRAY[{}]::text[], NULL)", named.join(", ")),
            journal_key: (0..width)
                .map(|i| format!("m.k{i}::text"))
                .collect::<Vec<_>>()
                .join(", "),
            order: m_tuple,
            params,
        }
    }

    fn count_sql(&self) -> String {
        format!(
            "SELECT count(*) FILTER (WHERE {}) FROM {}",
            self.any_differs, self.joined
        )
    }

    fn first_sql(&self, limit: usize) -> String {
        format!(
            "SELECT ARRAY[{}], {} FROM {} AND ({}) ORDER BY {} LIMIT {limit}",
            self.journal_key, self.differing_columns, self.joined, self.any_differs, self.order
        )
    }
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
