//! The behavioural probe: catalog links cannot see a C trigger or dynamic SQL, so on the scratch
//! database the table is exercised before and after the up migration, in a transaction that is
//! rolled back: an INSERT of a row built from the column types and defaults (with parent rows
//! for its foreign keys), reads of each view over the table and each function that names it, an
//! UPDATE of the row and its DELETE, triggers firing as they do in production. Whatever
//! succeeded before the up and fails after it is a blocking finding with PostgreSQL's message.

use tokio_postgres::Client;

use crate::error::Error;
use crate::findings::{Evidence, Finding, Severity};

/// How deep the probe goes to build parent rows for NOT NULL foreign keys.
const MAX_PARENT_DEPTH: usize = 4;

/// What one step of the probe does to the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    Write,
    Read,
}

/// One statement of the probe and how PostgreSQL answered it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Step {
    /// `INSERT`, `UPDATE`, `DELETE`, or `SELECT FROM <view or function>`.
    pub name: String,
    pub kind: StepKind,
    /// PostgreSQL's message when it failed.
    pub error: Option<String>,
}

/// How the probe fills the columns that have no default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fill {
    /// A value of each column's type (more of the triggers' branches run).
    #[default]
    Samples,
    /// NULL where the column allows it (for CHECK constraints the samples do not meet).
    Nulls,
}

/// One run of the probe.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Exercise {
    /// How the row was built: the run after the up builds it the same way.
    pub fill: Fill,
    pub steps: Vec<Step>,
}

impl Exercise {
    /// The first step that failed, with PostgreSQL's message.
    pub fn first_failure(&self) -> Option<String> {
        self.steps
            .iter()
            .find_map(|s| Some(format!("{}: {}", s.name, s.error.as_ref()?)))
    }

    fn step(&self, name: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.name == name)
    }
}

/// Findings from the probe before and after the up: each step that worked before and fails
/// after, and a probe that could not write at all before the up (never read as safe).
pub fn compare(table: &str, before: &Exercise, after: &Exercise) -> Vec<Finding> {
    let mut findings = Vec::new();
    if let Some(Step {
        error: Some(error), ..
    }) = before.step("INSERT")
    {
        findings.push(Finding::new(
            "probe_unbuildable",
            Severity::Info,
            false,
            Evidence::Behaviour,
            table,
            format!("the behavioural probe could not insert a row before the up migration ({error}), so writes were not exercised"),
            "check the table's writes by hand on a copy of the schema after the up",
        ));
    }
    for step in &before.steps {
        let Some(later) = after.step(&step.name) else {
            continue; // a view the up removes is a catalog finding already
        };
        let (None, Some(error)) = (&step.error, &later.error) else {
            continue;
        };
        let (code, what) = match step.kind {
            StepKind::Write => ("breaks_writes", "writes to the table"),
            StepKind::Read => ("breaks_reads", "reads"),
        };
        findings.push(Finding::new(
            code,
            Severity::Danger,
            true,
            Evidence::Behaviour,
            if step.kind == StepKind::Write {
                format!("{table} {}", step.name)
            } else {
                step.name.clone()
            },
            format!(
                "{} works before the up migration and fails after it: {error}",
                step.name
            ),
            format!(
                "find what still uses the column ({what} fail after the drop) and change it first"
            ),
        ));
    }
    findings
}

/// One column as the probe fills it.
struct Column {
    name_sql: String,
    /// `format_type` of the column.
    type_sql: String,
    /// A literal of the type, when the probe knows one.
    sample: Option<String>,
    not_null: bool,
    /// Left to the table: a default, an identity or a generated column.
    defaulted: bool,
    /// Cannot be SET by an UPDATE (identity ALWAYS, generated).
    read_only: bool,
    /// A single-column foreign key: the referenced table and column.
    references: Option<(String, String)>,
}

