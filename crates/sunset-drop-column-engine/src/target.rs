//! The table and column to drop, read from the catalog with everything the down migration needs
//! to put the column back exactly. Requests that can never be a safe drop (a primary key or
//! partition key column, an inherited column) are refused here as bad input.

use tokio_postgres::Client;

use sunset_pg::{QualifiedName, split_identifiers};

use crate::error::Error;

/// One privilege granted on the column (or a view), as `GRANT` needs it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Grant {
    pub privilege: String,
    /// Quoted role name or `PUBLIC`.
    pub grantee: String,
    pub grantable: bool,
}

/// The column as the down migration must recreate it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ColumnDef {
    pub name: String,
    /// Quoted for SQL.
    pub name_sql: String,
    pub attnum: i16,
    /// `format_type`, e.g. `character varying(20)`.
    pub type_sql: String,
    /// Quoted collation when it is not the type's default.
    pub collation: Option<String>,
    pub default: Option<String>,
    pub not_null: bool,
    /// `a` (ALWAYS) or `d` (BY DEFAULT) for identity columns.
    pub identity: Option<char>,
    /// The expression of a generated column.
    pub generated: Option<String>,
    /// A VIRTUAL generated column (PostgreSQL 18), computed on read rather than stored.
    pub generated_virtual: bool,
    pub comment: Option<String>,
    pub grants: Vec<Grant>,
    /// `SET STATISTICS` target when not the default.
    pub statistics: Option<i32>,
    /// Storage when not the type's default (`PLAIN`, `EXTERNAL`, ...).
    pub storage: Option<String>,
    /// `SET COMPRESSION` method (`pglz`, `lz4`) when one is set on the column.
    pub compression: Option<String>,
}

/// A resolved table and column.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Target {
    pub oid: u32,
    pub schema: String,
    pub table: String,
    /// `"schema"."table"` quoted as PostgreSQL would.
    pub table_sql: String,
    /// `r` table, `p` partitioned table.
    pub relkind: char,
    pub column: ColumnDef,
    /// Quoted primary key (or unique not-null index) columns, for the data archive.
    pub row_key: Option<Vec<String>>,
    /// Whether a primary key exists (a replica identity can fall back to it).
    pub has_primary_key: bool,
    /// The role the check ran as; objects owned by others get an explicit owner in the down.
    pub current_user: String,
}

impl Target {
    /// `schema.table.column` for messages.
    pub fn display(&self) -> String {
        format!("{}.{}.{}", self.schema, self.table, self.column.name)
    }
}

pub async fn resolve(client: &Client, table: &str, column: &str) -> Result<Target, Error> {
    let wanted =
        QualifiedName::parse(table).map_err(|e| Error::BadInput(format!("`{table}` {e}")))?;
    let column_name = column_identifier(column)?;
    let rows = client
        .query(
            "SELECT c.oid, n.nspname, c.relname, c.relkind::text, format('%I.%I', n.nspname, c.relname),
                    current_user::text
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relname = $1
               AND CASE WHEN $2::text IS NULL THEN n.oid = ANY (current_schemas(false)::regnamespace[])
                        ELSE n.nspname = $2 END
             ORDER BY array_position(current_schemas(false), n.nspname::name)
             LIMIT 1",
            &[&wanted.name, &wanted.schema],
        )
        .await
        .map_err(Error::db("looking up the table"))?;
    let Some(row) = rows.first() else {
        let searched = match &wanted.schema {
            Some(schema) => format!("in schema `{schema}`"),
            None => "on the search_path".to_owned(),
        };
        return Err(Error::BadInput(format!(
            "unknown table `{table}`: no relation named `{}` {searched}",
            wanted.name
        )));
    };
    let oid: u32 = row.get(0);
    let relkind: String = row.get(3);
    let relkind = relkind.chars().next().unwrap_or('?');
    let display = format!("{}.{}", row.get::<_, String>(1), row.get::<_, String>(2));
    if !matches!(relkind, 'r' | 'p') {
        return Err(Error::BadInput(format!(
            "`{display}` is not a table (relkind {relkind}): only columns of tables and partitioned tables can be dropped"
        )));
    }
    let mut target = Target {
        oid,
        schema: row.get(1),
        table: row.get(2),
        table_sql: row.get(4),
        relkind,
        column: read_column(client, oid, &display, &column_name).await?,
        row_key: None,
        has_primary_key: false,
        current_user: row.get(5),
    };
    refuse_undroppable(client, &target, &display).await?;
    let (row_key, has_primary_key) = row_key(client, oid).await?;
    target.row_key = row_key;
    target.has_primary_key = has_primary_key;
    Ok(target)
}

/// Column names as typed: `legacy_kind` folds to lower case, `"LegacyKind"` keeps its case.
fn column_identifier(text: &str) -> Result<String, Error> {
    match split_identifiers(text).as_deref() {
        Some([name]) => Ok(name.clone()),
        _ => Err(Error::BadInput(format!(
            "`{text}` is not a column name (quote unusual names: \"Legacy Kind\")"
        ))),
    }
}

