//! Preflight, run before any write (and first by `run`): the plan against the real table, new
//! writes covered, unmapped legacy values counted, the batch statement explained, one sample batch
//! timed in a rolled-back transaction, and an estimated duration.

use std::time::{Duration, Instant};

use sunset_plan::format::Unmapped;
use tokio_postgres::{Client, GenericClient};

use crate::catalog::Backfill;
use crate::error::{Error, describe};
use crate::sql::Params;
use crate::statements::{self, KeyText};

#[derive(Debug, Clone)]
pub struct Preflight {
    pub rows_in_scope: i64,
    /// Rows per legacy value the map does not cover (`None`: NULL), most frequent first.
    pub unmapped: Vec<(Option<String>, i64)>,
    /// The plan of one batch.
    pub explain: String,
    /// Rows and duration of one real batch, rolled back.
    pub sample: Option<(u64, Duration)>,
    pub estimate: Option<Duration>,
}

pub(crate) async fn count_in_scope(
    client: &impl GenericClient,
    backfill: &Backfill,
) -> Result<i64, Error> {
    let filter = backfill
        .filter
        .as_deref()
        .map(|f| format!(" WHERE ({f})"))
        .unwrap_or_default();
    let row = client
        .query_one(
            &format!("SELECT count(*) FROM {}{filter}", backfill.table.quoted()),
            &[],
        )
        .await
        .map_err(|e| filter_error(backfill, e, "counting the rows in scope"))?;
    Ok(row.get(0))
}

/// A syntax or name error in a statement that embeds the plan's `where` is the plan's fault.
fn filter_error(backfill: &Backfill, error: tokio_postgres::Error, context: &str) -> Error {
    let is_plan_sql = error
        .code()
        .is_some_and(|c| c.code().starts_with("42") || c.code().starts_with("22"));
    match (&backfill.filter, is_plan_sql) {
        (Some(filter), true) => Error::Invalid(format!(
            "`where: {filter}` is not valid SQL for `{}`: {}",
            backfill.table.display(),
            describe(&error)
        )),
        _ => Error::Database {
            context: context.to_owned(),
            cause: error,
        },
    }
}

/// Checks everything that must hold before the first write; `Err(Invalid)` for the plan's faults.
pub async fn check(client: &mut Client, backfill: &Backfill) -> Result<Preflight, Error> {
    if backfill.coverage.is_none() {
        return Err(Error::Invalid(format!(
            "nothing sets `{}` for rows inserted while the backfill runs: add `coverage: trigger` (sunset installs a trigger \
             that derives it from `{}`) or `coverage: application` (the application already writes it)",
            backfill.discriminator.name, backfill.from.name
        )));
    }
    let rows_in_scope = count_in_scope(client, backfill).await?;
    let unmapped = count_unmapped(client, backfill).await?;
    if backfill.unmapped == Unmapped::Fail && !unmapped.is_empty() {
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
        return Err(Error::Invalid(format!(
            "legacy values of `{}` that `map` does not cover, with `unmapped: fail`:\n{}\nadd them to `map`, or set `unmapped: skip` or `unmapped: {{ default: TypeName }}`",
            backfill.from.name,
            listing.join("\n")
        )));
    }
    let upper: Option<KeyText> = {
        let desc: Vec<String> = backfill
            .key
            .iter()
            .map(|c| format!("{} DESC", c.on("t")))
            .collect();
        client
            .query_opt(
                &format!(
                    "SELECT ARRAY[{}] FROM {} t ORDER BY {} LIMIT 1",
                    backfill.key_texts("t"),
                    backfill.table.quoted(),
                    desc.join(", ")
                ),
                &[],
            )
            .await
            .map_err(Error::db("finding the largest key"))?
            .map(|r| r.get(0))
    };
    let Some(upper) = upper else {
        return Ok(Preflight {
            rows_in_scope,
            unmapped,
            explain: "(the table is empty)".into(),
            sample: None,
            estimate: Some(Duration::ZERO),
        });
    };
    let size = backfill.batch.size;
    let (sql, params) = statements::batch(backfill, None, &upper, size);
    let explain_rows = client
        .query(&format!("EXPLAIN {sql}"), &params.refs())
        .await
        .map_err(|e| filter_error(backfill, e, "explaining a batch"))?;
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
        .map_err(|e| filter_error(backfill, e, "timing a sample batch"))?;
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
        explain,
        sample: Some((sample_rows, took)),
        estimate,
    })
}

async fn count_unmapped(
    client: &Client,
    backfill: &Backfill,
) -> Result<Vec<(Option<String>, i64)>, Error> {
    let mut params = Params::default();
    let from = backfill.from.on("t");
    let keys: Vec<String> = backfill
        .map
        .iter()
        .map(|(legacy, _)| params.bind(Some(legacy), "text"))
        .collect();
    let filter = backfill
        .filter
        .as_deref()
        .map(|f| format!(" AND ({f})"))
        .unwrap_or_default();
    // With a default, NULL and unknown values get the default: nothing is unmapped.
    if matches!(backfill.unmapped, Unmapped::Default(_)) {
        return Ok(Vec::new());
    }
    let rows = client
        .query(
            &format!(
                "SELECT {from}::text, count(*) FROM {} t WHERE ({from} IS NULL OR {from}::text NOT IN ({})){filter}
                 GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 50",
                backfill.table.quoted(),
                keys.join(", ")
            ),
            &params.refs(),
        )
        .await
        .map_err(|e| filter_error(backfill, e, "counting unmapped legacy values"))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}