async fn read_columns(client: &Client, table: &str) -> Result<Vec<Column>, Error> {
    let rows = client
        .query(
            "SELECT quote_ident(a.attname), format_type(a.atttypid, a.atttypmod), a.attnotnull,
                    a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> '',
                    a.attidentity = 'a' OR a.attgenerated <> '',
                    coalesce(b.typcategory, t.typcategory)::text, coalesce(b.typname, t.typname)::text,
                    (SELECT quote_literal(e.enumlabel) FROM pg_enum e
                     WHERE e.enumtypid = coalesce(b.oid, t.oid) ORDER BY e.enumsortorder LIMIT 1),
                    (SELECT format('%I.%I', rn.nspname, rc.relname) || E'\\n' || quote_ident(ra.attname)
                     FROM pg_constraint k
                     JOIN pg_class rc ON rc.oid = k.confrelid
                     JOIN pg_namespace rn ON rn.oid = rc.relnamespace
                     JOIN pg_attribute ra ON ra.attrelid = k.confrelid AND ra.attnum = k.confkey[1]
                     WHERE k.conrelid = a.attrelid AND k.contype = 'f' AND k.conkey = ARRAY[a.attnum]
                     LIMIT 1)
             FROM pg_attribute a
             JOIN pg_type t ON t.oid = a.atttypid
             LEFT JOIN pg_type b ON t.typtype = 'd' AND b.oid = t.typbasetype
             WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped
             ORDER BY a.attnum",
            &[&table],
        )
        .await
        .map_err(Error::db(format!("reading the columns of {table} for the probe")))?;
    Ok(rows
        .iter()
        .map(|row| {
            let category: String = row.get(5);
            let type_name: String = row.get(6);
            let enum_label: Option<String> = row.get(7);
            let references = row.get::<_, Option<String>>(8).and_then(|r| {
                let (table, column) = r.split_once('\n')?;
                Some((table.to_owned(), column.to_owned()))
            });
            Column {
                name_sql: row.get(0),
                type_sql: row.get(1),
                sample: enum_label.or_else(|| sample(&category, &type_name).map(quote)),
                not_null: row.get(2),
                defaulted: row.get(3),
                read_only: row.get(4),
                references,
            }
        })
        .collect())
}

fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A value of the type by its category (`pg_type.typcategory`) and name, one that satisfies
/// the usual length limits (`varchar(1)`, `numeric(1)`).
fn sample(category: &str, type_name: &str) -> Option<&'static str> {
    Some(match (category, type_name) {
        ("B", _) => "true",
        ("N", _) | ("V", _) => "1",
        ("S", _) => "x",
        ("D", "time" | "timetz") => "00:00:00",
        ("D", _) => "2000-01-01",
        ("T", _) => "1 second",
        ("A", _) => "{}",
        ("I", _) => "127.0.0.1",
        ("R", _) => "empty",
        ("U", "uuid") => "00000000-0000-0000-0000-000000000001",
        ("U", "json" | "jsonb") => "{}",
        ("U", "bytea") => "\\x00",
        ("U", "tsvector") => "",
        ("U", "xml") => "<x/>",
        ("U", "macaddr") => "08:00:2b:01:02:03",
        _ => return None,
    })
}

/// The probe on `table` (a qualified, quoted name), in a transaction that is rolled back.
/// `fill`: the way the run before the up built its row (`None`: the first that works).
pub async fn exercise(client: &Client, table: &str, fill: Option<Fill>) -> Result<Exercise, Error> {
    client
        .batch_execute("BEGIN; SET LOCAL statement_timeout = '10s'; SET LOCAL lock_timeout = '5s'")
        .await
        .map_err(Error::db("starting the probe"))?;
    let result = exercise_in_transaction(client, table, fill).await;
    let rolled_back = client.batch_execute("ROLLBACK").await;
    let exercise = result?;
    rolled_back.map_err(Error::db("rolling the probe back"))?;
    Ok(exercise)
}

async fn exercise_in_transaction(
    client: &Client,
    table: &str,
    fill: Option<Fill>,
) -> Result<Exercise, Error> {
    let columns = read_columns(client, table).await?;
    let fills = match fill {
        Some(fill) => vec![fill],
        None => vec![Fill::Samples, Fill::Nulls],
    };
    let mut inserted = Err(String::new());
    let mut used = fills[0];
    for fill in fills {
        inserted = insert(client, table, &columns, fill, 0, &mut Vec::new()).await?;
        if inserted.is_ok() {
            used = fill;
            break;
        }
    }
    let mut exercise = Exercise {
        fill: used,
        steps: Vec::new(),
    };
    let row = match inserted {
        Ok(row) => {
            exercise.steps.push(step("INSERT", StepKind::Write, None));
            Some(row)
        }
        Err(error) => {
            exercise
                .steps
                .push(step("INSERT", StepKind::Write, Some(error)));
            None
        }
    };
    for (name, sql) in reads(client, table).await? {
        let error = attempt(client, &sql).await?.err();
        exercise.steps.push(step(&name, StepKind::Read, error));
    }
    if let Some((tableoid, ctid)) = row {
        let set: Vec<String> = columns
            .iter()
            .filter(|c| !c.read_only)
            .map(|c| format!("{0} = {0}", c.name_sql))
            .collect();
        let mut at = format!("tableoid = {tableoid} AND ctid = '{ctid}'");
        if !set.is_empty() {
            let updated = attempt(
                client,
                &format!(
                    "UPDATE {table} SET {} WHERE {at} RETURNING tableoid::oid::int8, ctid::text",
                    set.join(", ")
                ),
            )
            .await?;
            if let Ok(Some((oid, tid))) = &updated {
                at = format!("tableoid = {oid} AND ctid = '{tid}'");
            }
            exercise
                .steps
                .push(step("UPDATE", StepKind::Write, updated.err()));
        }
        let deleted = attempt(client, &format!("DELETE FROM {table} WHERE {at}")).await?;
        exercise
            .steps
            .push(step("DELETE", StepKind::Write, deleted.err()));
    }
    Ok(exercise)
}

