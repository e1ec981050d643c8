//! Resolves a backfill plan against the real table: the table exists, every column exists with
//! its real type, the key is NOT NULL and backed by a unique index in the key's order (so keyset
//! chunks walk an index), and the discriminator is a separate column. Every problem is bad input.

use sunset_plan::format::{
    BackfillMode, BackfillPlanFile, BatchFile, Coverage, ThrottleFile, Unmapped,
};
use sunset_plan::{Loaded, closest};
use tokio_postgres::GenericClient;

use crate::error::{Error, describe};
use crate::sql::ident;

/// A column as the catalog knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// `format_type` of the column: what values are cast to.
    pub sql_type: String,
    pub not_null: bool,
}

impl Column {
    /// The quoted column name, qualified by `alias`.
    pub(crate) fn on(&self, alias: &str) -> String {
        format!("{alias}.{}", ident(&self.name))
    }
}

/// The table a plan backfills.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRef {
    pub oid: u32,
    pub schema: String,
    pub name: String,
}

impl TableRef {
    /// `"schema"."table"`, for SQL.
    pub fn quoted(&self) -> String {
        format!("{}.{}", ident(&self.schema), ident(&self.name))
    }

    /// `schema.table`, for people.
    pub fn display(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
}

/// A plan checked against the catalog: everything the runner needs to build its statements.
#[derive(Debug, Clone)]
pub struct Backfill {
    pub run: String,
    pub fingerprint: String,
    pub table: TableRef,
    pub key: Vec<Column>,
    pub discriminator: Column,
    pub from: Column,
    /// Legacy value to type name, in a stable order.
    pub map: Vec<(String, String)>,
    pub unmapped: Unmapped,
    pub filter: Option<String>,
    pub batch: BatchFile,
    pub throttle: ThrottleFile,
    pub coverage: Option<Coverage>,
}

impl Backfill {
    /// The key columns, quoted and qualified by `alias`, comma-separated.
    pub(crate) fn key_list(&self, alias: &str) -> String {
        self.key
            .iter()
            .map(|c| c.on(alias))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `(alias.k1, alias.k2)` for row comparisons.
    pub(crate) fn key_tuple(&self, alias: &str) -> String {
        format!("({})", self.key_list(alias))
    }

    /// The key columns as text, in key order: how keys travel in checkpoints and journals.
    pub(crate) fn key_texts(&self, alias: &str) -> String {
        self.key
            .iter()
            .map(|c| format!("{}::text", c.on(alias)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Resolves `loaded` against the database behind `client`.
pub async fn resolve(
    client: &impl GenericClient,
    loaded: &Loaded<BackfillPlanFile>,
) -> Result<Backfill, Error> {
    let plan = &loaded.plan;
    if plan.mode == BackfillMode::Copy {
        return Err(Error::Invalid(
            "`mode: copy` is not supported by this version of sunset-backfill yet; use `mode: in_place`".to_owned(),
        ));
    }
    let table = resolve_table(client, plan.table.as_str()).await?;
    let columns = table_columns(client, &table).await?;
    let find = |role: &str, name: &str| -> Result<Column, Error> {
        columns
            .iter()
            .find(|c| c.name == name)
            .cloned()
            .ok_or_else(|| {
                let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
                let hint = closest(name, &names)
                    .map(|c| format!(" (did you mean `{c}`?)"))
                    .unwrap_or_default();
                Error::Invalid(format!(
                    "{role} column `{name}` does not exist in table `{}`{hint}",
                    table.display()
                ))
            })
    };
    let mut problems = Vec::new();
    let key: Vec<Column> = plan
        .key
        .0
        .iter()
        .filter_map(|name| {
            find("key", name.as_str())
                .map_err(|e| problems.push(e.to_string()))
                .ok()
        })
        .collect();
    let discriminator = find("discriminator", plan.discriminator.as_str())
        .map_err(|e| problems.push(e.to_string()))
        .ok();
    let from_name = plan.from.as_ref().map(|f| f.as_str()).unwrap_or_default();
    let from = find("`from`", from_name)
        .map_err(|e| problems.push(e.to_string()))
        .ok();
    if !problems.is_empty() {
        return Err(Error::Invalid(problems.join("\n")));
    }
    let (discriminator, from) = (
        discriminator.expect("checked above"),
        from.expect("checked above"),
    );
    if discriminator.name == from.name {
        problems.push(format!(
            "the discriminator and `from` are the same column `{}`",
            from.name
        ));
    }
    if key.iter().any(|k| k.name == discriminator.name) {
        problems.push(format!(
            "the discriminator `{}` can not be part of the key",
            discriminator.name
        ));
    }
    for column in key.iter().filter(|c| !c.not_null) {
        problems.push(format!(
            "key column `{}` is nullable: keyset chunks would skip NULL keys; the key must be the primary key or unique NOT NULL columns",
            column.name
        ));
    }
    if let Err(problem) = check_unique_index(client, &table, &key).await? {
        problems.push(problem);
    }
    if !problems.is_empty() {
        return Err(Error::Invalid(problems.join("\n")));
    }
    Ok(Backfill {
        run: plan.backfill.to_string(),
        fingerprint: loaded.fingerprint.to_string(),
        table,
        key,
        discriminator,
        from,
        map: plan
            .map
            .iter()
            .flatten()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        unmapped: plan.unmapped.clone(),
        filter: plan.filter.as_ref().map(ToString::to_string),
        batch: plan.batch.clone(),
        throttle: plan.throttle.clone(),
        coverage: plan.coverage,
    })
}

async fn resolve_table(client: &impl GenericClient, name: &str) -> Result<TableRef, Error> {
    let row = client
        .query_opt(
            "SELECT c.oid, n.nspname::text, c.relname::text, c.relkind::text
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.oid = to_regclass($1::text)",
            &[&name],
        )
        .await
        .map_err(|e| {
            Error::Invalid(format!(
                "table `{name}` is not a valid table name: {}",
                describe(&e)
            ))
        })?;
    let Some(row) = row else {
        return Err(Error::Invalid(format!(
            "table `{name}` does not exist (or is not visible on the search_path)"
        )));
    };
    let kind: String = row.get(3);
    if kind != "r" && kind != "p" {
        return Err(Error::Invalid(format!(
            "`{name}` is not a table (relkind `{kind}`); backfills update ordinary or partitioned tables"
        )));
    }
    Ok(TableRef {
        oid: row.get(0),
        schema: row.get(1),
        name: row.get(2),
    })
}

async fn table_columns(
    client: &impl GenericClient,
    table: &TableRef,
) -> Result<Vec<Column>, Error> {
    let rows = client
        .query(
            "SELECT attname::text, format_type(atttypid, atttypmod), attnotnull
             FROM pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            &[&table.oid],
        )
        .await
        .map_err(Error::db("reading the table's columns"))?;
    Ok(rows
        .iter()
        .map(|r| Column {
            name: r.get(0),
            sql_type: r.get(1),
            not_null: r.get(2),
        })
        .collect())
}

/// `Ok(Err(problem))` when no valid, non-partial unique index has exactly the key's columns in order.
async fn check_unique_index(
    client: &impl GenericClient,
    table: &TableRef,
    key: &[Column],
) -> Result<Result<(), String>, Error> {
    let rows = client
        .query(
            "SELECT i.indexrelid::regclass::text,
                    array(SELECT a.attname::text FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, n)
                          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum ORDER BY k.n)
             FROM pg_index i
             WHERE i.indrelid = $1 AND i.indisunique AND i.indisvalid AND i.indpred IS NULL AND i.indexprs IS NULL",
            &[&table.oid],
        )
        .await
        .map_err(Error::db("reading the table's unique indexes"))?;
    let wanted: Vec<&str> = key.iter().map(|c| c.name.as_str()).collect();
    let indexes: Vec<(String, Vec<String>)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    if indexes.iter().any(|(_, columns)| {
        columns
            .iter()
            .map(String::as_str)
            .eq(wanted.iter().copied())
    }) {
        return Ok(Ok(()));
    }
    let mut sorted_wanted = wanted.clone();
    sorted_wanted.sort_unstable();
    let reordered = indexes.iter().find(|(_, columns)| {
        let mut sorted: Vec<&str> = columns.iter().map(String::as_str).collect();
        sorted.sort_unstable();
        sorted == sorted_wanted
    });
    Ok(Err(match reordered {
        Some((index, columns)) => format!(
            "key ({}) is unique through index `{index}`, but in the order ({}): write `key: [{}]` so chunks walk the index",
            wanted.join(", "),
            columns.join(", "),
            columns.join(", ")
        ),
        None => format!(
            "key ({}) is not unique in `{}`: no valid, non-partial unique index or primary key has exactly these columns",
            wanted.join(", "),
            table.display()
        ),
    }))
}
