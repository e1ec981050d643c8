//! Migration files in each runner's native layout, and what each runner will send to the server
//! (the [`Unit`]s the scratch verification runs, so the verified SQL is the shipped SQL).
//!
//! The one rule that shapes every layout: PostgreSQL runs a multi-statement string as one
//! implicit transaction, so `DROP INDEX CONCURRENTLY` must be sent alone. Runners that send a
//! file as one string (sqlx, diesel, golang-migrate, dbmate) get one migration per concurrent
//! statement; runners that split statements (psql, goose, Flyway, Rails, Django, Alembic) get one
//! non-transactional migration for all of them.
//!
//! Longer than ~600 lines: ten runner layouts, each short, kept side by side so their shared rule
//! stays visible.

use std::fmt::Write as _;
use std::path::PathBuf;

use chrono::NaiveDateTime;
use sha2::Digest;

use crate::migration::Migration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    Sql,
    Sqlx,
    Diesel,
    GolangMigrate,
    Goose,
    Dbmate,
    Flyway,
    Rails,
    Django,
    Alembic,
}

impl Format {
    pub const ALL: [Format; 10] = [
        Format::Sql,
        Format::Sqlx,
        Format::Diesel,
        Format::GolangMigrate,
        Format::Goose,
        Format::Dbmate,
        Format::Flyway,
        Format::Rails,
        Format::Django,
        Format::Alembic,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Format::Sql => "sql",
            Format::Sqlx => "sqlx",
            Format::Diesel => "diesel",
            Format::GolangMigrate => "golang-migrate",
            Format::Goose => "goose",
            Format::Dbmate => "dbmate",
            Format::Flyway => "flyway",
            Format::Rails => "rails",
            Format::Django => "django",
            Format::Alembic => "alembic",
        }
    }

    pub fn parse(text: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.name() == text)
    }

    /// Whether the runner sends a whole file (or section) to the server as one string.
    fn sends_whole_files(self) -> bool {
        matches!(
            self,
            Format::Sqlx | Format::Diesel | Format::GolangMigrate | Format::Dbmate
        )
    }
}

/// What a runner sends to the server in one go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// The runner wraps it in a transaction.
    pub transactional: bool,
    pub sql: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    /// Relative to the migrations directory.
    pub path: PathBuf,
    pub contents: String,
}

#[derive(Debug, Clone)]
pub struct Rendered {
    pub files: Vec<File>,
    pub up: Vec<Unit>,
    pub down: Vec<Unit>,
    /// How to apply, and how to roll back, with the runner's own commands.
    pub apply: String,
    pub rollback: String,
}

/// What a format needs from the migrations directory as it is.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// File and directory names already in the migrations directory.
    pub existing: Vec<String>,
    /// Django: the app label (the directory that holds `migrations/`).
    pub app_label: Option<String>,
    /// Alembic: the text of each existing revision file, to find the head.
    pub revision_files: Vec<String>,
    /// Rails: the `major.minor` of ActiveRecord the repository locks (from `Gemfile.lock`), which
    /// `ActiveRecord::Migration[...]` must name: a runner refuses a version newer than itself.
    pub rails_version: Option<String>,
}

/// Rails assumed when no `Gemfile.lock` names ActiveRecord: said in the file's header.
const RAILS_FALLBACK: &str = "7.1";

/// The `major.minor` of `activerecord` (or else `rails`) in a `Gemfile.lock`'s resolved specs,
/// the lines indented by four spaces: `    activerecord (6.1.7.10)`.
pub fn rails_version_in(lockfile: &str) -> Option<String> {
    let locked = |gem: &str| {
        lockfile.lines().find_map(|line| {
            let rest = line
                .strip_prefix("    ")?
                .strip_prefix(gem)?
                .strip_prefix(" (")?;
            let version = rest.strip_suffix(')')?;
            let mut numbers = version.split('.');
            let major = numbers.next().filter(|n| n.parse::<u32>().is_ok())?;
            let minor = numbers.next().filter(|n| n.parse::<u32>().is_ok())?;
            Some(format!("{major}.{minor}"))
        })
    };
    locked("activerecord").or_else(|| locked("rails"))
}