fn step(name: &str, kind: StepKind, error: Option<String>) -> Step {
    Step {
        name: name.to_owned(),
        kind,
        error,
    }
}

/// Runs one statement in a savepoint: `Ok(Err(message))` when PostgreSQL refused it, with the
/// row it returned (`tableoid`, `ctid`) when it returned one.
async fn attempt(
    client: &Client,
    sql: &str,
) -> Result<Result<Option<(i64, String)>, String>, Error> {
    client
        .batch_execute("SAVEPOINT sunset_probe")
        .await
        .map_err(Error::db("setting the probe's savepoint"))?;
    match client.query(sql, &[]).await {
        Ok(rows) => {
            client
                .batch_execute("RELEASE SAVEPOINT sunset_probe")
                .await
                .map_err(Error::db("releasing the probe's savepoint"))?;
            Ok(Ok(rows.first().and_then(|r| {
                (r.len() == 2).then(|| (r.get::<_, i64>(0), r.get::<_, String>(1)))
            })))
        }
        Err(error) => {
            client
                .batch_execute("ROLLBACK TO SAVEPOINT sunset_probe")
                .await
                .map_err(Error::db("rolling back to the probe's savepoint"))?;
            Ok(Err(error.as_db_error().map_or_else(
                || error.to_string(),
                |d| d.message().to_owned(),
            )))
        }
    }
}

/// Inserts a row into `table`: sample values for every column without a default, a parent row
/// first for each NOT NULL single-column foreign key. The row's `(tableoid, ctid)`, or why not.
async fn insert(
    client: &Client,
    table: &str,
    columns: &[Column],
    fill: Fill,
    depth: usize,
    visiting: &mut Vec<String>,
) -> Result<Result<(i64, String), String>, Error> {
    visiting.push(table.to_owned());
    let mut names = Vec::new();
    let mut values = Vec::new();
    for column in columns.iter().filter(|c| !c.defaulted) {
        let value = match &column.references {
            Some((parent, key)) if column.not_null => {
                if depth >= MAX_PARENT_DEPTH || visiting.contains(parent) {
                    return Ok(Err(format!(
                        "{} needs a row in {parent} the probe does not build",
                        column.name_sql
                    )));
                }
                let parent_columns = Box::pin(read_columns(client, parent)).await?;
                match Box::pin(insert(
                    client,
                    parent,
                    &parent_columns,
                    fill,
                    depth + 1,
                    visiting,
                ))
                .await?
                {
                    Ok((oid, tid)) => format!(
                        "(SELECT {key} FROM {parent} WHERE tableoid = {oid} AND ctid = '{tid}')"
                    ),
                    Err(error) => return Ok(Err(error)),
                }
            }
            Some(_) => "NULL".to_owned(),
            None => match &column.sample {
                Some(sample) if column.not_null || fill == Fill::Samples => {
                    format!("CAST({sample} AS {})", column.type_sql)
                }
                _ => "NULL".to_owned(),
            },
        };
        names.push(column.name_sql.clone());
        values.push(value);
    }
    let sql = if names.is_empty() {
        format!("INSERT INTO {table} DEFAULT VALUES RETURNING tableoid::oid::int8, ctid::text")
    } else {
        format!(
            "INSERT INTO {table} ({}) VALUES ({}) RETURNING tableoid::oid::int8, ctid::text",
            names.join(", "),
            values.join(", ")
        )
    };
    Ok(attempt(client, &sql).await?.and_then(|row| {
        row.ok_or_else(|| "the INSERT returned no row (a trigger or rule skipped it)".to_owned())
    }))
}

