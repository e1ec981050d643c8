//! Uses of the column PostgreSQL keeps as text or cannot see at all. Each test builds the use,
//! expects `check` to block on it, then proves the drop really breaks it by doing the drop in a
//! transaction that is rolled back.

use crate::support;

use support::{BASE, Db, codes};

/// `check --json` on `accounts.legacy_kind` with `extra` arguments: the exit code and the
/// finding with `code` (panics when there is none).
fn finding(db: &Db, extra: &[&str], code: &str) -> (i32, serde_json::Value) {
    let mut args = vec!["--table", "accounts", "--column", "legacy_kind"];
    args.extend_from_slice(extra);
    let (exit, json) = db.check(&args);
    let found = json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == code)
        .cloned()
        .unwrap_or_else(|| panic!("no {code} finding in {:?}", codes(&json)));
    (exit, found)
}

/// `sql` run after the column is dropped, in a transaction rolled back: PostgreSQL's error.
fn fails_after_drop(db: &Db, table: &str, sql: &str) -> String {
    db.try_exec(&format!(
        "BEGIN; ALTER TABLE {table} DROP COLUMN legacy_kind; {sql}"
    ))
    .expect_err("the statement fails once the column is gone")
}

fn rollback(db: &Db) {
    db.exec("ROLLBACK");
}

#[test]
fn a_trigger_handed_the_column_by_name_blocks() {
    let db = Db::new("trigger_argument");
    db.exec(BASE);
    db.exec(
        "ALTER TABLE accounts ADD COLUMN search tsvector;
         CREATE TRIGGER accounts_search BEFORE INSERT OR UPDATE ON accounts FOR EACH ROW
         EXECUTE FUNCTION tsvector_update_trigger(search, 'pg_catalog.english', type, legacy_kind)",
    );
    let (exit, found) = finding(&db, &[], "trigger_argument");
    assert_eq!(exit, 1, "{found}");
    assert_eq!(found["object"], "public.accounts.accounts_search");
    assert_eq!(found["blocking"], true);
    assert!(
        found["detail"].as_str().unwrap().contains("'legacy_kind'"),
        "{found}"
    );
    let error = fails_after_drop(
        &db,
        "accounts",
        "INSERT INTO accounts (tenant_id) VALUES (1)",
    );
    rollback(&db);
    assert!(error.contains("legacy_kind"), "{error}");
}

#[test]
fn a_trigger_on_another_table_writing_the_column_by_name_blocks() {
    let db = Db::new("trigger_argument_elsewhere");
    db.exec(BASE);
    db.exec(
        "CREATE TABLE signups (tenant_id int, kind text);
         CREATE FUNCTION copy_signup() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           EXECUTE format('INSERT INTO public.accounts (tenant_id, %I) VALUES ($1, $2)', TG_ARGV[0])
             USING NEW.tenant_id, NEW.kind;
           RETURN NEW;
         END $$;
         CREATE TRIGGER signup_copy AFTER INSERT ON signups FOR EACH ROW
         EXECUTE FUNCTION copy_signup('legacy_kind')",
    );
    let (exit, found) = finding(&db, &[], "trigger_argument");
    assert_eq!(exit, 1);
    assert_eq!(found["object"], "public.signups.signup_copy");
    let error = fails_after_drop(
        &db,
        "accounts",
        "INSERT INTO signups VALUES (1, 'personal')",
    );
    rollback(&db);
    assert!(error.contains("legacy_kind"), "{error}");
}

#[test]
fn a_publication_row_filter_on_the_column_blocks() {
    let db = Db::new("publication_row_filter");
    db.exec(BASE);
    db.exec("CREATE PUBLICATION personal_only FOR TABLE accounts WHERE (legacy_kind = 'personal')");
    let (exit, found) = finding(&db, &[], "publication_row_filter");
    assert_eq!(exit, 1);
    assert_eq!(found["object"], "personal_only");
    // PostgreSQL refuses the plain drop; with CASCADE the table would leave the publication.
    let error = db
        .try_exec("BEGIN; ALTER TABLE accounts DROP COLUMN legacy_kind")
        .expect_err("the drop fails without CASCADE");
    rollback(&db);
    assert!(error.contains("depend"), "{error}");
}

