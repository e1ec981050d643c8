//! Uses of the column PostgreSQL does not track: function bodies, the application's source tree,
//! and recent queries in `pg_stat_statements`.

use std::path::{Path, PathBuf};

use tokio_postgres::Client;

use crate::dependents::{Change, Dependent, Rank, Stage, trigger_down};
use crate::error::Error;
use crate::findings::{Evidence, Finding, Severity};
use crate::target::Target;

/// Code references reported one by one before the rest are summed up.
const MAX_CODE_FINDINGS: usize = 50;
/// Files larger than this are data, not code.
const MAX_FILE_BYTES: u64 = 4 << 20;

/// The column name as a PostgreSQL regular expression matching it as a whole word.
pub(crate) fn word_regex(name: &str) -> String {
    let escaped: String = name
        .chars()
        .flat_map(|c| {
            let escape = !(c.is_alphanumeric() || c == '_');
            escape.then_some('\\').into_iter().chain([c])
        })
        .collect();
    format!("\\m{escaped}\\M")
}

/// Functions and procedures whose source mentions the column. PostgreSQL checks PL/pgSQL bodies
/// only when they run, so after the drop these fail at run time, not at deploy time.
pub async fn function_bodies(client: &Client, target: &Target) -> Result<Vec<Dependent>, Error> {
    let rows = client
        .query(
            "SELECT format('%I.%I(%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)),
                    p.prosrc, l.lanname::text,
                    array(SELECT quote_ident(t.tgname) || E'\n' || pg_get_triggerdef(t.oid) || E'\n' || t.tgenabled::text
                          FROM pg_trigger t
                          WHERE t.tgfoid = p.oid AND t.tgrelid = $1 AND NOT t.tgisinternal ORDER BY t.tgname),
                    EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                            AND d.refclassid = 'pg_class'::regclass AND d.refobjid = $1 AND d.refobjsubid = $2::int4)
             FROM pg_proc p
             JOIN pg_namespace n ON n.oid = p.pronamespace
             JOIN pg_language l ON l.oid = p.prolang
             WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
               AND l.lanname NOT IN ('c', 'internal')
               AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = 'pg_proc'::regclass AND e.objid = p.oid AND e.deptype = 'e')
               AND (p.prosrc ~* $3
                    OR EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                               AND d.refclassid = 'pg_class'::regclass AND d.refobjid = $1 AND d.refobjsubid = $2::int4))
             ORDER BY 1",
            &[
                &target.oid,
                &i32::from(target.column.attnum),
                &word_regex(&target.column.name),
            ],
        )
        .await
        .map_err(Error::db("searching function bodies"))?;
    let mut findings = Vec::new();
    for row in rows {
        let function: String = row.get(0);
        let source: String = row.get(1);
        let language: String = row.get(2);
        let triggers: Vec<String> = row.get(3);
        let tracked: bool = row.get(4);
        let lines = matching_lines(&source, &target.column.name, true);
        let shown = lines
            .iter()
            .take(3)
            .map(|(n, text)| format!("line {n}: {text}"))
            .collect::<Vec<_>>()
            .join("; ");
        if tracked {
            findings.push(Dependent::finding(Finding::new(
                "function_dependency",
                Severity::Danger,
                true,
                Evidence::Catalog,
                &function,
                format!("a SQL-standard body PostgreSQL tracks as using the column; the drop fails without CASCADE. {shown}"),
                "rewrite the function without the column before the drop",
            )));
            continue;
        }
        let detail = format!(
            "{language} source mentions `{}`: {shown}",
            target.column.name
        );
        if triggers.is_empty() {
            findings.push(Dependent::finding(Finding::new(
                "function_body",
                Severity::Danger,
                true,
                Evidence::Reference,
                &function,
                detail,
                "rewrite the function without the column before the drop (it would fail when called)",
            )));
        } else {
            for trigger in &triggers {
                let mut fields = trigger.splitn(3, '\n');
                let (Some(name), Some(definition), Some(enabled)) =
                    (fields.next(), fields.next(), fields.next())
                else {
                    continue;
                };
                let table = &target.table_sql;
                findings.push(Dependent {
                    finding: Finding::new(
                        "trigger_function_body",
                        Severity::Danger,
                        true,
                        Evidence::Reference,
                        format!("{table}.{name}"),
                        format!("runs {function}, whose {detail}; writes to the table fail after the drop"),
                        "rewrite the function, or acknowledge to have the migration drop the trigger (the down recreates it)",
                    ),
                    change: Some(Change {
                        stage: Stage::Main,
                        rank: Rank::Trigger,
                        order: 0,
                        up: vec![format!("DROP TRIGGER IF EXISTS {name} ON {table}")],
                        down: trigger_down(definition, name, table, enabled),
                    }),
                });
            }
        }
    }
    Ok(findings)
}

