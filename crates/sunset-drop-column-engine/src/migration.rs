//! The migration as runner-neutral SQL: a non-transactional stage of single statements (indexes
//! dropped CONCURRENTLY) and a transactional stage that deals with each dependent explicitly and
//! ends with `DROP COLUMN`. Never CASCADE. The down is the exact reverse, written out.

use std::time::Duration;

use crate::dependents::{Dependent, Stage, grant_sql, literal};
use crate::error::Error;
use crate::target::Target;

#[derive(Debug, Clone)]
pub struct Options {
    pub restore_data: bool,
    pub lock_timeout: Duration,
    pub statement_timeout: Duration,
}

/// One statement that must run alone, outside a transaction, with its reverse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConcurrentStep {
    pub up: String,
    pub down: String,
}

#[derive(Debug, Clone)]
pub struct Migration {
    /// `drop_<table>_<column>`: file names are built from it.
    pub name: String,
    /// `schema.table.column`, for headers.
    pub subject: String,
    /// Run first on the way up, last (in reverse) on the way down.
    pub concurrent: Vec<ConcurrentStep>,
    /// `lock_timeout` for the concurrent stage, as an SQL literal. (Its statement_timeout is
    /// 0: cancelling an index build part way leaves an INVALID index behind.)
    pub concurrent_lock_timeout: String,
    /// The transactional stage; each statement without its terminating semicolon.
    pub main_up: Vec<String>,
    pub main_down: Vec<String>,
    pub data_restoring: bool,
    /// What a reader of the down must know (schema-only, NOT NULL caveats, ...).
    pub notes: Vec<String>,
}

impl Migration {
    /// The one line every down file starts with.
    pub fn down_label(&self) -> &'static str {
        if self.data_restoring {
            "DATA-RESTORING down: the column comes back with its values from the archive table."
        } else {
            "SCHEMA-ONLY down: the column comes back empty (its default, or NULL); its values are NOT restored."
        }
    }
}

/// A name that is a bare SQL identifier and a file-name fragment: lowercase, `[a-z0-9_]`.
pub fn slug(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    out.trim_matches('_').to_owned()
}

fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The archive table for `--restore-data`, next to the table (63 bytes at most).
fn archive_table(target: &Target) -> String {
    const SUFFIX: &str = "_sunset_archive";
    let mut name = format!("{}_{}", target.table, target.column.name);
    while name.len() + SUFFIX.len() > 63 {
        name.pop();
    }
    name.push_str(SUFFIX);
    format!("{}.{}", quoted(&target.schema), quoted(&name))
}

fn interval(duration: Duration) -> String {
    format!("'{}ms'", duration.as_millis())
}

pub fn build(
    target: &Target,
    dependents: &[Dependent],
    options: &Options,
) -> Result<Migration, Error> {
    let column = &target.column;
    let table = &target.table_sql;
    let name = slug(&format!("drop_{}_{}", target.table, column.name));
    let mut notes = Vec::new();
    let archive = if options.restore_data && column.generated.is_none() {
        let key = target.row_key.clone().ok_or_else(|| {
            Error::BadInput(format!(
                "--restore-data needs a primary key or a unique index on NOT NULL columns of {} to match archived values to rows; it has neither",
                target.table_sql
            ))
        })?;
        Some((archive_table(target), key))
    } else {
        if options.restore_data {
            notes.push("The column is generated: its values are recomputed by the down, no archive is needed.".to_owned());
        }
        None
    };
    let timeouts = vec![
        format!(
            "SET LOCAL lock_timeout = {}",
            interval(options.lock_timeout)
        ),
        format!(
            "SET LOCAL statement_timeout = {}",
            interval(options.statement_timeout)
        ),
    ];

    let mut ordered: Vec<&Dependent> = dependents.iter().filter(|d| d.change.is_some()).collect();
    ordered.sort_by_key(|d| d.change.as_ref().map(|c| (c.rank, c.order)));
    let concurrent: Vec<ConcurrentStep> = ordered
        .iter()
        .filter_map(|d| d.change.as_ref())
        .filter(|c| c.stage == Stage::Concurrent)
        .map(|c| ConcurrentStep {
            up: c.up.join(";\n"),
            down: c.down.join(";\n"),
        })
        .collect();
    let main: Vec<_> = ordered
        .iter()
        .filter_map(|d| d.change.as_ref())
        .filter(|c| c.stage == Stage::Main)
        .collect();

    let mut main_up = timeouts.clone();
    if let Some((archive, key)) = &archive {
        main_up.push(format!(
            "-- Writes wait (reads do not) while the values are copied, so none is lost.\nLOCK TABLE {table} IN SHARE MODE"
        ));
        main_up.push(format!(
            "CREATE TABLE {archive} AS SELECT {}, {} FROM {table}",
            key.join(", "),
            column.name_sql
        ));
    }
    main_up.extend(main.iter().flat_map(|c| c.up.iter().cloned()));
    main_up.push(format!(
        "ALTER TABLE {table} DROP COLUMN {}",
        column.name_sql
    ));

    let mut main_down = timeouts;
    main_down.extend(restore_column(target, archive.as_ref(), &mut notes));
    main_down.extend(main.iter().rev().flat_map(|c| c.down.iter().cloned()));
    Ok(Migration {
        name,
        subject: target.display(),
        concurrent,
        concurrent_lock_timeout: interval(options.lock_timeout),
        main_up,
        main_down,
        data_restoring: archive.is_some(),
        notes,
    })
}