/// One runner migration: a group of statements that run together.
struct Part {
    name: String,
    transactional: bool,
    up: Vec<String>,
    down: Vec<String>,
}

fn parts(migration: &Migration, format: Format) -> Vec<Part> {
    let mut parts = Vec::new();
    if format.sends_whole_files() {
        for (n, step) in migration.concurrent.iter().enumerate() {
            parts.push(Part {
                name: format!("{}_index_{}", migration.name, n + 1),
                transactional: false,
                up: vec![step.up.clone()],
                down: vec![step.down.clone()],
            });
        }
    } else if !migration.concurrent.is_empty() {
        // Statements are sent one by one, so the session's timeouts can be set around them
        // (and reset, so that nothing else the runner does on this connection inherits them).
        let set = [
            format!("SET lock_timeout = {}", migration.concurrent_lock_timeout),
            "SET statement_timeout = 0".to_owned(),
        ];
        let reset = [
            "RESET lock_timeout".to_owned(),
            "RESET statement_timeout".to_owned(),
        ];
        let around = |steps: Vec<String>| -> Vec<String> {
            set.iter()
                .cloned()
                .chain(steps)
                .chain(reset.iter().cloned())
                .collect()
        };
        parts.push(Part {
            name: format!("{}_indexes", migration.name),
            transactional: false,
            up: around(migration.concurrent.iter().map(|s| s.up.clone()).collect()),
            down: around(
                migration
                    .concurrent
                    .iter()
                    .rev()
                    .map(|s| s.down.clone())
                    .collect(),
            ),
        });
    }
    parts.push(Part {
        name: migration.name.clone(),
        transactional: true,
        up: migration.main_up.clone(),
        down: migration.main_down.clone(),
    });
    parts
}

/// Why a file that a runner sends as one string sets no timeouts.
const WHOLE_FILE_TIMEOUTS: &str = "\
-- No lock_timeout or statement_timeout here: the runner sends this file as one string, and a SET
-- beside a CONCURRENTLY statement would make it a transaction block, which CONCURRENTLY refuses.
-- CONCURRENTLY blocks neither reads nor writes; to bound its wait for older transactions, set
-- lock_timeout on the role that runs migrations (ALTER ROLE ... SET lock_timeout = '5s').
";

fn script(statements: &[String]) -> String {
    statements
        .iter()
        .map(|s| format!("{s};\n"))
        .collect::<String>()
}

fn header(migration: &Migration, direction: &str, part: &Part) -> String {
    let mut text = format!(
        "-- sunset-drop-column: drop {} ({direction}{}).\n-- Verified up, down, up on a scratch copy of the schema before it was written.\n",
        migration.subject,
        if part.transactional {
            ""
        } else {
            ", no transaction: CONCURRENTLY statements run alone"
        }
    );
    if !part.transactional && part.up.len() == 1 {
        text.push_str(WHOLE_FILE_TIMEOUTS);
    }
    if direction.contains("down") && part.transactional {
        let _ = writeln!(text, "-- {}", migration.down_label());
        for note in &migration.notes {
            let _ = writeln!(text, "-- {note}");
        }
    }
    text
}

/// The units a runner sends for `parts` in one direction (downs run parts in reverse).
fn units(parts: &[Part], format: Format, up: bool) -> Vec<Unit> {
    let ordered: Vec<&Part> = if up {
        parts.iter().collect()
    } else {
        parts.iter().rev().collect()
    };
    let mut units = Vec::new();
    for part in ordered {
        let statements = if up { &part.up } else { &part.down };
        if part.transactional {
            let sql = script(statements);
            units.push(match format {
                // These runners do not open a transaction: the file carries BEGIN and COMMIT.
                Format::Sql | Format::GolangMigrate => Unit {
                    transactional: false,
                    sql: format!("BEGIN;\n{sql}COMMIT;\n"),
                },
                _ => Unit {
                    transactional: true,
                    sql,
                },
            });
        } else {
            units.extend(statements.iter().map(|s| Unit {
                transactional: false,
                sql: format!("{s};\n"),
            }));
        }
    }
    units
}

