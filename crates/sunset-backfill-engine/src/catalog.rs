//! Resolves a backfill plan against the real table: the table exists, every column exists with
//! its real type, the key is NOT NULL and backed by a unique index in the key's order (so keyset
//! chunks walk an index), and the discriminator is a separate column. Every problem is bad input.

use sunset_plan::format::{
    BackfillMode, BackfillPlanFile, BatchFile, CopySourceFile, Coverage, ThrottleFile, Unmapped,
};
use sunset_plan::{Loaded, closest};
use tokio_postgres::GenericClient;

use crate::error::Error;
use crate::sql::ident;

/// A column as the catalog knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// `format_type` of the column: what values are cast to.
    pub sql_type: String,
    pub not_null: bool,
    /// A generated column: computed by the server, never written.
    pub generated: bool,
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

/// A table walked in keyset chunks: the STI table itself (in-place mode) or one legacy source
/// (copy mode). Key ranges, checkpoints and batches are all per walk.
#[derive(Debug, Clone)]
pub struct Walk {
    pub table: TableRef,
    /// Unique, NOT NULL, indexed in this order: what chunks are ordered and bounded by.
    pub key: Vec<Column>,
    /// The plan's SQL condition on this table's rows.
    pub filter: Option<String>,
}

impl Walk {
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

    /// ` AND (filter)` or nothing.
    pub(crate) fn and_filter(&self) -> String {
        self.filter
            .as_deref()
            .map(|f| format!(" AND ({f})"))
            .unwrap_or_default()
    }

    /// ` WHERE (filter)` or nothing.
    pub(crate) fn where_clause(&self) -> String {
        self.filter
            .as_deref()
            .map(|f| format!(" WHERE ({f})"))
            .unwrap_or_default()
    }
}

/// In-place mode: the type comes from a legacy column of the same row.
#[derive(Debug, Clone)]
pub struct InPlace {
    pub from: Column,
    /// Legacy value to type name, in a stable order.
    pub map: Vec<(String, String)>,
    pub unmapped: Unmapped,
    /// Replace a discriminator that already holds another type (the plan's `overwrite`).
    pub overwrite: bool,
}

/// Copy mode: one legacy per-type table whose rows become rows of the STI table.
#[derive(Debug, Clone)]
pub struct Source {
    pub walk: Walk,
    pub type_name: String,
    /// Target column and the SQL that computes it from a source row (columns unqualified), in
    /// the target's column order. Target columns not listed keep their default.
    pub columns: Vec<(Column, String)>,
}

impl Source {
    /// The SQL for target column `name` (every target key column has one).
    pub(crate) fn value_of(&self, name: &str) -> &str {
        self.columns
            .iter()
            .find(|(c, _)| c.name == name)
            .map(|(_, sql)| sql.as_str())
            .unwrap_or("NULL")
    }
}

#[derive(Debug, Clone)]
pub enum Mode {
    InPlace(InPlace),
    Copy(Vec<Source>),
}

/// A plan checked against the catalog: everything the runner needs to build its statements.
#[derive(Debug, Clone)]
pub struct Backfill {
    pub run: String,
    pub fingerprint: String,
    /// The STI table.
    pub table: TableRef,
    pub key: Vec<Column>,
    pub discriminator: Column,
    pub mode: Mode,
    /// In-place mode: the plan's `where` on the STI table.
    pub filter: Option<String>,
    pub batch: BatchFile,
    pub throttle: ThrottleFile,
    pub coverage: Option<Coverage>,
}

impl Backfill {
    /// The STI table as a walk (its key and the plan's `where`).
    pub fn target(&self) -> Walk {
        Walk {
            table: self.table.clone(),
            key: self.key.clone(),
            filter: self.filter.clone(),
        }
    }

    /// ` AND (where)` for the plan's `where` on the STI table, or nothing.
    pub(crate) fn and_filter(&self) -> String {
        self.target().and_filter()
    }

    /// The tables this run walks, numbered as the work table's `walk` column numbers them.
    pub fn walks(&self) -> Vec<Walk> {
        match &self.mode {
            Mode::InPlace(_) => vec![self.target()],
            Mode::Copy(sources) => sources.iter().map(|s| s.walk.clone()).collect(),
        }
    }

    /// The tables whose writes coverage must follow: the STI table, or every source.
    pub(crate) fn written_tables(&self) -> Vec<&TableRef> {
        match &self.mode {
            Mode::InPlace(_) => vec![&self.table],
            Mode::Copy(sources) => sources.iter().map(|s| &s.walk.table).collect(),
        }
    }

    /// The oids of every table the run reads or writes, for the lock-waiter health signal.
    pub(crate) fn touched_tables(&self) -> Vec<u32> {
        let mut oids: Vec<u32> = self.written_tables().iter().map(|t| t.oid).collect();
        if !oids.contains(&self.table.oid) {
            oids.push(self.table.oid);
        }
        oids
    }

