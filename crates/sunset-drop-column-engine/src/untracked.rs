//! Places PostgreSQL keeps the column's name as text rather than as a dependency: trigger
//! arguments (`tsvector_update_trigger(tsv, config, title, legacy_kind)`), the configuration
//! tables of pg_partman and pg_cron, and triggers whose code the catalog cannot show (C
//! functions), which are reported as undecided rather than passed over.

use tokio_postgres::Client;

use crate::dependents::{Change, Dependent, Rank, Stage, trigger_down};
use crate::error::Error;
use crate::findings::{Evidence, Finding, Severity};
use crate::references::contains_word;
use crate::target::Target;

/// Every untracked use of the column, in a stable order.
pub async fn find(client: &Client, target: &Target) -> Result<Vec<Dependent>, Error> {
    let mut found = trigger_arguments(client, target).await?;
    found.extend(partman_control(client, target).await?);
    found.extend(cron_jobs(client, target).await?);
    Ok(found)
}

/// The arguments of a trigger, as `CREATE TRIGGER` gave them (`tgargs` is NUL-terminated).
fn split_arguments(tgargs: &[u8]) -> Vec<String> {
    tgargs
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// Whether `text` names `name` as a whole word, in any letter case.
fn names(text: &str, name: &str) -> bool {
    contains_word(&text.to_lowercase(), &name.to_lowercase())
}

/// Triggers whose arguments name the column: on the table itself (a full-text or audit trigger
/// handed the column by name), and on other tables whose trigger function writes to this table.
/// Triggers on the table running C functions that name nothing are undecided, and say so.
async fn trigger_arguments(client: &Client, target: &Target) -> Result<Vec<Dependent>, Error> {
    let rows = client
        .query(
            "SELECT quote_ident(t.tgname), format('%I.%I', n.nspname, c.relname), pg_get_triggerdef(t.oid),
                    t.tgenabled::text, t.tgargs, t.tgrelid = $1, p.prosrc, l.lanname::text,
                    format('%I.%I', pn.nspname, p.proname)
             FROM pg_trigger t
             JOIN pg_class c ON c.oid = t.tgrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             JOIN pg_proc p ON p.oid = t.tgfoid
             JOIN pg_namespace pn ON pn.oid = p.pronamespace
             JOIN pg_language l ON l.oid = p.prolang
             WHERE NOT t.tgisinternal AND (t.tgrelid = $1 OR t.tgnargs > 0)
             ORDER BY c.relname, t.tgname",
            &[&target.oid],
        )
        .await
        .map_err(Error::db("reading trigger arguments"))?;
    let column = &target.column.name;
    let mut found = Vec::new();
    for row in rows {
        let name: String = row.get(0);
        let table: String = row.get(1);
        let definition: String = row.get(2);
        let enabled: String = row.get(3);
        let arguments = split_arguments(row.get::<_, &[u8]>(4));
        let on_table: bool = row.get(5);
        let source: String = row.get(6);
        let language: String = row.get(7);
        let function: String = row.get(8);
        let naming: Vec<&String> = arguments.iter().filter(|a| names(a, column)).collect();
        let object = format!("{table}.{name}");
        if naming.is_empty() {
            if on_table && language == "c" {
                found.push(Dependent::finding(Finding::new(
                    "opaque_trigger",
                    Severity::Warning,
                    false,
                    Evidence::Catalog,
                    object,
                    format!("runs the C function {function}, whose use of the column the catalog cannot show: {definition}"),
                    "read the function's source; the behavioural probe of `generate` (or `check --probe`) exercises writes with it",
                )));
            }
            continue;
        }
        let shown = naming
            .iter()
            .map(|a| format!("'{a}'"))
            .collect::<Vec<_>>()
            .join(", ");
        if on_table {
            found.push(Dependent {
                finding: Finding::new(
                    "trigger_argument",
                    Severity::Danger,
                    true,
                    Evidence::Catalog,
                    &object,
                    format!("its arguments name the column ({shown}), which PostgreSQL does not track; writes to the table fail after the drop: {definition}"),
                    "recreate the trigger without the column before the drop, or acknowledge to have the migration drop it (the down recreates it)",
                ),
                change: Some(Change {
                    stage: Stage::Main,
                    rank: Rank::Trigger,
                    order: 0,
                    up: vec![format!("DROP TRIGGER IF EXISTS {name} ON {table}")],
                    down: trigger_down(&definition, &name, &table, &enabled),
                }),
            });
        } else if names(&source, &target.table) || arguments.iter().any(|a| names(a, &target.table))
        {
            found.push(Dependent::finding(Finding::new(
                "trigger_argument",
                Severity::Danger,
                true,
                Evidence::Reference,
                object,
                format!("a trigger on another table that writes to {} and is handed the column by name ({shown}); writes to {table} fail after the drop: {definition}", target.table_sql),
                "change the trigger's arguments (or its function) before the drop",
            )));
        }
    }
    Ok(found)
}

/// Tables shaped like an extension's configuration table (`schema.name` with these columns),
/// whether or not the extension itself is installed in this database.
async fn config_tables(
    client: &Client,
    relname: &str,
    columns: &[&str],
) -> Result<Vec<String>, Error> {
    let columns: Vec<String> = columns.iter().map(|c| (*c).to_owned()).collect();
    let rows = client
        .query(
            "SELECT format('%I.%I', n.nspname, c.relname)
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relname = $1 AND c.relkind IN ('r', 'p')
               AND (SELECT count(*) FROM pg_attribute a
                    WHERE a.attrelid = c.oid AND NOT a.attisdropped AND a.attname = ANY ($2::text[]))
                   = cardinality($2::text[])
             ORDER BY 1",
            &[&relname, &columns],
        )
        .await
        .map_err(Error::db(format!("looking for {relname} tables")))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// pg_partman keeps the control column of each partition set by name in `part_config`.
async fn partman_control(client: &Client, target: &Target) -> Result<Vec<Dependent>, Error> {
    let mut found = Vec::new();
    let qualified = format!("{}.{}", target.schema, target.table);
    for config in config_tables(client, "part_config", &["parent_table", "control"]).await? {
        let rows = client
            .query(
                &format!(
                    "SELECT parent_table::text, control::text FROM {config}
                     WHERE lower(parent_table::text) = lower($1) OR lower(parent_table::text) = lower($2)"
                ),
                &[&qualified, &target.table_sql],
            )
            .await
            .map_err(Error::db(format!("reading {config}")))?;
        for row in rows {
            let control: String = row.get(1);
            if !names(&control, &target.column.name) {
                continue;
            }
            found.push(Dependent::finding(Finding::new(
                "partman_control",
                Severity::Danger,
                true,
                Evidence::Catalog,
                format!("{config}:{}", row.get::<_, String>(0)),
                format!("pg_partman partitions this table by the column (control = '{control}'); its maintenance fails after the drop"),
                "move the partition set to another control column (or undo the partitioning) before the drop",
            )));
        }
    }
    Ok(found)
}

/// pg_cron keeps each job's SQL as text in `cron.job`: a job naming the table and the column
/// fails on its next run after the drop.
async fn cron_jobs(client: &Client, target: &Target) -> Result<Vec<Dependent>, Error> {
    let mut found = Vec::new();
    for jobs in config_tables(client, "job", &["jobid", "command"]).await? {
        let rows = client
            .query(
                &format!("SELECT jobid::text, command::text, to_jsonb(j) ->> 'jobname' FROM {jobs} j ORDER BY jobid"),
                &[],
            )
            .await
            .map_err(Error::db(format!("reading {jobs}")))?;
        for row in rows {
            let command: String = row.get(1);
            if !(names(&command, &target.column.name) && names(&command, &target.table)) {
                continue;
            }
            let job = row
                .get::<_, Option<String>>(2)
                .unwrap_or_else(|| row.get(0));
            found.push(Dependent::finding(Finding::new(
                "scheduled_job",
                Severity::Danger,
                true,
                Evidence::Reference,
                format!("{jobs}:{job}"),
                format!("a scheduled job's SQL names the table and the column; it fails on its next run after the drop: {command}"),
                "change (or unschedule) the job before the drop",
            )));
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_arguments_split_on_nul() {
        assert_eq!(
            split_arguments(b"tsv\0pg_catalog.english\0title\0legacy_kind\0"),
            vec!["tsv", "pg_catalog.english", "title", "legacy_kind"]
        );
        assert!(split_arguments(b"").is_empty());
    }

    #[test]
    fn names_match_whole_words_in_any_case() {
        assert!(names("Legacy_Kind", "legacy_kind"));
        assert!(names("title,legacy_kind", "legacy_kind"));
        assert!(!names("legacy_kinds", "legacy_kind"));
    }
}