pub fn render(
    format: Format,
    migration: &Migration,
    version: NaiveDateTime,
    context: &Context,
) -> Rendered {
    let parts = parts(migration, format);
    let count = parts.len();
    let stamp = |n: usize, pattern: &str| {
        (version + chrono::Duration::seconds(n as i64))
            .format(pattern)
            .to_string()
    };
    let mut files = Vec::new();
    let (apply, rollback);
    match format {
        Format::Sql => {
            let v = stamp(0, "%Y%m%d%H%M%S");
            let concurrent: Vec<&Part> = parts.iter().filter(|p| !p.transactional).collect();
            let main = parts.iter().find(|p| p.transactional).expect("a main part");
            let mut up = header(migration, "up", main);
            let mut down = header(migration, "down", main);
            for part in &concurrent {
                up.push_str("\n-- No transaction: CONCURRENTLY cannot run inside one.\n");
                up.push_str(&script(&part.up));
            }
            let _ = write!(up, "\nBEGIN;\n{}COMMIT;\n", script(&main.up));
            let _ = write!(down, "\nBEGIN;\n{}COMMIT;\n", script(&main.down));
            for part in concurrent.iter().rev() {
                down.push_str("\n-- No transaction: CONCURRENTLY cannot run inside one.\n");
                down.push_str(&script(&part.down));
            }
            let name = &migration.name;
            files.push(file(format!("{v}_{name}.up.sql"), up));
            files.push(file(format!("{v}_{name}.down.sql"), down));
            apply = format!("psql -v ON_ERROR_STOP=1 -f {v}_{name}.up.sql");
            rollback = format!("psql -v ON_ERROR_STOP=1 -f {v}_{name}.down.sql");
        }
        Format::Sqlx | Format::GolangMigrate => {
            for (n, part) in parts.iter().enumerate() {
                let v = stamp(n, "%Y%m%d%H%M%S");
                let directive = if format == Format::Sqlx && !part.transactional {
                    "-- no-transaction\n"
                } else {
                    ""
                };
                let wrap = |body: String| {
                    if format == Format::GolangMigrate && part.transactional {
                        format!("BEGIN;\n{body}COMMIT;\n")
                    } else {
                        body
                    }
                };
                for (direction, statements) in [("up", &part.up), ("down", &part.down)] {
                    files.push(file(
                        format!("{v}_{}.{direction}.sql", part.name),
                        format!(
                            "{directive}{}\n{}",
                            header(migration, direction, part),
                            wrap(script(statements))
                        ),
                    ));
                }
            }
            if format == Format::Sqlx {
                apply = "sqlx migrate run".to_owned();
                rollback = format!("sqlx migrate revert   # {count} time(s), newest first");
            } else {
                apply = "migrate -path <migrations dir> -database \"$DATABASE_URL\" up".to_owned();
                rollback = format!(
                    "migrate -path <migrations dir> -database \"$DATABASE_URL\" down {count}"
                );
            }
        }
        Format::Diesel => {
            for (n, part) in parts.iter().enumerate() {
                let dir = format!("{}_{}", stamp(n, "%Y-%m-%d-%H%M%S"), part.name);
                for (direction, statements) in [("up", &part.up), ("down", &part.down)] {
                    files.push(file(
                        format!("{dir}/{direction}.sql"),
                        format!(
                            "{}\n{}",
                            header(migration, direction, part),
                            script(statements)
                        ),
                    ));
                }
                if !part.transactional {
                    files.push(file(
                        format!("{dir}/metadata.toml"),
                        "# CONCURRENTLY cannot run inside a transaction.\nrun_in_transaction = false\n".to_owned(),
                    ));
                }
            }
            apply = "diesel migration run".to_owned();
            rollback = format!("diesel migration revert -n {count}");
        }
        Format::Goose => {
            for (n, part) in parts.iter().enumerate() {
                let mut text = String::new();
                if !part.transactional {
                    text.push_str("-- +goose NO TRANSACTION\n");
                }
                text.push_str(&header(migration, "up and down", part));
                for (marker, statements) in [("Up", &part.up), ("Down", &part.down)] {
                    let _ = writeln!(text, "\n-- +goose {marker}");
                    for statement in statements {
                        let _ = write!(
                            text,
                            "-- +goose StatementBegin\n{statement};\n-- +goose StatementEnd\n"
                        );
                    }
                }
                files.push(file(
                    format!("{}_{}.sql", stamp(n, "%Y%m%d%H%M%S"), part.name),
                    text,
                ));
            }
            apply = "goose -dir <migrations dir> postgres \"$DATABASE_URL\" up".to_owned();
            rollback = format!(
                "goose -dir <migrations dir> postgres \"$DATABASE_URL\" down   # {count} time(s)"
            );
        }
        Format::Dbmate => {
            for (n, part) in parts.iter().enumerate() {
                let option = if part.transactional {
                    ""
                } else {
                    " transaction:false"
                };
                let text = format!(
                    "{}\n-- migrate:up{option}\n{}\n-- migrate:down{option}\n{}",
                    header(migration, "up and down", part),
                    script(&part.up),
                    script(&part.down)
                );
                files.push(file(
                    format!("{}_{}.sql", stamp(n, "%Y%m%d%H%M%S"), part.name),
                    text,
                ));
            }
            apply = "dbmate up".to_owned();
            rollback = format!("dbmate rollback   # {count} time(s)");
        }
        Format::Flyway => {
            for (n, part) in parts.iter().enumerate() {
                let v = stamp(n, "%Y%m%d%H%M%S");
                files.push(file(
                    format!("V{v}__{}.sql", part.name),
                    format!("{}\n{}", header(migration, "up", part), script(&part.up)),
                ));
                files.push(file(
                    format!("U{v}__{}.sql", part.name),
                    format!(
                        "{}\n{}",
                        header(migration, "down", part),
                        script(&part.down)
                    ),
                ));
            }
            apply = "flyway migrate".to_owned();
            rollback = format!(
                "flyway undo   # {count} time(s) (Flyway Teams), or run the U*.sql files newest first with psql"
            );
        }
        Format::Rails => {
            for (n, part) in parts.iter().enumerate() {
                files.push(file(
                    format!("{}_{}.rb", stamp(n, "%Y%m%d%H%M%S"), part.name),
                    rails(migration, part, context.rails_version.as_deref()),
                ));
            }
            apply = "bin/rails db:migrate".to_owned();
            rollback = format!("bin/rails db:rollback STEP={count}");
        }
        Format::Django => {
            let app = context
                .app_label
                .clone()
                .unwrap_or_else(|| "app".to_owned());
            let (mut number, mut previous) = django_previous(context, &migration.name);
            let before = previous.clone();
            for part in &parts {
                number += 1;
                let name = format!("{number:04}_{}", part.name);
                files.push(file(
                    format!("{name}.py"),
                    django(migration, part, &app, previous.as_deref()),
                ));
                previous = Some(name);
            }
            apply = format!("python manage.py migrate {app}");
            rollback = format!(
                "python manage.py migrate {app} {}",
                before.as_deref().unwrap_or("zero")
            );
        }
        Format::Alembic => {
            let head = alembic_head(context, &migration.name);
            let revision = alembic_revision(migration, version);
            files.push(file(
                format!("{revision}_{}.py", migration.name),
                alembic(migration, &parts, &revision, head.as_deref()),
            ));
            apply = "alembic upgrade head".to_owned();
            rollback = "alembic downgrade -1".to_owned();
        }
    }
    Rendered {
        files,
        up: units(&parts, format, true),
        down: units(&parts, format, false),
        apply,
        rollback,
    }
}

