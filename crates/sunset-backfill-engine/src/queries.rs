//! Statements the preflight, the runner and the operations share, kept in a leaf module so
//! that none of them depends on another for them.

use tokio_postgres::GenericClient;

use crate::catalog::Walk;
use crate::error::{Error, describe};
use crate::statements::KeyText;

/// The rows the walk's `where` selects (all of them without one).
pub(crate) async fn count_in_scope(client: &impl GenericClient, walk: &Walk) -> Result<i64, Error> {
    let row = client
        .query_one(
            &format!(
                "SELECT count(*) FROM {} s{}",
                walk.table.quoted(),
                walk.where_clause()
            ),
            &[],
        )
        .await
        .map_err(|e| plan_sql_error(walk, e, "counting the rows in scope"))?;
    Ok(row.get(0))
}

/// A syntax, name or type error in a statement that embeds the plan's own SQL (`where`, copy
/// `columns`) is the plan's fault: bad input, not a database failure.
pub(crate) fn plan_sql_error(walk: &Walk, error: tokio_postgres::Error, context: &str) -> Error {
    let is_plan_sql = error
        .code()
        .is_some_and(|c| c.code().starts_with("42") || c.code().starts_with("22"));
    if !is_plan_sql {
        return Error::Database {
            context: context.to_owned(),
            cause: error,
        };
    }
    let what = match &walk.filter {
        Some(filter) => format!("`where: {filter}`"),
        None => "the plan's SQL".to_owned(),
    };
    Error::BadInput(format!(
        "{what} is not valid SQL for `{}`: {}",
        walk.table.display(),
        describe(&error)
    ))
}

/// The walk's largest key (all rows, not only those in `where`: ranges cover the key space).
pub(crate) async fn largest_key(
    client: &impl tokio_postgres::GenericClient,
    walk: &Walk,
) -> Result<Option<KeyText>, Error> {
    let order_desc: Vec<String> = walk
        .key
        .iter()
        .map(|c| format!("{} DESC", c.on("t")))
        .collect();
    Ok(client
        .query_opt(
            &format!(
                "SELECT ARRAY[{}] FROM {} t ORDER BY {} LIMIT 1",
                walk.key_texts("t"),
                walk.table.quoted(),
                order_desc.join(", ")
            ),
            &[],
        )
        .await
        .map_err(Error::db("finding the largest key"))?
        .map(|row| row.get(0)))
}

/// Range boundaries: the last key of each of 32 slices of a sample of about 50,000 rows (an
/// exact pass over a large key index costs seconds; ranges need only be roughly even). The last
/// boundary is the true upper bound, so ranges always cover every key. Fixed at start, so
/// workers in any process agree on them.
pub(crate) async fn split(
    client: &impl tokio_postgres::GenericClient,
    walk: &Walk,
    upper: &KeyText,
) -> Result<Vec<KeyText>, Error> {
    let buckets = 32i64;
    let estimated_rows: f32 = client
        .query_one(
            "SELECT reltuples FROM pg_class WHERE oid = $1",
            &[&walk.table.oid],
        )
        .await
        .map_err(Error::db("estimating the table's size"))?
        .get(0);
    let sample = if estimated_rows > 100_000.0 {
        format!(
            " TABLESAMPLE SYSTEM ({})",
            (100.0 * 50_000.0 / f64::from(estimated_rows)).max(0.01)
        )
    } else {
        String::new()
    };
    let mut params = crate::sql::Params::default();
    let unfiltered = Walk {
        filter: None,
        ..walk.clone()
    };
    let condition = crate::statements::range_condition(
        &unfiltered,
        &mut params,
        "t",
        crate::statements::Lower::Open,
        upper,
    );
    let aliases: Vec<String> = (0..walk.key.len()).map(|i| format!("k{i}")).collect();
    let select_keys: Vec<String> = walk
        .key
        .iter()
        .zip(&aliases)
        .map(|(c, a)| format!("{} AS {a}", c.on("t")))
        .collect();
    let s_texts: Vec<String> = aliases.iter().map(|a| format!("s.{a}::text")).collect();
    let s_desc: Vec<String> = aliases.iter().map(|a| format!("s.{a} DESC")).collect();
    let sql = format!(
        "SELECT DISTINCT ON (s.bucket) ARRAY[{}] FROM (
             SELECT {}, ntile({buckets}) OVER (ORDER BY {}) AS bucket FROM {} t{sample} WHERE {condition}
         ) s
         ORDER BY s.bucket, {}",
        s_texts.join(", "),
        select_keys.join(", "),
        walk.key_list("t"),
        walk.table.quoted(),
        s_desc.join(", "),
    );
    let rows = client
        .query(&sql, &params.refs())
        .await
        .map_err(Error::db("splitting the key space into ranges"))?;
    let mut boundaries: Vec<KeyText> = rows.iter().map(|row| row.get(0)).collect();
    match boundaries.last_mut() {
        Some(last) => *last = upper.clone(),
        None => boundaries.push(upper.clone()),
    }
    Ok(boundaries)
}
