//! What goes into an archive, resolved and checked before anything is uploaded: directory trees
//! walked in a fixed (sorted) order, and tables or queries resolved against the database.

use std::fs::Metadata;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use tokio_postgres::Client;

use crate::error::Error;
use crate::manifest::{ColumnSchema, TableSchema};

/// One file, directory or symlink, with the metadata it is archived with.
#[derive(Debug)]
pub(crate) struct FileItem {
    pub(crate) disk: PathBuf,
    /// The path inside the archive: `files/<top directory name>/...`.
    pub(crate) name: String,
    pub(crate) metadata: Metadata,
}

/// Walks every source path (a directory tree or a single file), sorted by name so the same tree
/// always gives the same archive bytes. Unreadable files and special files are bad input.
pub(crate) fn walk(paths: &[PathBuf]) -> Result<Vec<FileItem>, Error> {
    let mut items = Vec::new();
    let mut tops: Vec<String> = Vec::new();
    for path in paths {
        let metadata = std::fs::symlink_metadata(path)
            .map_err(|e| Error::BadInput(format!("--dir `{}`: {}", path.display(), plain(&e))))?;
        let top = path
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .ok_or_else(|| {
                Error::BadInput(format!(
                    "--dir `{}` has no name to archive it under",
                    path.display()
                ))
            })?;
        if tops.contains(&top) {
            return Err(Error::BadInput(format!(
                "--dir `{}`: another source is also named `{top}`; archive their parent instead",
                path.display()
            )));
        }
        tops.push(top.clone());
        visit(path, format!("files/{top}"), metadata, &mut items)?;
    }
    Ok(items)
}

fn visit(
    disk: &Path,
    name: String,
    metadata: Metadata,
    items: &mut Vec<FileItem>,
) -> Result<(), Error> {
    let kind = metadata.file_type();
    if kind.is_file() {
        // Opening proves it is readable now, before any byte is uploaded.
        std::fs::File::open(disk).map_err(|e| {
            Error::BadInput(format!(
                "`{}` is not readable: {}",
                disk.display(),
                plain(&e)
            ))
        })?;
        items.push(FileItem {
            disk: disk.to_owned(),
            name,
            metadata,
        });
    } else if kind.is_symlink() {
        items.push(FileItem {
            disk: disk.to_owned(),
            name,
            metadata,
        });
    } else if kind.is_dir() {
        let entries = std::fs::read_dir(disk).map_err(|e| {
            Error::BadInput(format!(
                "directory `{}` is not readable: {}",
                disk.display(),
                plain(&e)
            ))
        })?;
        let mut children = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| {
                Error::BadInput(format!(
                    "directory `{}` is not readable: {}",
                    disk.display(),
                    plain(&e)
                ))
            })?;
            children.push(entry.path());
        }
        children.sort();
        items.push(FileItem {
            disk: disk.to_owned(),
            name: name.clone(),
            metadata,
        });
        for child in children {
            let metadata = std::fs::symlink_metadata(&child).map_err(Error::io("stat", &child))?;
            let file_name = child
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            visit(&child, format!("{name}/{file_name}"), metadata, items)?;
        }
    } else {
        let what = if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "a device"
        };
        return Err(Error::BadInput(format!(
            "`{}` is {what}: only files, directories and symlinks can be archived",
            disk.display()
        )));
    }
    Ok(())
}