fn file(path: String, contents: String) -> File {
    File {
        path: PathBuf::from(path),
        contents,
    }
}

fn camel(name: &str) -> String {
    name.split('_')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut chars = p.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect()
}

fn ruby_heredoc(statement: &str, indent: &str) -> String {
    let mut text = format!("{indent}execute <<~'SQL'\n");
    for line in statement.lines() {
        let _ = writeln!(text, "{indent}  {line}");
    }
    let _ = writeln!(text, "{indent}SQL");
    text
}

fn rails(migration: &Migration, part: &Part, locked: Option<&str>) -> String {
    let mut text = String::new();
    for line in header(migration, "up and down", part).lines() {
        let _ = writeln!(text, "#{}", line.trim_start_matches("--"));
    }
    if locked.is_none() {
        let _ = writeln!(
            text,
            "# No Gemfile.lock above the migrations directory names activerecord: Rails {RAILS_FALLBACK} assumed."
        );
    }
    let _ = writeln!(
        text,
        "class {} < ActiveRecord::Migration[{}]",
        camel(&part.name),
        locked.unwrap_or(RAILS_FALLBACK)
    );
    if !part.transactional {
        text.push_str(
            "  # CONCURRENTLY cannot run inside a transaction.\n  disable_ddl_transaction!\n\n",
        );
    }
    for (method, statements) in [("up", &part.up), ("down", &part.down)] {
        let _ = writeln!(text, "  def {method}");
        if method == "down" && part.transactional {
            let _ = writeln!(text, "    # {}", migration.down_label());
        }
        for statement in statements {
            text.push_str(&ruby_heredoc(statement, "    "));
        }
        text.push_str("  end\n");
        if method == "up" {
            text.push('\n');
        }
    }
    text.push_str("end\n");
    text
}