#[test]
fn a_partitions_own_index_on_the_column_is_reported() {
    let db = Db::new("child_index");
    db.exec(
        "CREATE TABLE accounts (id int NOT NULL, tenant_id int, legacy_kind text) PARTITION BY RANGE (id);
         CREATE TABLE accounts_1 PARTITION OF accounts FOR VALUES FROM (0) TO (1000);
         CREATE INDEX accounts_1_tenant_kind ON accounts_1 (tenant_id, legacy_kind);
         CREATE INDEX accounts_kind ON accounts (legacy_kind)",
    );
    let (exit, found) = finding(&db, &[], "child_index");
    assert_eq!(exit, 1);
    assert_eq!(found["object"], "public.accounts_1_tenant_kind");
    let (_, json) = db.check(&["--table", "accounts", "--column", "legacy_kind"]);
    let child_indexes: Vec<String> = codes(&json)
        .into_iter()
        .filter(|(c, _)| c == "child_index")
        .map(|(_, o)| o)
        .collect();
    assert_eq!(
        child_indexes,
        ["public.accounts_1_tenant_kind"],
        "the partition's copy of the parent's index is the parent's finding"
    );
    // The drop takes the partition's own index with it, without a word.
    db.exec("BEGIN; ALTER TABLE accounts DROP COLUMN legacy_kind");
    let left = db.int("SELECT count(*) FROM pg_class WHERE relname = 'accounts_1_tenant_kind'");
    rollback(&db);
    assert_eq!(left, 0);
}

#[test]
fn a_scheduled_job_and_a_partman_control_column_block() {
    let db = Db::new("extension_config");
    db.exec(BASE);
    // Shaped as pg_cron and pg_partman keep them (the extensions are not installed here).
    db.exec(
        "CREATE SCHEMA cron;
         CREATE TABLE cron.job (jobid bigserial PRIMARY KEY, schedule text, command text, jobname text);
         INSERT INTO cron.job (schedule, command, jobname)
         VALUES ('0 3 * * *', 'UPDATE public.accounts SET legacy_kind = lower(legacy_kind)', 'nightly-kind'),
                ('0 4 * * *', 'VACUUM public.accounts', 'vacuum');
         CREATE SCHEMA partman;
         CREATE TABLE partman.part_config (parent_table text PRIMARY KEY, control text NOT NULL);
         INSERT INTO partman.part_config VALUES ('public.accounts', 'legacy_kind')",
    );
    let (exit, job) = finding(&db, &[], "scheduled_job");
    assert_eq!(exit, 1);
    assert_eq!(job["object"], "cron.job:nightly-kind");
    let (_, control) = finding(&db, &[], "partman_control");
    assert_eq!(control["object"], "partman.part_config:public.accounts");
    let (_, json) = db.check(&["--table", "accounts", "--column", "legacy_kind"]);
    assert!(
        !codes(&json).iter().any(|(_, o)| o == "cron.job:vacuum"),
        "a job that does not name the column is not a finding"
    );
    let command = db
        .text("SELECT command FROM cron.job WHERE jobname = 'nightly-kind'")
        .unwrap();
    let error = fails_after_drop(&db, "accounts", &command);
    rollback(&db);
    assert!(error.contains("legacy_kind"), "{error}");
}