    /// The key columns, quoted and qualified by `alias`, comma-separated.
    pub(crate) fn key_list(&self, alias: &str) -> String {
        self.target().key_list(alias)
    }

    /// The key columns as text, in key order.
    pub(crate) fn key_texts(&self, alias: &str) -> String {
        self.target().key_texts(alias)
    }
}

/// Finds column `name` of `table` for `role`, or says which columns exist.
fn find_column(
    columns: &[Column],
    table: &TableRef,
    role: &str,
    name: &str,
) -> Result<Column, String> {
    columns
        .iter()
        .find(|c| c.name == name)
        .cloned()
        .ok_or_else(|| {
            let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
            let hint = closest(name, &names)
                .map(|c| format!(" (did you mean `{c}`?)"))
                .unwrap_or_default();
            format!(
                "{role} column `{name}` does not exist in table `{}`{hint}",
                table.display()
            )
        })
}

/// The key columns named in a plan, each problem added to `problems`, then checked: NOT NULL
/// and backed by a unique index in this order.
async fn resolve_key(
    client: &impl GenericClient,
    table: &TableRef,
    columns: &[Column],
    names: &[&str],
    role: &str,
    problems: &mut Vec<String>,
) -> Result<Vec<Column>, Error> {
    let key: Vec<Column> = names
        .iter()
        .filter_map(|name| {
            find_column(columns, table, role, name)
                .map_err(|e| problems.push(e))
                .ok()
        })
        .collect();
    if key.len() != names.len() {
        return Ok(key);
    }
    for column in key.iter().filter(|c| !c.not_null) {
        problems.push(format!(
            "{role} column `{}` of `{}` is nullable: keyset chunks would skip NULL keys; a key must be the primary key or unique NOT NULL columns",
            column.name,
            table.display()
        ));
    }
    if let Err(problem) = check_unique_index(client, table, &key).await? {
        problems.push(problem);
    }
    Ok(key)
}

/// Resolves `loaded` against the database behind `client`.
pub async fn resolve(
    client: &impl GenericClient,
    loaded: &Loaded<BackfillPlanFile>,
) -> Result<Backfill, Error> {
    let plan = &loaded.plan;
    let table = resolve_table(client, plan.table.as_str()).await?;
    let columns = table_columns(client, &table).await?;
    let mut problems = Vec::new();
    let key_names: Vec<&str> = plan.key.0.iter().map(|k| k.as_str()).collect();
    let key = resolve_key(client, &table, &columns, &key_names, "key", &mut problems).await?;
    let discriminator = find_column(
        &columns,
        &table,
        "discriminator",
        plan.discriminator.as_str(),
    )
    .map_err(|e| problems.push(e))
    .ok();
    if let Some(discriminator) = &discriminator
        && key.iter().any(|k| k.name == discriminator.name)
    {
        problems.push(format!(
            "the discriminator `{}` can not be part of the key",
            discriminator.name
        ));
    }
    let mode = match plan.mode {
        BackfillMode::InPlace => {
            let from_name = plan.from.as_ref().map(|f| f.as_str()).unwrap_or_default();
            let from = find_column(&columns, &table, "`from`", from_name)
                .map_err(|e| problems.push(e))
                .ok();
            if let (Some(from), Some(discriminator)) = (&from, &discriminator)
                && discriminator.name == from.name
            {
                problems.push(format!(
                    "the discriminator and `from` are the same column `{}`",
                    from.name
                ));
            }
            from.map(|from| {
                Mode::InPlace(InPlace {
                    from,
                    map: plan
                        .map
                        .iter()
                        .flatten()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    unmapped: plan.unmapped.clone(),
                    overwrite: plan.overwrite.unwrap_or(false),
                })
            })
        }
        BackfillMode::Copy => {
            let mut sources = Vec::new();
            for (n, file) in plan.sources.iter().enumerate() {
                let role = format!("sources[{n}]");
                let sti = StiTable {
                    table: &table,
                    columns: &columns,
                    key: &key,
                    discriminator: plan.discriminator.as_str(),
                };
                let resolved = resolve_source(client, file, &role, &sti, &mut problems).await;
                match resolved {
                    Ok(Some(source)) => sources.push(source),
                    Ok(None) => {}
                    Err(Error::BadInput(problem)) => problems.push(format!("{role}: {problem}")),
                    Err(other) => return Err(other),
                }
            }
            Some(Mode::Copy(sources))
        }
    };
    if !problems.is_empty() {
        return Err(Error::BadInput(problems.join("\n")));
    }
    Ok(Backfill {
        run: plan.backfill.to_string(),
        fingerprint: loaded.fingerprint.to_string(),
        table,
        key,
        discriminator: discriminator.expect("no problems, so found"),
        mode: mode.expect("no problems, so resolved"),
        filter: plan.filter.as_ref().map(ToString::to_string),
        batch: plan.batch.clone(),
        throttle: plan.throttle.clone(),
        coverage: plan.coverage,
    })
}