/// A Python string literal: triple-quoted when that is safe, else JSON (valid Python too).
fn python_string(text: &str) -> String {
    if !text.contains("\"\"\"") && !text.contains('\\') && !text.ends_with('"') {
        format!("\"\"\"\n{text}\n\"\"\"")
    } else {
        serde_json::to_string(text).unwrap_or_default()
    }
}

fn python_list(statements: &[String], indent: &str) -> String {
    let mut text = String::from("[\n");
    for statement in statements {
        let _ = writeln!(text, "{indent}    {},", python_string(statement));
    }
    let _ = write!(text, "{indent}]");
    text
}

fn python_header(migration: &Migration, part_transactional: bool) -> String {
    let mut text = format!(
        "# sunset-drop-column: drop {}.\n# Verified up, down, up on a scratch copy of the schema before it was written.\n",
        migration.subject
    );
    if part_transactional {
        let _ = writeln!(text, "# {}", migration.down_label());
        for note in &migration.notes {
            let _ = writeln!(text, "# {note}");
        }
    }
    text
}

/// The highest existing migration number and name, leaving out this drop's own files.
fn django_previous(context: &Context, name: &str) -> (u32, Option<String>) {
    context
        .existing
        .iter()
        .filter(|f| f.ends_with(".py") && !f.contains(name))
        .filter_map(|f| {
            let stem = f.trim_end_matches(".py");
            let number: u32 = stem.split('_').next()?.parse().ok()?;
            Some((number, Some(stem.to_owned())))
        })
        .max()
        .unwrap_or((0, None))
}

fn django(migration: &Migration, part: &Part, app: &str, previous: Option<&str>) -> String {
    let dependencies = match previous {
        Some(previous) => format!("[(\"{app}\", \"{previous}\")]"),
        None => "[]".to_owned(),
    };
    format!(
        "{}\nfrom django.db import migrations\n\n\nclass Migration(migrations.Migration):\n{}    dependencies = {dependencies}\n\n    # Database only: also remove the field from the model (it no longer exists after this).\n    operations = [\n        migrations.RunSQL(\n            sql={},\n            reverse_sql={},\n        ),\n    ]\n",
        python_header(migration, part.transactional),
        if part.transactional {
            ""
        } else {
            "    # CONCURRENTLY cannot run inside a transaction.\n    atomic = False\n"
        },
        python_list(&part.up, "            "),
        python_list(&part.down, "            "),
    )
}

/// The revision no other revision names as its `down_revision`, leaving out this drop's own.
fn alembic_head(context: &Context, name: &str) -> Option<String> {
    let field = |text: &str, key: &str| -> Option<String> {
        text.lines().find_map(|line| {
            let rest = line.trim().strip_prefix(key)?.trim_start();
            let rest = rest
                .strip_prefix(':')
                .map_or(rest, |r| r.split_once('=').map_or(r, |(_, v)| v));
            let value = rest.trim_start().strip_prefix('=')?.trim();
            let value = value.trim_matches(|c| c == '"' || c == '\'');
            (value != "None" && !value.is_empty()).then(|| value.to_owned())
        })
    };
    let revisions: Vec<(String, Option<String>)> = context
        .revision_files
        .iter()
        .filter(|text| !text.contains(&format!("sunset-drop-column: {name}")))
        .filter_map(|text| Some((field(text, "revision")?, field(text, "down_revision"))))
        .collect();
    let mut heads: Vec<&String> = revisions
        .iter()
        .map(|(r, _)| r)
        .filter(|r| !revisions.iter().any(|(_, down)| down.as_ref() == Some(*r)))
        .collect();
    heads.sort();
    heads.first().map(|h| (*h).clone())
}

