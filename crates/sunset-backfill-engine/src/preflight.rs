//! Preflight, run before any write (and first by `run`): the plan against the real table, new
//! writes covered, unmapped legacy values counted, the batch statement explained, one sample batch
//! timed in a rolled-back transaction, and an estimated duration.

use std::time::{Duration, Instant};

use sunset_plan::format::Unmapped;
use tokio_postgres::Client;

use crate::catalog::{Backfill, InPlace, Mode, Source};
use crate::error::Error;
use crate::queries::{count_in_scope, largest_key, plan_sql_error};
use crate::sql::Params;
use crate::statements::{self, KeyText};

#[derive(Debug, Clone)]
pub struct Preflight {
    pub rows_in_scope: i64,
    /// Rows per legacy value the map does not cover (`None`: NULL), most frequent first.
    pub unmapped: Vec<(Option<String>, i64)>,
    /// Copy mode, per source: rows whose key the STI table already has (left alone by
    /// `ON CONFLICT DO NOTHING`).
    pub already_present: Vec<(String, i64)>,
    /// In place: rows whose discriminator is already set where the map gives a type.
    pub already_typed: Option<AlreadyTyped>,
    /// The plan of one batch.
    pub explain: String,
    /// Rows and duration of one real batch, rolled back.
    pub sample: Option<(u64, Duration)>,
    pub estimate: Option<Duration>,
}

/// In place: what the run will find already typed, so nobody learns of an overwrite afterwards.
#[derive(Debug, Clone, Default)]
pub struct AlreadyTyped {
    /// Already the mapped type: nothing to do.
    pub same: i64,
    /// Another type than the mapping's: replaced with `overwrite: true`, else left alone.
    pub different: i64,
    /// The first rows of `different` in key order: (key, type now, type the mapping gives).
    pub sample: Vec<(KeyText, String, String)>,
    /// The plan's `overwrite`.
    pub overwrite: bool,
}

/// How many of `different` are shown by key.
const SAMPLE_KEYS: i64 = 5;

/// Checks everything that must hold before the first write; `Err(BadInput)` for the plan's faults.
pub async fn check(client: &mut Client, backfill: &Backfill) -> Result<Preflight, Error> {
    if backfill.coverage.is_none() {
        return Err(Error::BadInput(match &backfill.mode {
            Mode::InPlace(in_place) => format!(
                "nothing sets `{}` for rows inserted while the backfill runs: add `coverage: trigger` (sunset installs a trigger \
                 that derives it from `{}`) or `coverage: application` (the application already writes it)",
                backfill.discriminator.name, in_place.from.name
            ),
            Mode::Copy(_) => "nothing copies rows written to the sources while the backfill runs: add `coverage: trigger` \
                 (sunset installs a trigger on each source that mirrors its writes) or `coverage: application` \
                 (the application already writes both tables)"
                .to_owned(),
        }));
    }
    let walks = backfill.walks();
    let mut rows_in_scope = 0;
    let mut unmapped = Vec::new();
    let mut already_present = Vec::new();
    let mut already_typed = None;
    match &backfill.mode {
        Mode::InPlace(in_place) => {
            // One pass counts all; the breakdowns only run when there is something to show.
            let counts = count_scope_and_unmapped(client, backfill, in_place).await?;
            rows_in_scope = counts.in_scope;
            if counts.unmapped > 0 {
                unmapped = count_unmapped(client, backfill, in_place).await?;
            }
            refuse_unmapped(in_place, &unmapped)?;
            let sample = if counts.different > 0 {
                sample_different(client, backfill, in_place).await?
            } else {
                Vec::new()
            };
            already_typed = Some(AlreadyTyped {
                same: counts.same,
                different: counts.different,
                sample,
                overwrite: in_place.overwrite,
            });
        }
        Mode::Copy(sources) => {
            for source in sources {
                rows_in_scope += count_in_scope(client, &source.walk).await?;
                let present = count_already_present(client, backfill, source).await?;
                already_present.push((source.walk.table.display(), present));
            }
        }
    }
    let mut sample_walk = None;
    for (n, walk) in walks.iter().enumerate() {
        if let Some(upper) = largest_key(client, walk).await? {
            sample_walk = Some((n, walk, upper));
            break;
        }
    }
    let Some((walk_no, walk, upper)) = sample_walk else {
        return Ok(Preflight {
            rows_in_scope,
            unmapped,
            already_present,
            already_typed,
            explain: "(nothing to read: the table is empty)".into(),
            sample: None,
            estimate: Some(Duration::ZERO),
        });
    };
    let size = backfill.batch.size;
    let (sql, params) = statements::batch(backfill, walk_no, None, &upper, size);
    let explain_rows = client
        .query(&format!("EXPLAIN {sql}"), &params.refs())
        .await
        .map_err(|e| plan_sql_error(walk, e, "explaining a batch"))?;
    let explain = explain_rows
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n");
    let transaction = client
        .transaction()
        .await
        .map_err(Error::db("beginning the sample batch"))?;
    transaction
        .batch_execute(&crate::connect::timeouts_sql(backfill, true, true))
        .await
        .map_err(Error::db("setting the sample batch's timeouts"))?;
    let started = Instant::now();
    let row = transaction
        .query_one(&sql, &params.refs())
        .await
        .map_err(|e| plan_sql_error(walk, e, "timing a sample batch"))?;
    let took = started.elapsed();
    transaction
        .rollback()
        .await
        .map_err(Error::db("rolling back the sample batch"))?;
    let sample_rows = u64::try_from(row.get::<_, i64>(0)).unwrap_or_default();
    let estimate =
        (sample_rows > 0).then(|| took.mul_f64(rows_in_scope as f64 / sample_rows as f64));
    Ok(Preflight {
        rows_in_scope,
        unmapped,
        already_present,
        already_typed,
        explain,
        sample: Some((sample_rows, took)),
        estimate,
    })
}

