//! Every format's files up, down, up against PostgreSQL, with the catalog compared after the
//! down. Formats whose runner cannot be installed here (goose, golang-migrate, Flyway) are
//! applied the way their runner applies them (a file as one string, a section per transaction,
//! statements split, ...); `runners.rs` runs the real sqlx, diesel, dbmate, Alembic, Django and
//! ActiveRecord. Ruby and Python files are also checked for the runner's structure.

use crate::support;

use std::path::{Path, PathBuf};

use support::{BASE, Db, text};

/// The column has what a real one has (a collation, a default, NOT NULL, a non-default storage,
/// compression and statistics target, a comment, a grant) and a dependent of every kind the check
/// knows, so the round trip is judged on all of them.
const DEPENDENTS: &str = "
    CREATE TABLE kinds (kind text COLLATE \"C\" PRIMARY KEY);
    INSERT INTO kinds VALUES ('personal'), ('business');
    ALTER TABLE accounts ALTER COLUMN legacy_kind TYPE text COLLATE \"C\";
    ALTER TABLE accounts ALTER COLUMN legacy_kind SET DEFAULT 'personal';
    ALTER TABLE accounts ALTER COLUMN legacy_kind SET NOT NULL;
    ALTER TABLE accounts ALTER COLUMN legacy_kind SET STORAGE MAIN;
    ALTER TABLE accounts ALTER COLUMN legacy_kind SET COMPRESSION pglz;
    ALTER TABLE accounts ALTER COLUMN legacy_kind SET STATISTICS 500;
    CREATE INDEX kind_idx ON accounts (legacy_kind);
    CREATE INDEX tenant_kind_idx ON accounts (tenant_id, legacy_kind);
    CREATE INDEX commented_kind_idx ON accounts (legacy_kind, type);
    COMMENT ON INDEX commented_kind_idx IS 'for the kind report';
    CREATE VIEW account_kinds AS SELECT id, legacy_kind FROM accounts;
    ALTER TABLE accounts ADD CONSTRAINT kind_known CHECK (legacy_kind IN ('personal', 'business'));
    ALTER TABLE accounts ADD CONSTRAINT kind_listed FOREIGN KEY (legacy_kind) REFERENCES kinds (kind);
    COMMENT ON COLUMN accounts.legacy_kind IS 'the old kind';
    DO $$ BEGIN CREATE ROLE sunset_test_reader; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$;
    GRANT SELECT (legacy_kind) ON accounts TO sunset_test_reader;
    CREATE TABLE kind_log (kind text);
    CREATE RULE log_kind AS ON DELETE TO accounts DO ALSO INSERT INTO kind_log VALUES (OLD.legacy_kind);
    ALTER TABLE accounts ENABLE ROW LEVEL SECURITY;
    CREATE POLICY business_only ON accounts FOR SELECT USING (legacy_kind = 'business');
    CREATE FUNCTION note_kind() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
    CREATE TRIGGER kind_changed BEFORE UPDATE OF legacy_kind ON accounts
        FOR EACH ROW EXECUTE FUNCTION note_kind();
    CREATE TRIGGER business_inserted BEFORE INSERT ON accounts
        FOR EACH ROW WHEN (NEW.legacy_kind = 'business') EXECUTE FUNCTION note_kind();
    ALTER TABLE accounts DISABLE TRIGGER business_inserted;
    CREATE PUBLICATION kinds_pub FOR TABLE accounts (id, legacy_kind);
    CREATE STATISTICS kind_tenant_stats (dependencies) ON tenant_id, legacy_kind FROM accounts;
    ALTER TABLE accounts ADD COLUMN kind_label text GENERATED ALWAYS AS (upper(legacy_kind)) STORED;
    CREATE SEQUENCE kind_seq OWNED BY accounts.legacy_kind;
";

/// PostgreSQL 18's computed-on-read generated columns: the down must not turn one into STORED.
const VIRTUAL_GENERATED: &str = "ALTER TABLE accounts ADD COLUMN kind_initial text GENERATED ALWAYS AS (left(legacy_kind, 1)) VIRTUAL;";

/// What the fixture's findings need acknowledged for `generate` to proceed.
const ALLOW: [&str; 22] = [
    "--allow",
    "composite_index",
    "--allow",
    "view",
    "--allow",
    "check_constraint",
    "--allow",
    "partial_index",
    "--allow",
    "rule",
    "--allow",
    "foreign_key",
    "--allow",
    "policy",
    "--allow",
    "trigger",
    "--allow",
    "update_of_trigger",
    "--allow",
    "generated_column",
    "--allow",
    "publication_column_list",
];

pub(crate) fn generate(db: &Db, format: &str, dir: &Path, extra: &[&str]) {
    let mut args = vec![
        "generate",
        "--table",
        "accounts",
        "--column",
        "legacy_kind",
        "--format",
        format,
        "--migrations-dir",
        dir.to_str().unwrap(),
        "--timestamp",
        "20261123100000",
    ];
    args.extend_from_slice(&ALLOW);
    args.extend_from_slice(extra);
    let output = db.run(&args, Path::new("."));
    assert!(
        output.status.success(),
        "generate --format {format}: {}",
        text(&output)
    );
}

pub(crate) fn files(dir: &Path) -> Vec<PathBuf> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            all.extend(files(&path));
        } else {
            all.push(path);
        }
    }
    all.sort();
    all
}