fn alembic_revision(migration: &Migration, version: NaiveDateTime) -> String {
    let digest = sha2::Sha256::digest(format!("{}@{version}", migration.name));
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

fn alembic(migration: &Migration, parts: &[Part], revision: &str, head: Option<&str>) -> String {
    let mut upgrade = String::new();
    let mut downgrade = String::new();
    let execute = |out: &mut String, statements: &[String], indent: &str| {
        for statement in statements {
            let _ = writeln!(out, "{indent}op.execute({})", python_string(statement));
        }
    };
    for part in parts {
        if part.transactional {
            execute(&mut upgrade, &part.up, "    ");
        } else {
            upgrade.push_str("    # CONCURRENTLY cannot run inside a transaction.\n    with op.get_context().autocommit_block():\n");
            execute(&mut upgrade, &part.up, "        ");
        }
    }
    for part in parts.iter().rev() {
        if part.transactional {
            execute(&mut downgrade, &part.down, "    ");
        } else {
            downgrade.push_str("    with op.get_context().autocommit_block():\n");
            execute(&mut downgrade, &part.down, "        ");
        }
    }
    let down_revision = head.map_or("None".to_owned(), |h| format!("\"{h}\""));
    format!(
        "\"\"\"drop {subject}\n\nRevision ID: {revision}\nRevises: {revises}\n\"\"\"\n{header}# sunset-drop-column: {name}\nfrom alembic import op\n\nrevision = \"{revision}\"\ndown_revision = {down_revision}\nbranch_labels = None\ndepends_on = None\n\n\ndef upgrade():\n{upgrade}\n\ndef downgrade():\n{downgrade}",
        subject = migration.subject,
        revises = head.unwrap_or(""),
        header = python_header(migration, true),
        name = migration.name,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migration::ConcurrentStep;

    fn migration() -> Migration {
        Migration {
            name: "drop_accounts_legacy_kind".to_owned(),
            subject: "public.accounts.legacy_kind".to_owned(),
            concurrent_lock_timeout: "'5000ms'".to_owned(),
            concurrent: vec![
                ConcurrentStep {
                    up: "DROP INDEX CONCURRENTLY IF EXISTS public.a".to_owned(),
                    down: "CREATE INDEX CONCURRENTLY a ON public.accounts USING btree (legacy_kind)".to_owned(),
                },
                ConcurrentStep {
                    up: "DROP INDEX CONCURRENTLY IF EXISTS public.b".to_owned(),
                    down: "CREATE INDEX CONCURRENTLY b ON public.accounts USING btree (legacy_kind, id)".to_owned(),
                },
            ],
            main_up: vec!["SET LOCAL lock_timeout = '5000ms'".to_owned(), "ALTER TABLE public.accounts DROP COLUMN legacy_kind".to_owned()],
            main_down: vec!["SET LOCAL lock_timeout = '5000ms'".to_owned(), "ALTER TABLE public.accounts ADD COLUMN legacy_kind text".to_owned()],
            data_restoring: false,
            notes: vec![],
        }
    }

    fn version() -> NaiveDateTime {
        NaiveDateTime::parse_from_str("2026-11-23 10:00:00", "%Y-%m-%d %H:%M:%S").expect("a date")
    }

    #[test]
    fn whole_file_runners_get_one_concurrent_statement_per_migration() {
        for format in [
            Format::Sqlx,
            Format::Diesel,
            Format::GolangMigrate,
            Format::Dbmate,
        ] {
            let rendered = render(format, &migration(), version(), &Context::default());
            let concurrent: Vec<&Unit> = rendered.up.iter().filter(|u| !u.transactional).collect();
            assert!(
                concurrent
                    .iter()
                    .filter(|u| u.sql.contains("CONCURRENTLY"))
                    .all(|u| u.sql.matches(';').count() == 1),
                "{format:?}: {concurrent:?}"
            );
        }
    }

    #[test]
    fn sqlx_directive_is_the_first_line() {
        let rendered = render(Format::Sqlx, &migration(), version(), &Context::default());
        let names: Vec<String> = rendered
            .files
            .iter()
            .map(|f| f.path.display().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "20261123100000_drop_accounts_legacy_kind_index_1.up.sql",
                "20261123100000_drop_accounts_legacy_kind_index_1.down.sql",
                "20261123100001_drop_accounts_legacy_kind_index_2.up.sql",
                "20261123100001_drop_accounts_legacy_kind_index_2.down.sql",
                "20261123100002_drop_accounts_legacy_kind.up.sql",
                "20261123100002_drop_accounts_legacy_kind.down.sql",
            ]
        );
        assert!(
            rendered.files[0]
                .contents
                .starts_with("-- no-transaction\n")
        );
        assert!(!rendered.files[4].contents.contains("no-transaction"));
    }

    #[test]
    fn downs_run_in_reverse() {
        let rendered = render(Format::Sqlx, &migration(), version(), &Context::default());
        assert!(rendered.down[0].sql.contains("ADD COLUMN"));
        assert!(rendered.down[1].sql.contains("CREATE INDEX CONCURRENTLY b"));
        assert!(rendered.down[2].sql.contains("CREATE INDEX CONCURRENTLY a"));
    }

    #[test]
    fn django_numbers_after_the_latest_migration() {
        let context = Context {
            existing: vec![
                "0001_initial.py".into(),
                "0002_accounts.py".into(),
                "__init__.py".into(),
            ],
            app_label: Some("billing".into()),
            ..Context::default()
        };
        let rendered = render(Format::Django, &migration(), version(), &context);
        assert_eq!(
            rendered.files[0].path,
            PathBuf::from("0003_drop_accounts_legacy_kind_indexes.py")
        );
        assert!(
            rendered.files[0]
                .contents
                .contains("(\"billing\", \"0002_accounts\")")
        );
        assert!(rendered.files[0].contents.contains("atomic = False"));
        assert!(
            rendered.files[1]
                .contents
                .contains("(\"billing\", \"0003_drop_accounts_legacy_kind_indexes\")")
        );
        assert_eq!(
            rendered.rollback,
            "python manage.py migrate billing 0002_accounts"
        );
    }

    #[test]
    fn alembic_revises_the_head() {
        let context = Context {
            revision_files: vec![
                "revision = \"aaa\"\ndown_revision = None\n".into(),
                "revision = 'bbb'\ndown_revision = 'aaa'\n".into(),
            ],
            ..Context::default()
        };
        let rendered = render(Format::Alembic, &migration(), version(), &context);
        assert!(
            rendered.files[0]
                .contents
                .contains("down_revision = \"bbb\"")
        );
        assert!(rendered.files[0].contents.contains("autocommit_block"));
    }

    #[test]
    fn rails_names_the_locked_activerecord() {
        let lockfile = "GEM\n  remote: https://rubygems.org/\n  specs:\n    actionpack (6.1.7.10)\n      rack (~> 2.0)\n    activerecord (6.1.7.10)\n      activemodel (= 6.1.7.10)\n    rails (6.1.7.10)\n";
        assert_eq!(rails_version_in(lockfile).as_deref(), Some("6.1"));
        assert_eq!(
            rails_version_in("    rails (7.2.1)\n").as_deref(),
            Some("7.2")
        );
        // A dependency line (six spaces, a requirement) is not the resolved version.
        assert_eq!(rails_version_in("      activerecord (= 6.1.7)\n"), None);
        let context = Context {
            rails_version: Some("6.1".into()),
            ..Context::default()
        };
        let rendered = render(Format::Rails, &migration(), version(), &context);
        assert!(
            rendered.files[0]
                .contents
                .contains("ActiveRecord::Migration[6.1]")
        );
        let unlocked = render(Format::Rails, &migration(), version(), &Context::default());
        assert!(unlocked.files[0].contents.contains("Rails 7.1 assumed"));
    }

    #[test]
    fn python_strings_stay_valid() {
        assert_eq!(python_string("a \\ b"), "\"a \\\\ b\"");
        assert!(python_string("SELECT 1").starts_with("\"\"\""));
    }
}