/// The OS message without the "(os error N)" noise.
fn plain(error: &std::io::Error) -> String {
    let text = error.to_string();
    match text.find(" (os error") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

/// A table or query to export.
#[derive(Debug, Clone)]
pub(crate) struct Export {
    /// The directory inside the archive: `tables/<schema>.<table>` or `queries/<name>`.
    pub(crate) dir: String,
    /// What the manifest says it came from.
    pub(crate) source: String,
    pub(crate) copy_sql: String,
    pub(crate) schema: TableSchema,
}

/// Resolves `--table schema.table` (or a bare name, found on the search path) and `--query
/// NAME=SQL` against the database. Unknown tables and queries that do not prepare are bad input.
pub(crate) async fn resolve_exports(
    client: &Client,
    tables: &[String],
    queries: &[(String, String)],
) -> Result<Vec<Export>, Error> {
    let mut exports = Vec::new();
    for table in tables {
        // Checked here: from PostgreSQL 16 on, to_regclass answers NULL for a syntax error too.
        sunset_pg::QualifiedName::parse(table)
            .map_err(|e| Error::BadInput(format!("--table `{table}` {e}")))?;
        let row = client
            .query_opt(
                "SELECT c.oid::int8, n.nspname::text, c.relname::text FROM pg_class c
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE c.oid = to_regclass($1) AND c.relkind IN ('r', 'p', 'v', 'm', 'f')",
                &[table],
            )
            .await
            .map_err(|e| match e.as_db_error() {
                Some(db) => Error::BadInput(format!("--table `{table}`: {}", db.message())),
                None => Error::db(format!("resolving table `{table}`"))(e),
            })?
            .ok_or_else(|| Error::BadInput(format!("--table `{table}`: no such table")))?;
        let (oid, schema, name): (i64, String, String) = (row.get(0), row.get(1), row.get(2));
        let columns = client
            .query(
                "SELECT attname::text, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute
                 WHERE attrelid = $1::int8::oid AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                &[&oid],
            )
            .await
            .map_err(Error::db(format!("reading the columns of `{table}`")))?
            .iter()
            .map(|r| ColumnSchema {
                name: r.get(0),
                data_type: r.get(1),
                not_null: r.get(2),
            })
            .collect();
        let primary_key = client
            .query(
                "SELECT a.attname::text FROM pg_index i
                 JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n) ON true
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                 WHERE i.indrelid = $1::int8::oid AND i.indisprimary ORDER BY k.n",
                &[&oid],
            )
            .await
            .map_err(Error::db(format!("reading the primary key of `{table}`")))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let qualified = format!("{}.{}", quote(&schema), quote(&name));
        let display = format!("{schema}.{name}");
        if exports.iter().any(|e: &Export| e.source == display) {
            return Err(Error::BadInput(format!("--table `{table}` is given twice")));
        }
        exports.push(Export {
            dir: format!("tables/{}", path_safe(&display)),
            source: display.clone(),
            // A view or foreign table cannot be COPYed directly; a SELECT works for every kind.
            copy_sql: format!("COPY (SELECT * FROM {qualified}) TO STDOUT (FORMAT csv, HEADER)"),
            schema: TableSchema {
                name: display,
                columns,
                primary_key,
            },
        });
    }
    for (name, sql) in queries {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(Error::BadInput(format!(
                "--query `{name}=...`: the name must be letters, digits, `_` or `-`"
            )));
        }
        if exports.iter().any(|e| e.dir == format!("queries/{name}")) {
            return Err(Error::BadInput(format!("--query `{name}` is given twice")));
        }
        if sql.trim_end().ends_with(';') {
            return Err(Error::BadInput(format!(
                "--query `{name}`: remove the trailing `;` (the query is exported as COPY (query) TO STDOUT)"
            )));
        }
        // One statement on its own (a second one, or text that closes the COPY's parenthesis,
        // does not prepare), and then exactly what will run.
        let statement = client.prepare(sql).await.map_err(|e| {
            Error::BadInput(format!("--query `{name}`: {}", crate::error::describe(&e)))
        })?;
        let copy_sql = format!("COPY ({sql}) TO STDOUT (FORMAT csv, HEADER)");
        client.prepare(&copy_sql).await.map_err(|e| {
            Error::BadInput(format!(
                "--query `{name}` cannot be exported as COPY ({{query}}) TO STDOUT (a trailing comment?): {}",
                crate::error::describe(&e)
            ))
        })?;
        let columns = statement
            .columns()
            .iter()
            .map(|c| ColumnSchema {
                name: c.name().to_owned(),
                data_type: type_name(c.type_()),
                not_null: false,
            })
            .collect();
        exports.push(Export {
            dir: format!("queries/{name}"),
            source: sql.clone(),
            copy_sql,
            schema: TableSchema {
                name: name.clone(),
                columns,
                primary_key: Vec::new(),
            },
        });
    }
    Ok(exports)
}

/// A type name usable in `CREATE TABLE`, qualified when it is not a built-in.
fn type_name(ty: &tokio_postgres::types::Type) -> String {
    if ty.schema() == "pg_catalog" {
        ty.name().to_owned()
    } else {
        format!("{}.{}", quote(ty.schema()), quote(ty.name()))
    }
}

pub(crate) fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

/// Table names become directory names: keep them readable, but never a path separator.
fn path_safe(name: &str) -> String {
    name.chars()
        .map(|c| if c == '/' || c == '\0' { '_' } else { c })
        .collect()
}