/// Every file `generate` wrote for `format`, pinned: what a reviewer reads in the pull request.
/// Files the test put there itself (empty ones) are left out.
pub(crate) fn pin(db: &Db, format: &str, dir: &Path, variant: &str) {
    let mut all = String::new();
    for path in files(dir) {
        let contents = read(&path);
        if contents.is_empty() {
            continue;
        }
        let name = path.strip_prefix(dir).unwrap().display().to_string();
        all.push_str(&format!("==> {name} <==\n{contents}\n"));
    }
    expect_test::expect_file![format!(
        "{}/migrations/{format}{variant}.txt",
        support::snapshots(db)
    )]
    .assert_eq(&all);
}

pub(crate) fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

/// psql and Flyway send statements one by one; ours end with `;` at the end of a line.
fn statements(sql: &str) -> Vec<String> {
    sql.split(";\n")
        .map(|s| {
            s.lines()
                .filter(|l| !l.trim_start().starts_with("--"))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .filter(|s| !s.trim().is_empty())
        .collect()
}

fn in_transaction(db: &Db, sql: &str) {
    if let Err(error) = db.try_exec(&format!("BEGIN;\n{sql}\nCOMMIT;")) {
        let _ = db.try_exec("ROLLBACK");
        panic!("{error}\n{sql}");
    }
}

fn alone(db: &Db, sql: &str) {
    db.try_exec(sql).unwrap_or_else(|e| panic!("{e}\n{sql}"));
}

/// Applies the migrations in `dir` one way, as `format`'s runner would.
fn apply(db: &Db, format: &str, dir: &Path, up: bool) {
    let all = files(dir);
    let pick = |suffix: &str| -> Vec<PathBuf> {
        let mut chosen: Vec<PathBuf> = all
            .iter()
            .filter(|p| p.to_str().unwrap().ends_with(suffix))
            .cloned()
            .collect();
        if !up {
            chosen.reverse();
        }
        chosen
    };
    let direction = if up { "up" } else { "down" };
    match format {
        "sql" => {
            for statement in statements(&read(&pick(&format!(".{direction}.sql"))[0])) {
                alone(db, &statement);
            }
        }
        "golang-migrate" => {
            for file in pick(&format!(".{direction}.sql")) {
                alone(db, &read(&file));
            }
        }
        "goose" => {
            for file in pick(".sql") {
                let sql = read(&file);
                let (ups, downs) = sql.split_once("-- +goose Down").unwrap();
                let section = if up { ups } else { downs };
                let blocks: Vec<String> = section
                    .split("-- +goose StatementBegin\n")
                    .skip(1)
                    .map(|b| b.split("-- +goose StatementEnd").next().unwrap().to_owned())
                    .collect();
                if sql.starts_with("-- +goose NO TRANSACTION") {
                    blocks.iter().for_each(|b| alone(db, b));
                } else {
                    in_transaction(db, &blocks.concat());
                }
            }
        }
        "flyway" => {
            let prefix = if up { "/V" } else { "/U" };
            let mut chosen: Vec<PathBuf> = all
                .iter()
                .filter(|p| p.to_str().unwrap().contains(prefix))
                .cloned()
                .collect();
            if !up {
                chosen.reverse();
            }
            for file in chosen {
                let parts = statements(&read(&file));
                if parts.iter().any(|s| s.contains("CONCURRENTLY")) {
                    parts.iter().for_each(|s| alone(db, s));
                } else {
                    in_transaction(
                        db,
                        &parts.iter().map(|s| format!("{s};\n")).collect::<String>(),
                    );
                }
            }
        }
        other => panic!("no runner for {other}"),
    }
}

fn kind_values(db: &Db) -> Vec<String> {
    db.strings("SELECT id::text || '=' || coalesce(legacy_kind, 'NULL') FROM accounts ORDER BY id")
}

fn up_down_up(format: &str, restore_data: bool) {
    round_trip(
        format,
        restore_data,
        &|root| root.join("migrations"),
        &|db, dir, up| apply(db, format, dir, up),
    );
}

/// Tables a runner keeps its own bookkeeping in: not part of what the down must restore.
const BOOKKEEPING: [&str; 5] = [
    "schema_migrations",
    "_sqlx_migrations",
    "ar_internal_metadata",
    "alembic_version",
    "django_migrations",
];

fn without_bookkeeping(lines: Vec<String>) -> Vec<String> {
    lines
        .into_iter()
        .filter(|line| !BOOKKEEPING.iter().any(|table| line.contains(table)))
        .collect()
}

/// Generates `format`'s files into the directory `layout` makes under a fresh project root,
/// then `run` (the runner, real or imitated) applies them up, down and up: after the down,
/// `pg_dump --schema-only` and the catalog equal what they were before the up (runner
/// bookkeeping aside), and the data is restored exactly when `--restore-data` was asked for.
pub(crate) fn round_trip(
    format: &str,
    restore_data: bool,
    layout: &dyn Fn(&Path) -> PathBuf,
    run: &dyn Fn(&Db, &Path, bool),
) {
    let db = Db::new(&format!("format_{}", format.replace('-', "_")));
    db.exec(BASE);
    db.exec(DEPENDENTS);
    if db.major() >= 18 {
        db.exec(VIRTUAL_GENERATED);
    }
    let dir = tempfile::tempdir().unwrap();
    let migrations = layout(dir.path());
    std::fs::create_dir_all(&migrations).unwrap();
    let project_files = files(&migrations);
    generate(
        &db,
        format,
        &migrations,
        if restore_data {
            &["--restore-data"]
        } else {
            &[]
        },
    );
    pin(
        &db,
        format,
        &migrations,
        if restore_data { "-restore-data" } else { "" },
    );
    for path in files(&migrations) {
        let contents = read(&path);
        if contents.is_empty()
            || path.extension().is_some_and(|e| e == "toml")
            || project_files.contains(&path)
        {
            continue;
        }
        assert!(
            !contents.to_uppercase().contains("CASCADE"),
            "{format}: {} uses CASCADE:\n{contents}",
            path.display()
        );
        assert!(
            contents.contains("lock_timeout") && contents.contains("statement_timeout"),
            "{format}: {} sets no lock_timeout and statement_timeout:\n{contents}",
            path.display()
        );
    }
    let before = db.catalog();
    let dump_before = support::schema_dump(&db);
    let values = kind_values(&db);
    run(&db, &migrations, true);
    assert!(
        db.strings("SELECT attname::text FROM pg_attribute WHERE attrelid = 'accounts'::regclass AND attname = 'legacy_kind' AND NOT attisdropped").is_empty(),
        "{format}: the up drops the column"
    );
    run(&db, &migrations, false);
    // pg_dump is the oracle; the engine's own snapshot must agree with it.
    let dump_difference = sunset_drop_column_engine::snapshot::difference(
        &without_bookkeeping(dump_before),
        &without_bookkeeping(support::schema_dump(&db)),
    );
    assert!(
        dump_difference.is_empty(),
        "{format}: after the down, pg_dump --schema-only differs from before the up:\n{}",
        dump_difference.join("\n")
    );
    let after = db.catalog();
    let difference = sunset_drop_column_engine::snapshot::difference(
        &without_bookkeeping(before),
        &without_bookkeeping(after),
    );
    assert!(
        difference.is_empty(),
        "{format}: down does not restore the catalog:\n{}",
        difference.join("\n")
    );
    if restore_data {
        assert_eq!(
            kind_values(&db),
            values,
            "{format}: the data-restoring down restores every value"
        );
    } else {
        assert!(
            kind_values(&db).iter().all(|v| v.ends_with("=personal")),
            "{format}: a schema-only down gives every row the column's default"
        );
    }
    run(&db, &migrations, true);
    assert!(
        db.strings("SELECT attname::text FROM pg_attribute WHERE attrelid = 'accounts'::regclass AND attname = 'legacy_kind' AND NOT attisdropped").is_empty(),
        "{format}: the second up drops the column again"
    );
    let label = files(&migrations)
        .iter()
        .map(|p| read(p))
        .collect::<String>();
    let expected = if restore_data {
        "DATA-RESTORING"
    } else {
        "SCHEMA-ONLY"
    };
    assert!(
        label.contains(expected),
        "{format}: the down is labelled {expected}"
    );
}

#[test]
fn plain_sql_up_down_up() {
    up_down_up("sql", false);
}

#[test]
fn plain_sql_restores_data() {
    up_down_up("sql", true);
}

#[test]
fn golang_migrate_up_down_up() {
    up_down_up("golang-migrate", false);
}

#[test]
fn goose_up_down_up() {
    up_down_up("goose", true);
}

#[test]
fn flyway_up_down_up() {
    up_down_up("flyway", true);
}

#[test]
fn rails_files_have_the_runners_structure() {
    let db = Db::new("format_rails");
    db.exec(BASE);
    db.exec(DEPENDENTS);
    let dir = tempfile::tempdir().unwrap();
    let migrate = dir.path().join("db/migrate");
    generate(&db, "rails", &migrate, &[]);
    pin(&db, "rails", &migrate, "");
    let names: Vec<String> = files(&migrate)
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        names,
        [
            "20261123100000_drop_accounts_legacy_kind_indexes.rb",
            "20261123100001_drop_accounts_legacy_kind.rb"
        ]
    );
    let indexes = read(&migrate.join(&names[0]));
    assert!(indexes.contains("class DropAccountsLegacyKindIndexes < ActiveRecord::Migration[7.1]"));
    assert!(indexes.contains("  disable_ddl_transaction!\n"));
    assert!(indexes.contains("DROP INDEX CONCURRENTLY IF EXISTS public.kind_idx"));
    let main = read(&migrate.join(&names[1]));
    assert!(main.contains("class DropAccountsLegacyKind < ActiveRecord::Migration[7.1]"));
    assert!(!main.contains("disable_ddl_transaction!"));
    assert!(main.contains("  def up\n") && main.contains("  def down\n"));
    assert!(main.contains("ALTER TABLE public.accounts DROP COLUMN legacy_kind"));
    assert_eq!(
        main.matches("execute <<~'SQL'").count(),
        main.matches("\n    SQL\n").count()
    );
    assert_eq!(
        main.matches("def ").count() + main.matches("class ").count(),
        main.matches("\nend\n").count() + main.matches("  end\n").count()
    );
}

fn python_compiles(path: &Path) {
    let Ok(output) = std::process::Command::new("python3")
        .arg("-m")
        .arg("py_compile")
        .arg(path)
        .output()
    else {
        return; // python3 is not everywhere; the structure assertions still ran
    };
    assert!(
        output.status.success(),
        "{}: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn django_files_have_the_runners_structure() {
    let db = Db::new("format_django");
    db.exec(BASE);
    db.exec(DEPENDENTS);
    let dir = tempfile::tempdir().unwrap();
    let migrations = dir.path().join("billing/migrations");
    std::fs::create_dir_all(&migrations).unwrap();
    std::fs::write(migrations.join("0001_initial.py"), "").unwrap();
    std::fs::write(migrations.join("__init__.py"), "").unwrap();
    generate(&db, "django", &migrations, &[]);
    pin(&db, "django", &migrations, "");
    let first = migrations.join("0002_drop_accounts_legacy_kind_indexes.py");
    let second = migrations.join("0003_drop_accounts_legacy_kind.py");
    assert!(read(&first).contains("atomic = False"));
    assert!(read(&first).contains("dependencies = [(\"billing\", \"0001_initial\")]"));
    assert!(
        read(&second)
            .contains("dependencies = [(\"billing\", \"0002_drop_accounts_legacy_kind_indexes\")]")
    );
    assert!(read(&second).contains("migrations.RunSQL(") && read(&second).contains("reverse_sql="));
    python_compiles(&first);
    python_compiles(&second);
}

#[test]
fn alembic_files_have_the_runners_structure() {
    let db = Db::new("format_alembic");
    db.exec(BASE);
    db.exec(DEPENDENTS);
    let dir = tempfile::tempdir().unwrap();
    let versions = dir.path().join("alembic/versions");
    std::fs::create_dir_all(&versions).unwrap();
    std::fs::write(
        versions.join("1a2b_create_accounts.py"),
        "revision = \"1a2b\"\ndown_revision = None\n",
    )
    .unwrap();
    generate(&db, "alembic", &versions, &[]);
    pin(&db, "alembic", &versions, "");
    let generated: Vec<PathBuf> = files(&versions)
        .into_iter()
        .filter(|p| p.to_str().unwrap().contains("drop_accounts"))
        .collect();
    assert_eq!(generated.len(), 1);
    let source = read(&generated[0]);
    assert!(source.contains("down_revision = \"1a2b\""), "{source}");
    assert!(source.contains("def upgrade():") && source.contains("def downgrade():"));
    assert!(source.contains("with op.get_context().autocommit_block():"));
    python_compiles(&generated[0]);
}

/// Over verified TLS, pg_dump and psql (the scratch database) get the same sslmode and CA.
#[test]
fn generate_over_verified_tls() {
    let db = Db::new("format_tls");
    db.exec(BASE);
    db.exec("CREATE INDEX kind_idx ON accounts (legacy_kind)");
    let Some(ca) = sunset_test_support::tls_ca_file() else {
        return;
    };
    let url = format!(
        "{}?sslmode=verify-full&sslrootcert={ca}",
        db.url.replacen("@127.0.0.1:", "@localhost:", 1)
    );
    let dir = tempfile::tempdir().unwrap();
    let migrations = dir.path().join("migrations");
    let output = std::process::Command::new(support::BIN)
        .args([
            "generate",
            "--table",
            "accounts",
            "--column",
            "legacy_kind",
            "--format",
            "sql",
            "--migrations-dir",
            migrations.to_str().unwrap(),
        ])
        .envs(sunset_test_support::service_env())
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(files(&migrations).len(), 2);
}

/// PostgreSQL 18's VIRTUAL generated column as the column dropped: the down brings it back
/// VIRTUAL (pg_dump is the judge). Runs on 18 and newer; `cargo xtask test` runs it there.
#[test]
fn a_virtual_generated_column_comes_back_virtual() {
    let db = Db::new("format_virtual");
    if db.major() < 18 {
        sunset_test_support::not_run(&format!(
            "VIRTUAL generated columns arrived in PostgreSQL 18; this server is {}",
            db.major()
        ));
        return;
    }
    db.exec(BASE);
    db.exec(
        "ALTER TABLE accounts DROP COLUMN legacy_kind;
         ALTER TABLE accounts ADD COLUMN legacy_kind text GENERATED ALWAYS AS (lower(type)) VIRTUAL;",
    );
    let dir = tempfile::tempdir().unwrap();
    let migrations = dir.path().join("migrations");
    generate(&db, "sql", &migrations, &[]);
    let before = support::schema_dump(&db);
    apply(&db, "sql", &migrations, true);
    apply(&db, "sql", &migrations, false);
    let difference =
        sunset_drop_column_engine::snapshot::difference(&before, &support::schema_dump(&db));
    assert!(difference.is_empty(), "{}", difference.join("\n"));
    // pg_dump prints a VIRTUAL column without a keyword and a stored one with STORED.
    assert!(
        before
            .iter()
            .any(|s| s.contains("legacy_kind text GENERATED ALWAYS AS (lower(type))\n")),
        "the fixture's column is VIRTUAL: {before:?}"
    );
}