/// What a copy-mode source is resolved against.
#[derive(Clone, Copy)]
struct StiTable<'a> {
    table: &'a TableRef,
    columns: &'a [Column],
    key: &'a [Column],
    discriminator: &'a str,
}

/// One copy-mode source: its table and walk key, and the SQL for each target column. A mapping
/// value that names a source column is that column; anything else is an SQL expression over the
/// source row (checked by the server at preflight). Unlisted target columns copy a source column
/// of the same name when there is one.
async fn resolve_source(
    client: &impl GenericClient,
    file: &CopySourceFile,
    role: &str,
    sti: &StiTable<'_>,
    problems: &mut Vec<String>,
) -> Result<Option<Source>, Error> {
    let StiTable {
        table: target,
        columns: target_columns,
        key: target_key,
        discriminator,
    } = *sti;
    let table = resolve_table(client, file.table.as_str()).await?;
    if table.oid == target.oid {
        problems.push(format!(
            "{role}: `{}` is the STI table itself; copy mode reads other tables",
            table.display()
        ));
        return Ok(None);
    }
    let source_columns = table_columns(client, &table).await?;
    let before = problems.len();
    let key = match &file.key {
        Some(names) => {
            let names: Vec<&str> = names.0.iter().map(|k| k.as_str()).collect();
            resolve_key(client, &table, &source_columns, &names, &format!("{role}.key"), problems).await?
        }
        None => primary_key(client, &table, &source_columns).await?.unwrap_or_else(|| {
            problems.push(format!(
                "{role}: `{}` has no primary key to walk it by: name its unique NOT NULL columns in `key`",
                table.display()
            ));
            Vec::new()
        }),
    };
    for listed in file.columns.keys() {
        if let Err(problem) = find_column(
            target_columns,
            target,
            &format!("{role}.columns: target"),
            listed.as_str(),
        ) {
            problems.push(problem);
        }
    }
    let mut columns = Vec::new();
    for column in target_columns {
        if column.name == discriminator || column.generated {
            continue;
        }
        let listed = file
            .columns
            .iter()
            .find(|(target, _)| target.as_str() == column.name);
        let sql = match listed.map(|(_, value)| value) {
            Some(value) => match source_columns.iter().find(|c| c.name == value.as_str()) {
                Some(source_column) => ident(&source_column.name),
                None => format!("({})", value.as_str()),
            },
            None => match source_columns.iter().find(|c| c.name == column.name) {
                Some(_) => ident(&column.name),
                None => continue,
            },
        };
        columns.push((column.clone(), sql));
    }
    for key_column in target_key {
        if !columns.iter().any(|(c, _)| c.name == key_column.name) {
            problems.push(format!(
                "{role}: `{}` has no column `{}` for the STI table's key: map it in `columns`, e.g. `columns: {{ {}: legacy_id }}`",
                table.display(),
                key_column.name,
                key_column.name
            ));
        }
    }
    if problems.len() > before {
        return Ok(None);
    }
    Ok(Some(Source {
        walk: Walk {
            table,
            key,
            filter: file.filter.as_ref().map(ToString::to_string),
        },
        type_name: file.type_name.to_string(),
        columns,
    }))
}

/// The primary key's columns in index order, if the table has one.
async fn primary_key(
    client: &impl GenericClient,
    table: &TableRef,
    columns: &[Column],
) -> Result<Option<Vec<Column>>, Error> {
    let row = client
        .query_opt(
            "SELECT array(SELECT a.attname::text FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, n)
                          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum ORDER BY k.n)
             FROM pg_index i WHERE i.indrelid = $1 AND i.indisprimary",
            &[&table.oid],
        )
        .await
        .map_err(Error::db("reading a source's primary key"))?;
    Ok(row.map(|row| {
        let names: Vec<String> = row.get(0);
        names
            .iter()
            .filter_map(|n| columns.iter().find(|c| &c.name == n).cloned())
            .collect()
    }))
}

async fn resolve_table(client: &impl GenericClient, name: &str) -> Result<TableRef, Error> {
    // Checked here: from PostgreSQL 16 on, to_regclass answers NULL for a syntax error too.
    sunset_pg::QualifiedName::parse(name).map_err(|e| {
        Error::BadInput(format!(
            "table `{name}` is not a valid table name: the text {e}"
        ))
    })?;
    let row = client
        .query_opt(
            "SELECT c.oid, n.nspname::text, c.relname::text, c.relkind::text
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.oid = to_regclass($1::text)",
            &[&name],
        )
        .await
        .map_err(Error::db("resolving the plan's table"))?;
    let Some(row) = row else {
        return Err(Error::BadInput(format!(
            "table `{name}` does not exist (or is not visible on the search_path)"
        )));
    };
    let kind: String = row.get(3);
    if kind != "r" && kind != "p" {
        return Err(Error::BadInput(format!(
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
            "SELECT attname::text, format_type(atttypid, atttypmod), attnotnull, attgenerated <> ''
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
            generated: r.get(3),
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