/// Lines of `text` that mention `name` as a whole word: `(1-based line, trimmed line)`.
fn matching_lines(text: &str, name: &str, case_insensitive: bool) -> Vec<(usize, String)> {
    let needle = if case_insensitive {
        name.to_lowercase()
    } else {
        name.to_owned()
    };
    text.lines()
        .enumerate()
        .filter(|(_, line)| {
            if case_insensitive {
                contains_word(&line.to_lowercase(), &needle)
            } else {
                contains_word(line, &needle)
            }
        })
        .map(|(n, line)| (n + 1, shorten(line.trim())))
        .collect()
}

fn shorten(line: &str) -> String {
    if line.chars().count() > 160 {
        format!("{}...", line.chars().take(157).collect::<String>())
    } else {
        line.to_owned()
    }
}

/// Whether `word` occurs in `line` with no identifier character on either side.
pub(crate) fn contains_word(line: &str, word: &str) -> bool {
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    line.match_indices(word).any(|(at, _)| {
        let before = line[..at].chars().next_back();
        let after = line[at + word.len()..].chars().next();
        !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
    })
}

/// The spellings application code uses for a column: as written (`legacy_kind`, also inside
/// quotes or as a Ruby symbol), camelCase (`legacyKind`) and PascalCase (`LegacyKind`).
fn spellings(name: &str) -> Vec<(&'static str, String)> {
    let mut out = vec![("as written", name.to_owned())];
    if !name.contains('_') {
        return out;
    }
    let mut camel = String::new();
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = !camel.is_empty();
        } else if upper {
            camel.extend(c.to_uppercase());
            upper = false;
        } else {
            camel.push(c);
        }
    }
    let mut pascal: String = camel.chars().take(1).flat_map(char::to_uppercase).collect();
    pascal.extend(camel.chars().skip(1));
    if camel != name {
        out.push(("camelCase", camel.clone()));
    }
    if pascal != camel && pascal != name {
        out.push(("PascalCase", pascal));
    }
    out
}