async fn read_column(
    client: &Client,
    oid: u32,
    table: &str,
    name: &str,
) -> Result<ColumnDef, Error> {
    let row = client
        .query_opt(
            "SELECT a.attnum, quote_ident(a.attname), format_type(a.atttypid, a.atttypmod),
                    CASE WHEN a.attcollation <> t.typcollation AND a.attcollation <> 0
                         THEN format('%I.%I', cn.nspname, co.collname) END,
                    CASE WHEN a.attgenerated = '' THEN pg_get_expr(d.adbin, d.adrelid) END,
                    a.attnotnull, NULLIF(a.attidentity, '')::text,
                    CASE WHEN a.attgenerated <> '' THEN pg_get_expr(d.adbin, d.adrelid) END,
                    col_description(a.attrelid, a.attnum),
                    NULLIF(a.attstattarget, -1)::int4,
                    CASE WHEN a.attstorage <> t.typstorage THEN
                        CASE a.attstorage WHEN 'p' THEN 'PLAIN' WHEN 'e' THEN 'EXTERNAL'
                                          WHEN 'm' THEN 'MAIN' ELSE 'EXTENDED' END END,
                    a.attinhcount::int4,
                    CASE a.attcompression WHEN 'p' THEN 'pglz' WHEN 'l' THEN 'lz4' END,
                    a.attgenerated = 'v'
             FROM pg_attribute a
             JOIN pg_type t ON t.oid = a.atttypid
             LEFT JOIN pg_collation co ON co.oid = a.attcollation
             LEFT JOIN pg_namespace cn ON cn.oid = co.collnamespace
             LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
             WHERE a.attrelid = $1 AND a.attname = $2 AND a.attnum > 0 AND NOT a.attisdropped",
            &[&oid, &name],
        )
        .await
        .map_err(Error::db("reading the column"))?;
    let Some(row) = row else {
        let columns: Vec<String> = client
            .query(
                "SELECT attname::text FROM pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                &[&oid],
            )
            .await
            .map_err(Error::db("listing the table's columns"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let hint = columns
            .iter()
            .find(|c| c.to_lowercase() == name.to_lowercase())
            .map(|c| format!(" (names fold to lower case unless quoted: did you mean '\"{c}\"'?)"))
            .unwrap_or_default();
        return Err(Error::BadInput(format!(
            "table `{table}` has no column `{name}`{hint}; its columns are: {}",
            columns.join(", ")
        )));
    };
    let attnum: i16 = row.get(0);
    let inherited: i32 = row.get(11);
    if inherited > 0 {
        return Err(Error::BadInput(format!(
            "`{table}.{name}` is inherited from a parent table (or the table is a partition): drop it from the parent instead"
        )));
    }
    let grants = client
        .query(
            "SELECT g.privilege_type, CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(g.grantee)) END,
                    g.is_grantable
             FROM pg_attribute a, aclexplode(a.attacl) g
             WHERE a.attrelid = $1 AND a.attnum = $2::int4
             ORDER BY 2, 1",
            &[&oid, &i32::from(attnum)],
        )
        .await
        .map_err(Error::db("reading the column's grants"))?
        .iter()
        .map(|r| Grant {
            privilege: r.get(0),
            grantee: r.get(1),
            grantable: r.get(2),
        })
        .collect();
    let identity: Option<String> = row.get(6);
    Ok(ColumnDef {
        name: name.to_owned(),
        name_sql: row.get(1),
        attnum,
        type_sql: row.get(2),
        collation: row.get(3),
        default: row.get(4),
        not_null: row.get(5),
        identity: identity.and_then(|i| i.chars().next()),
        generated: row.get(7),
        comment: row.get(8),
        grants,
        statistics: row.get(9),
        storage: row.get(10),
        compression: row.get(12),
        generated_virtual: row.get(13),
    })
}

/// PostgreSQL cannot drop these (or only with the table's meaning changing): refused up front.
async fn refuse_undroppable(client: &Client, target: &Target, table: &str) -> Result<(), Error> {
    let row = client
        .query_one(
            "SELECT (SELECT k.conname::text FROM pg_constraint k
                     WHERE k.conrelid = $1 AND k.contype = 'p' AND $2::int4 = ANY (k.conkey)),
                    (SELECT pg_get_partkeydef($1) FROM pg_partitioned_table p
                     WHERE p.partrelid = $1
                       AND ($2::int4 = ANY (p.partattrs::int2[])
                            OR EXISTS (SELECT 1 FROM pg_depend d
                                       WHERE d.classid = 'pg_class'::regclass AND d.objid = $1 AND d.objsubid = 0
                                         AND d.refobjid = $1 AND d.refobjsubid = $2::int4)))",
            &[&target.oid, &i32::from(target.column.attnum)],
        )
        .await
        .map_err(Error::db("checking keys"))?;
    let column = &target.column.name;
    if let Some(constraint) = row.get::<_, Option<String>>(0) {
        return Err(Error::BadInput(format!(
            "`{table}.{column}` is part of the primary key `{constraint}`: a key column is never a legacy column to drop; replace the key first"
        )));
    }
    if let Some(key) = row.get::<_, Option<String>>(1) {
        return Err(Error::BadInput(format!(
            "`{table}.{column}` is part of the partition key ({key}): PostgreSQL cannot drop a partition key column"
        )));
    }
    Ok(())
}

/// The columns that identify a row: the primary key, else the first unique index on NOT NULL
/// plain columns. `(columns, has_primary_key)`.
async fn row_key(client: &Client, oid: u32) -> Result<(Option<Vec<String>>, bool), Error> {
    let row = client
        .query_opt(
            "SELECT array(SELECT quote_ident(a.attname) FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, n)
                          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum ORDER BY k.n),
                    i.indisprimary
             FROM pg_index i
             WHERE i.indrelid = $1 AND i.indisunique AND i.indexprs IS NULL AND i.indpred IS NULL
               AND i.indisvalid AND NOT (0 = ANY (i.indkey::int2[]))
               AND NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = i.indrelid
                               AND a.attnum = ANY (i.indkey::int2[]) AND NOT a.attnotnull)
             ORDER BY i.indisprimary DESC, i.indnatts, i.indexrelid
             LIMIT 1",
            &[&oid],
        )
        .await
        .map_err(Error::db("finding the table's key"))?;
    Ok(match row {
        Some(row) => (Some(row.get(0)), row.get(1)),
        None => (None, false),
    })
}