/// The statements that put the column back as it was: definition, values, NOT NULL, storage,
/// statistics target, comment and grants, in an order that works on a non-empty table.
fn restore_column(
    target: &Target,
    archive: Option<&(String, Vec<String>)>,
    notes: &mut Vec<String>,
) -> Vec<String> {
    let column = &target.column;
    let table = &target.table_sql;
    let name = &column.name_sql;
    let mut add = format!("ALTER TABLE {table} ADD COLUMN {name} {}", column.type_sql);
    if let Some(collation) = &column.collation {
        add.push_str(&format!(" COLLATE {collation}"));
    }
    let identity = column.identity.map(|i| {
        if i == 'a' {
            "GENERATED ALWAYS AS IDENTITY"
        } else {
            "GENERATED BY DEFAULT AS IDENTITY"
        }
    });
    if let Some(expression) = &column.generated {
        let kind = if column.generated_virtual {
            "VIRTUAL"
        } else {
            "STORED"
        };
        add.push_str(&format!(" GENERATED ALWAYS AS ({expression}) {kind}"));
    } else if let Some(default) = &column.default {
        add.push_str(&format!(" DEFAULT {default}"));
    }
    let mut statements = Vec::new();
    match archive {
        None => {
            if let Some(identity) = identity {
                add.push_str(&format!(" {identity}"));
            } else if column.not_null && column.generated.is_none() {
                add.push_str(" NOT NULL");
                if column.default.is_none() {
                    notes.push("The column was NOT NULL without a default: this schema-only down fails on a non-empty table. Generate with --restore-data for a down that works there.".to_owned());
                }
            }
            statements.push(add);
        }
        Some((archive, key)) => {
            statements.push(add);
            let matches = key
                .iter()
                .map(|k| format!("t.{k} = a.{k}"))
                .collect::<Vec<_>>()
                .join(" AND ");
            statements.push(format!(
                "UPDATE {table} AS t SET {name} = a.{name} FROM {archive} AS a WHERE {matches}"
            ));
            statements.push(format!("DROP TABLE {archive}"));
            if column.not_null || identity.is_some() {
                statements.push(format!(
                    "ALTER TABLE {table} ALTER COLUMN {name} SET NOT NULL"
                ));
            }
            if let Some(identity) = identity {
                statements.push(format!(
                    "ALTER TABLE {table} ALTER COLUMN {name} ADD {identity}"
                ));
                statements.push(format!(
                    "SELECT setval(pg_get_serial_sequence({}, {}), m) FROM (SELECT max({name}) AS m FROM {table}) x WHERE m IS NOT NULL",
                    literal(table),
                    literal(&column.name)
                ));
            }
            notes.push("Rows inserted after the up migration get the column's default (or NULL) on the way down; the others get their archived values.".to_owned());
        }
    }
    if let Some(storage) = &column.storage {
        statements.push(format!(
            "ALTER TABLE {table} ALTER COLUMN {name} SET STORAGE {storage}"
        ));
    }
    if let Some(method) = &column.compression {
        statements.push(format!(
            "ALTER TABLE {table} ALTER COLUMN {name} SET COMPRESSION {method}"
        ));
    }
    if let Some(target) = column.statistics {
        statements.push(format!(
            "ALTER TABLE {table} ALTER COLUMN {name} SET STATISTICS {target}"
        ));
    }
    if let Some(comment) = &column.comment {
        statements.push(format!(
            "COMMENT ON COLUMN {table}.{name} IS {}",
            literal(comment)
        ));
    }
    statements.extend(column.grants.iter().map(|grant| {
        let mut grant = grant.clone();
        grant.privilege = format!("{} ({name})", grant.privilege);
        grant_sql(&grant, table)
    }));
    statements
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_file_and_identifier_safe() {
        assert_eq!(
            slug("drop_Accounts_legacy kind"),
            "drop_accounts_legacy_kind"
        );
        assert_eq!(slug("drop_a;_drop table x"), "drop_a_drop_table_x");
    }

    #[test]
    fn intervals_are_milliseconds() {
        assert_eq!(interval(Duration::from_secs(5)), "'5000ms'");
    }
}