/// The reads over the table: every view and materialized view built on it, and every SQL or
/// PL/pgSQL function without arguments whose body names it (as `(name, SELECT)`).
async fn reads(client: &Client, table: &str) -> Result<Vec<(String, String)>, Error> {
    let rows = client
        .query(
            "SELECT DISTINCT format('%I.%I', n.nspname, v.relname), v.relkind = 'm'
             FROM pg_depend d
             JOIN pg_rewrite r ON r.oid = d.objid AND d.classid = 'pg_rewrite'::regclass
             JOIN pg_class v ON v.oid = r.ev_class AND v.relkind IN ('v', 'm')
             JOIN pg_namespace n ON n.oid = v.relnamespace
             WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid = $1::text::regclass
               AND v.oid <> $1::text::regclass
             ORDER BY 1",
            &[&table],
        )
        .await
        .map_err(Error::db("finding the views over the table"))?;
    let mut reads: Vec<(String, String)> = rows
        .iter()
        .map(|row| {
            let view: String = row.get(0);
            let materialized: bool = row.get(1);
            let sql = if materialized {
                format!("REFRESH MATERIALIZED VIEW {view}")
            } else {
                format!("SELECT count(*) FROM (SELECT * FROM {view}) probe")
            };
            (format!("SELECT FROM {view}"), sql)
        })
        .collect();
    let relname: String = client
        .query_one(
            "SELECT relname::text FROM pg_class WHERE oid = $1::text::regclass",
            &[&table],
        )
        .await
        .map_err(Error::db("reading the table's name"))?
        .get(0);
    let functions = client
        .query(
            "SELECT format('%I.%I', n.nspname, p.proname), p.proretset
             FROM pg_proc p
             JOIN pg_namespace n ON n.oid = p.pronamespace
             JOIN pg_language l ON l.oid = p.prolang
             WHERE p.prokind = 'f' AND p.pronargs = 0 AND l.lanname IN ('sql', 'plpgsql')
               AND p.prorettype NOT IN ('trigger'::regtype, 'event_trigger'::regtype)
               AND n.nspname NOT IN ('pg_catalog', 'information_schema')
               AND (p.prosrc ~* $1
                    OR EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                               AND d.objid = p.oid AND d.refobjid = $2::text::regclass))
             ORDER BY 1",
            &[&crate::references::word_regex(&relname), &table],
        )
        .await
        .map_err(Error::db("finding the functions that read the table"))?;
    for row in functions {
        let function: String = row.get(0);
        let set_returning: bool = row.get(1);
        let sql = if set_returning {
            format!("SELECT count(*) FROM {function}() probe")
        } else {
            format!("SELECT {function}()")
        };
        reads.push((format!("SELECT FROM {function}()"), sql));
    }
    Ok(reads)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(steps: &[(&str, StepKind, Option<&str>)]) -> Exercise {
        Exercise {
            fill: Fill::Samples,
            steps: steps
                .iter()
                .map(|(n, k, e)| step(n, *k, e.map(str::to_owned)))
                .collect(),
        }
    }

    #[test]
    fn a_step_that_starts_failing_is_blocking() {
        let before = run(&[
            ("INSERT", StepKind::Write, None),
            ("SELECT FROM public.v", StepKind::Read, None),
            ("SELECT FROM public.gone", StepKind::Read, None),
        ]);
        let after = run(&[
            (
                "INSERT",
                StepKind::Write,
                Some("column \"k\" does not exist"),
            ),
            ("SELECT FROM public.v", StepKind::Read, None),
        ]);
        let findings = compare("public.t", &before, &after);
        let codes: Vec<(&str, &str)> = findings
            .iter()
            .map(|f| (f.code, f.object.as_str()))
            .collect();
        assert_eq!(codes, [("breaks_writes", "public.t INSERT")]);
        assert!(findings[0].blocking);
        assert!(findings[0].detail.contains("does not exist"));
    }

    #[test]
    fn a_probe_that_cannot_write_is_reported_not_passed() {
        let failing = run(&[("INSERT", StepKind::Write, Some("violates check"))]);
        let findings = compare("public.t", &failing, &failing);
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].code, "probe_unbuildable");
        assert!(!findings[0].blocking);
    }

    #[test]
    fn samples_fit_narrow_types() {
        assert_eq!(sample("S", "varchar"), Some("x"));
        assert_eq!(sample("N", "numeric"), Some("1"));
        assert_eq!(sample("D", "time"), Some("00:00:00"));
        assert_eq!(sample("G", "point"), None);
    }
}