/// How `line` spells the column, if it does: the spelling and, for the name as written, whether
/// it stands quoted (`"legacy_kind"`) or as a symbol (`:legacy_kind`).
fn spelling_in(line: &str, spellings: &[(&'static str, String)]) -> Option<String> {
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    for (style, needle) in spellings {
        for (at, _) in line.match_indices(needle.as_str()) {
            let before = line[..at].chars().next_back();
            let after = line[at + needle.len()..].chars().next();
            if before.is_some_and(is_ident) || after.is_some_and(is_ident) {
                continue;
            }
            let form = match (before, after) {
                (Some(q @ ('"' | '\'' | '`')), Some(r)) if q == r => format!("{q}{needle}{q}"),
                (Some(':'), _) if !line[..at].ends_with("::") => format!(":{needle}"),
                _ => needle.clone(),
            };
            return Some(format!("`{form}` ({style})"));
        }
    }
    None
}

/// Whether a path is a migration or a schema dump: history, not live code.
fn is_migration_history(relative: &Path) -> bool {
    let name = relative
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    matches!(name, "schema.rb" | "structure.sql" | "schema.sql")
        || relative.components().any(|c| {
            matches!(
                c.as_os_str().to_str(),
                Some("migrations" | "migrate" | "db_migrations" | "alembic" | "versions")
            )
        })
}

/// Searches the source tree at `repo` (respecting .gitignore and hidden files) for the column,
/// as written and in camelCase. `skip` names paths (migration output) that are not evidence.
pub fn code_references(
    repo: &Path,
    target: &Target,
    skip: &[PathBuf],
) -> Result<Vec<Finding>, Error> {
    if !repo.is_dir() {
        return Err(Error::BadInput(format!(
            "--repo {}: not a directory",
            repo.display()
        )));
    }
    let needles = spellings(&target.column.name);
    let mut hits: Vec<(PathBuf, usize, String)> = Vec::new();
    let walker = ignore::WalkBuilder::new(repo)
        .hidden(true)
        .git_ignore(true)
        .require_git(false)
        .sort_by_file_path(|a, b| a.cmp(b))
        .build();
    for entry in walker {
        let entry = entry.map_err(|e| Error::Tool(format!("walking {}: {e}", repo.display())))?;
        if !entry.file_type().is_some_and(|t| t.is_file()) {
            continue;
        }
        let path = entry.path();
        if skip.iter().any(|s| path.starts_with(s))
            || path.file_name().is_some_and(|n| n == "PULL_REQUEST.md")
            || entry.metadata().map(|m| m.len()).unwrap_or(0) > MAX_FILE_BYTES
        {
            continue;
        }
        let Ok(bytes) = std::fs::read(path) else {
            continue;
        };
        if bytes.iter().take(8192).any(|b| *b == 0) {
            continue; // binary
        }
        let text = String::from_utf8_lossy(&bytes);
        let relative = path.strip_prefix(repo).unwrap_or(path).to_path_buf();
        for (n, line) in text.lines().enumerate() {
            if let Some(spelling) = spelling_in(line, &needles) {
                hits.push((
                    relative.clone(),
                    n + 1,
                    format!("{spelling}: {}", shorten(line.trim())),
                ));
            }
        }
    }
    let (history, live): (Vec<_>, Vec<_>) = hits
        .into_iter()
        .partition(|(path, _, _)| is_migration_history(path));
    let mut findings: Vec<Finding> = live
        .iter()
        .take(MAX_CODE_FINDINGS)
        .map(|(path, line, text)| {
            Finding::new(
                "code_reference",
                Severity::Danger,
                true,
                Evidence::Reference,
                format!("{}:{line}", path.display()),
                text.clone(),
                "remove the use (or ship the code that stops using the column) before the drop",
            )
        })
        .collect();
    if live.len() > MAX_CODE_FINDINGS {
        findings.push(Finding::new(
            "code_reference",
            Severity::Danger,
            true,
            Evidence::Reference,
            format!("{} more", live.len() - MAX_CODE_FINDINGS),
            format!(
                "{} references in all; the first {MAX_CODE_FINDINGS} are listed",
                live.len()
            ),
            "search the repository for the column",
        ));
    }
    if !history.is_empty() {
        let files: std::collections::BTreeSet<String> = history
            .iter()
            .map(|(p, _, _)| p.display().to_string())
            .collect();
        findings.push(Finding::new(
            "migration_reference",
            Severity::Info,
            false,
            Evidence::Reference,
            files.iter().next().cloned().unwrap_or_default(),
            format!(
                "{} mentions in {} migration or schema file(s): {}",
                history.len(),
                files.len(),
                files.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
            ),
            "none: history; regenerate schema dumps after the migration",
        ));
    }
    Ok(findings)
}

/// Recent statements naming the column, from `pg_stat_statements` (when it is installed in this
/// database and loaded). sunset's own statements (naming the `sunset` schema) are left out.
pub async fn live_use(client: &Client, target: &Target) -> Result<Vec<Finding>, Error> {
    let view: Option<String> = client
        .query_opt(
            "SELECT format('%I.pg_stat_statements', n.nspname) FROM pg_extension e
             JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pg_stat_statements'",
            &[],
        )
        .await
        .map_err(Error::db("looking for pg_stat_statements"))?
        .map(|r| r.get(0));
    let unknown = |why: String| {
        Ok(vec![Finding::new(
            "live_use_unknown",
            Severity::Info,
            false,
            Evidence::LiveUse,
            "pg_stat_statements",
            why,
            "CREATE EXTENSION pg_stat_statements (with it in shared_preload_libraries) to see live use; check the application's query logs meanwhile",
        )])
    };
    let Some(view) = view else {
        return unknown("the extension is not installed in this database, so recent use of the column is unknown".to_owned());
    };
    let rows = client
        .query(
            &format!(
                "SELECT s.query, s.calls::int8 FROM {view} s
                 WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
                   AND s.query ~* $1
                   AND s.query ~* '^\\s*(with|select|insert|update|delete|merge)\\M'
                   AND s.query !~* '\\msunset\\.'
                 ORDER BY s.calls DESC LIMIT 20"
            ),
            &[&word_regex(&target.column.name)],
        )
        .await;
    let rows = match rows {
        Ok(rows) => rows,
        Err(error) => {
            let message = error
                .as_db_error()
                .map_or_else(|| error.to_string(), |d| d.message().to_owned());
            return unknown(format!("pg_stat_statements cannot be read: {message}"));
        }
    };
    // Other roles' statement texts read as `<insufficient privilege>` without pg_read_all_stats:
    // their uses of the column would be missed silently.
    let hidden: i64 = client
        .query_one(
            &format!(
                "SELECT count(*) FROM {view} s
                 WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
                   AND s.query = '<insufficient privilege>'"
            ),
            &[],
        )
        .await
        .map_err(Error::db("reading pg_stat_statements"))?
        .get(0);
    let mut findings = if hidden > 0 {
        unknown(format!(
            "{hidden} statements of other roles are hidden from this role (it lacks pg_read_all_stats), so their use of the column is unknown"
        ))?
    } else {
        Vec::new()
    };
    findings.extend(rows.iter().map(|row| {
        let query: String = row.get(0);
        let calls: i64 = row.get(1);
        Finding::new(
            "recent_queries",
            Severity::Danger,
            true,
            Evidence::LiveUse,
            shorten(&query.split_whitespace().collect::<Vec<_>>().join(" ")),
            format!("{calls} calls since statistics were last reset"),
            "find and remove the caller; pg_stat_statements_reset() and watch that it stays gone",
        )
    }));
    Ok(findings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_words_only() {
        assert!(contains_word("SELECT legacy_kind FROM t", "legacy_kind"));
        assert!(contains_word("row.legacy_kind", "legacy_kind"));
        assert!(!contains_word("legacy_kind_v2", "legacy_kind"));
        assert!(!contains_word("my_legacy_kind", "legacy_kind"));
        assert!(contains_word(":legacy_kind,", "legacy_kind"));
    }

    #[test]
    fn spellings_of_a_column() {
        let all = spellings("legacy_kind");
        let words: Vec<&str> = all.iter().map(|(_, w)| w.as_str()).collect();
        assert_eq!(words, ["legacy_kind", "legacyKind", "LegacyKind"]);
        assert_eq!(spellings("kind").len(), 1);
        let find = |line: &str| spelling_in(line, &all);
        assert_eq!(
            find("t.legacy_kind = 1").as_deref(),
            Some("`legacy_kind` (as written)")
        );
        assert_eq!(
            find(r#"row["legacy_kind"]"#).as_deref(),
            Some(r#"`"legacy_kind"` (as written)"#)
        );
        assert_eq!(
            find("validates :legacy_kind").as_deref(),
            Some("`:legacy_kind` (as written)")
        );
        assert_eq!(
            find("account.legacyKind").as_deref(),
            Some("`legacyKind` (camelCase)")
        );
        assert_eq!(
            find("enum LegacyKind {").as_deref(),
            Some("`LegacyKind` (PascalCase)")
        );
        assert_eq!(find("my_legacy_kind_v2"), None);
    }

    #[test]
    fn regex_escapes_everything_but_word_characters() {
        assert_eq!(word_regex("legacy_kind"), "\\mlegacy_kind\\M");
        assert_eq!(word_regex("a.b"), "\\ma\\.b\\M");
    }

    #[test]
    fn migration_history_is_told_apart() {
        assert!(is_migration_history(Path::new("db/migrate/2020_add.rb")));
        assert!(is_migration_history(Path::new("db/schema.rb")));
        assert!(is_migration_history(Path::new("app/migrations/0001.py")));
        assert!(!is_migration_history(Path::new("app/models/account.rb")));
    }
}
