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