#[test]
fn code_search_finds_every_spelling_and_says_which() {
    let db = Db::new("spellings");
    db.exec(BASE);
    let repo = tempfile::tempdir().unwrap();
    for (path, text) in [
        ("app/kind.rb", "validates :legacy_kind, presence: true\n"),
        ("web/kind.ts", "type Kind = { legacyKind: string };\n"),
        ("svc/Kind.cs", "public enum LegacyKind { Personal }\n"),
        ("py/kind.py", "row[\"legacy_kind\"]\n"),
    ] {
        let full = repo.path().join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, text).unwrap();
    }
    let (exit, json) = db.check(&[
        "--table",
        "accounts",
        "--column",
        "legacy_kind",
        "--repo",
        repo.path().to_str().unwrap(),
    ]);
    assert_eq!(exit, 1);
    let details: Vec<(String, String)> = json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["code"] == "code_reference")
        .map(|f| {
            (
                f["object"].as_str().unwrap().to_owned(),
                f["detail"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for (object, spelling) in [
        ("app/kind.rb:1", "`:legacy_kind` (as written)"),
        ("web/kind.ts:1", "`legacyKind` (camelCase)"),
        ("svc/Kind.cs:1", "`LegacyKind` (PascalCase)"),
        ("py/kind.py:1", "`\"legacy_kind\"` (as written)"),
    ] {
        assert!(
            details
                .iter()
                .any(|(o, d)| o == object && d.starts_with(spelling)),
            "{object} with {spelling} in {details:?}"
        );
    }
}

/// A trigger that reads the column through dynamic SQL: no catalog link, no mention by name.
const DYNAMIC_TRIGGER: &str = "
    CREATE FUNCTION accounts_audit() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE old_kind text;
    BEGIN
      EXECUTE 'SELECT ($1).' || 'legacy' || '_kind' INTO old_kind USING NEW;
      RETURN NEW;
    END $$;
    CREATE TRIGGER accounts_audit BEFORE INSERT OR UPDATE ON accounts
    FOR EACH ROW EXECUTE FUNCTION accounts_audit();
";

#[test]
fn the_probe_catches_a_breaking_drop_no_catalog_link_shows() {
    let db = Db::new("probe_writes");
    db.exec(BASE);
    db.exec(DYNAMIC_TRIGGER);
    db.exec(
        "CREATE FUNCTION kinds() RETURNS SETOF text LANGUAGE plpgsql AS $$
         BEGIN RETURN QUERY EXECUTE 'SELECT ' || 'legacy' || '_kind FROM public.accounts'; END $$",
    );
    let (exit, json) = db.check(&["--table", "accounts", "--column", "legacy_kind"]);
    assert_eq!(exit, 0, "the catalog alone sees nothing: {json}");
    let (exit, writes) = finding(&db, &["--probe"], "breaks_writes");
    assert_eq!(exit, 1);
    assert_eq!(writes["object"], "public.accounts INSERT");
    assert_eq!(writes["evidence"], "behaviour");
    assert!(
        writes["detail"].as_str().unwrap().contains("legacy_kind"),
        "PostgreSQL's own message: {writes}"
    );
    let (_, reads) = finding(&db, &["--probe"], "breaks_reads");
    assert_eq!(reads["object"], "SELECT FROM public.kinds()");
    let error = fails_after_drop(
        &db,
        "accounts",
        "INSERT INTO accounts (tenant_id) VALUES (1)",
    );
    rollback(&db);
    assert!(error.contains("legacy_kind"), "{error}");
    let error = fails_after_drop(&db, "accounts", "SELECT count(*) FROM public.kinds()");
    rollback(&db);
    assert!(error.contains("legacy_kind"), "{error}");
    assert_eq!(
        db.int("SELECT count(*) FROM accounts"),
        200,
        "the probe wrote nothing to the real table"
    );
}

#[test]
fn generate_refuses_what_the_probe_finds() {
    let db = Db::new("probe_generate");
    db.exec(BASE);
    db.exec(DYNAMIC_TRIGGER);
    let dir = tempfile::tempdir().unwrap();
    let migrations = dir.path().join("migrations");
    let output = db.run(
        &[
            "generate",
            "--table",
            "accounts",
            "--column",
            "legacy_kind",
            "--format",
            "sql",
            "--migrations-dir",
            migrations.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert_eq!(
        sunset_test_support::harness::code(&output),
        1,
        "{}",
        support::text(&output)
    );
    assert!(support::text(&output).contains("breaks_writes"));
    assert!(!migrations.exists(), "nothing was written");
}

/// `check --probe -v` on `accounts.legacy_kind`: the exit code, the findings (but the one about
/// pg_stat_statements this server lacks), and what the run said on stderr about where the probe ran.
fn probe_with_log(db: &Db) -> (i32, Vec<(String, String)>, String) {
    let dir = tempfile::tempdir().unwrap();
    let output = db.run(
        &[
            "check",
            "--json",
            "-v",
            "--probe",
            "--table",
            "accounts",
            "--column",
            "legacy_kind",
        ],
        dir.path(),
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}): {}", support::text(&output)));
    let from_probe = codes(&json)
        .into_iter()
        .filter(|(code, _)| code != "live_use_unknown")
        .collect();
    (
        sunset_test_support::harness::code(&output),
        from_probe,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn the_probe_runs_on_the_relations_it_needs_and_falls_back_to_the_whole_schema() {
    let db = Db::new("probe_subset");
    db.exec(BASE);
    // What the probe touches: an FK parent, a view joining another table, a view whose names
    // are pg_dump pattern characters, a publication with a row filter; and 30 tables it never
    // touches.
    db.exec(
        "CREATE TABLE tenants (id int PRIMARY KEY, name text);
         INSERT INTO tenants SELECT g, 't' || g FROM generate_series(0, 6) g;
         ALTER TABLE accounts ADD CONSTRAINT accounts_tenant FOREIGN KEY (tenant_id) REFERENCES tenants;
         CREATE TABLE regions (tenant_id int, region text);
         CREATE VIEW account_regions AS
             SELECT a.id, a.type, r.region FROM accounts a LEFT JOIN regions r USING (tenant_id);
         CREATE SCHEMA \"odd.schema\";
         CREATE VIEW \"odd.schema\".\"a \"\"view\"\" *.?$\" AS SELECT id FROM public.accounts;
         CREATE PUBLICATION account_changes FOR TABLE accounts WHERE (id > 0);
         DO $$ BEGIN FOR i IN 1..30 LOOP
             EXECUTE format('CREATE TABLE unrelated_%s (id int PRIMARY KEY, note text)', i);
         END LOOP; END $$;",
    );
    let (exit, found, log) = probe_with_log(&db);
    assert_eq!(exit, 0, "{found:?}\n{log}");
    assert!(found.is_empty(), "nothing to report: {found:?}\n{log}");
    assert!(
        log.contains("every step passed on a scratch database with the 5 relation(s) it touches"),
        "accounts, tenants, regions and the two views, nothing else: {log}"
    );
    // A trigger writes to a table no catalog link names: on the subset its INSERT fails, so
    // the answer comes from the whole schema, where it passes. Never a false finding.
    db.exec(
        "CREATE TABLE account_audit (account_id bigint, at timestamptz DEFAULT now());
         CREATE FUNCTION audit_account() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN INSERT INTO public.account_audit (account_id) VALUES (NEW.id); RETURN NEW; END $$;
         CREATE TRIGGER accounts_audited AFTER INSERT ON accounts
             FOR EACH ROW EXECUTE FUNCTION audit_account();",
    );
    let (exit, found, log) = probe_with_log(&db);
    assert_eq!(exit, 0, "{found:?}\n{log}");
    assert!(found.is_empty(), "nothing to report: {found:?}\n{log}");
    assert!(
        log.contains("a step failed on the scratch database with the 5 relation(s)")
            && log.contains("decided on the whole schema"),
        "{log}"
    );
    // And when that trigger reads the column in a way no catalog link shows, the fallback
    // still finds the broken write.
    db.exec(
        "CREATE OR REPLACE FUNCTION audit_account() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN EXECUTE 'INSERT INTO public.account_audit (account_id) SELECT ($1).id WHERE ($1).' || 'legacy' || '_kind IS NOT NULL' USING NEW;
         RETURN NEW; END $$;",
    );
    let (exit, found, log) = probe_with_log(&db);
    assert_eq!(exit, 1, "{found:?}\n{log}");
    assert!(
        found.iter().any(|(code, _)| code == "breaks_writes"),
        "{found:?}"
    );
}

#[test]
fn a_probe_that_cannot_build_a_row_says_so() {
    let db = Db::new("probe_unbuildable");
    db.exec(BASE);
    db.exec(
        "ALTER TABLE accounts ADD COLUMN score int NOT NULL DEFAULT 500 CHECK (score > 100);
             ALTER TABLE accounts ALTER COLUMN score DROP DEFAULT",
    );
    let (exit, found) = finding(&db, &["--probe"], "probe_unbuildable");
    assert_eq!(exit, 0, "information, not a pass and not a block: {found}");
    assert_eq!(found["blocking"], false);
    assert!(
        found["detail"].as_str().unwrap().contains("score"),
        "{found}"
    );
}

#[test]
fn a_c_trigger_that_names_nothing_is_undecided_not_silent() {
    let db = Db::new("opaque_trigger");
    db.exec(BASE);
    db.exec(
        "ALTER TABLE accounts ADD COLUMN updated_at timestamptz;
         CREATE FUNCTION touch() RETURNS trigger AS '$libdir/moddatetime', 'moddatetime' LANGUAGE C;
         CREATE TRIGGER accounts_touch BEFORE UPDATE ON accounts FOR EACH ROW EXECUTE FUNCTION touch(updated_at)",
    );
    let (exit, found) = finding(&db, &[], "opaque_trigger");
    assert_eq!(exit, 0);
    assert_eq!(found["object"], "public.accounts.accounts_touch");
    assert_eq!(found["severity"], "warning");
}