fn refuse_unmapped(in_place: &InPlace, unmapped: &[(Option<String>, i64)]) -> Result<(), Error> {
    if in_place.unmapped != Unmapped::Fail || unmapped.is_empty() {
        return Ok(());
    }
    let listing: Vec<String> = unmapped
        .iter()
        .map(|(value, rows)| {
            format!(
                "  {}: {rows} rows",
                value
                    .as_deref()
                    .map_or("NULL".to_owned(), |v| format!("`{v}`"))
            )
        })
        .collect();
    Err(Error::BadInput(format!(
        "legacy values of `{}` that `map` does not cover, with `unmapped: fail`:\n{}\nadd them to `map`, or set `unmapped: skip` or `unmapped: {{ default: TypeName }}`",
        in_place.from.name,
        listing.join("\n")
    )))
}

/// `SELECT <STI key computed from each source row> AS k0, ... FROM source s WHERE filter`: the
/// keys a source's rows get in the STI table, for anti-joins (the plan's expressions see only the
/// source row).
pub(crate) fn mapped_keys(backfill: &Backfill, source: &Source) -> String {
    let keys = backfill
        .key
        .iter()
        .enumerate()
        .map(|(i, c)| {
            format!(
                "CAST({} AS {}) AS k{i}",
                source.value_of(&c.name),
                c.sql_type
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "SELECT {keys} FROM {} s{}",
        source.walk.table.quoted(),
        source.walk.where_clause()
    )
}

/// `(m.k0, m.k1)`: the mapped key of [`mapped_keys`]'s rows under alias `m`.
pub(crate) fn mapped_tuple(backfill: &Backfill) -> String {
    let parts: Vec<String> = (0..backfill.key.len()).map(|i| format!("m.k{i}")).collect();
    format!("({})", parts.join(", "))
}

async fn count_already_present(
    client: &Client,
    backfill: &Backfill,
    source: &Source,
) -> Result<i64, Error> {
    let row = client
        .query_one(
            &format!(
                "SELECT count(*) FROM ({}) m WHERE EXISTS (SELECT 1 FROM {} t WHERE {} = {})",
                mapped_keys(backfill, source),
                backfill.table.quoted(),
                backfill.target().key_tuple("t"),
                mapped_tuple(backfill),
            ),
            &[],
        )
        .await
        .map_err(|e| plan_sql_error(&source.walk, e, "counting rows already in the STI table"))?;
    Ok(row.get(0))
}

/// `(rows whose legacy value the map does not cover, bound parameters)`: with a default, NULL and
/// unknown values get the default, so nothing is unmapped.
fn unmapped_condition(in_place: &InPlace, params: &mut Params) -> String {
    if matches!(in_place.unmapped, Unmapped::Default(_)) {
        return "false".to_owned();
    }
    let from = in_place.from.on("t");
    let keys: Vec<String> = in_place
        .map
        .iter()
        .map(|(legacy, _)| params.bind(Some(legacy), "text"))
        .collect();
    format!(
        "({from} IS NULL OR {from}::text NOT IN ({}))",
        keys.join(", ")
    )
}

/// What one pass over the rows in scope counts.
struct ScopeCounts {
    in_scope: i64,
    unmapped: i64,
    /// Typed already, as the mapping says.
    same: i64,
    /// Typed already, otherwise than the mapping says.
    different: i64,
}

async fn count_scope_and_unmapped(
    client: &Client,
    backfill: &Backfill,
    in_place: &InPlace,
) -> Result<ScopeCounts, Error> {
    let mut params = Params::default();
    let unmapped = unmapped_condition(in_place, &mut params);
    let mapped = statements::type_expression(in_place, &backfill.discriminator, &mut params, "t");
    let disc = backfill.discriminator.on("t");
    let target = backfill.target();
    let row = client
        .query_one(
            &format!(
                "SELECT count(*), count(*) FILTER (WHERE {unmapped}),
                        count(*) FILTER (WHERE {disc}::text = ({mapped})::text),
                        count(*) FILTER (WHERE {disc}::text <> ({mapped})::text)
                 FROM {} t{}",
                backfill.table.quoted(),
                target.where_clause()
            ),
            &params.refs(),
        )
        .await
        .map_err(|e| plan_sql_error(&target, e, "counting the rows in scope"))?;
    Ok(ScopeCounts {
        in_scope: row.get(0),
        unmapped: row.get(1),
        same: row.get(2),
        different: row.get(3),
    })
}

/// The first rows, in key order, whose type differs from the one the mapping gives.
async fn sample_different(
    client: &Client,
    backfill: &Backfill,
    in_place: &InPlace,
) -> Result<Vec<(KeyText, String, String)>, Error> {
    let mut params = Params::default();
    let mapped = statements::type_expression(in_place, &backfill.discriminator, &mut params, "t");
    let disc = backfill.discriminator.on("t");
    let target = backfill.target();
    let keys = backfill
        .key
        .iter()
        .map(|c| format!("{}::text", c.on("t")))
        .collect::<Vec<_>>()
        .join(", ");
    let filter = backfill.and_filter();
    let rows = client
        .query(
            &format!(
                "SELECT ARRAY[{keys}], {disc}::text, ({mapped})::text FROM {} t
                 WHERE {disc}::text <> ({mapped})::text{filter}
                 ORDER BY {} LIMIT {SAMPLE_KEYS}",
                backfill.table.quoted(),
                target.key_list("t"),
            ),
            &params.refs(),
        )
        .await
        .map_err(|e| plan_sql_error(&target, e, "sampling rows typed otherwise"))?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

async fn count_unmapped(
    client: &Client,
    backfill: &Backfill,
    in_place: &InPlace,
) -> Result<Vec<(Option<String>, i64)>, Error> {
    let mut params = Params::default();
    let unmapped = unmapped_condition(in_place, &mut params);
    let filter = backfill.and_filter();
    let rows = client
        .query(
            &format!(
                "SELECT {}::text, count(*) FROM {} t WHERE {unmapped}{filter}
                 GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 50",
                in_place.from.on("t"),
                backfill.table.quoted(),
            ),
            &params.refs(),
        )
        .await
        .map_err(|e| plan_sql_error(&backfill.target(), e, "counting unmapped legacy values"))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}
