//! One test per kind of evidence: each builds the dependent on a real PostgreSQL, runs
//! `check --json`, and asserts the finding's code and object name.

use crate::support;

use std::path::Path;

use support::{BASE, Db, codes};

/// Builds `sql` on top of [`BASE`], checks `accounts.legacy_kind`, and expects `(code, object)`.
fn expect_finding(prefix: &str, sql: &str, code: &str, object: &str) -> serde_json::Value {
    let db = Db::new(prefix);
    db.exec(BASE);
    db.exec(sql);
    let (exit, json) = db.check(&["--table", "accounts", "--column", "legacy_kind"]);
    let found = codes(&json);
    assert!(
        found.iter().any(|(c, o)| c == code && o == object),
        "expected ({code}, {object}) in {found:?}"
    );
    let blocking = json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["blocking"] == true);
    assert_eq!(
        exit,
        i32::from(blocking),
        "exit 1 exactly when something blocks: {json}"
    );
    json
}

macro_rules! dependent {
    ($name:ident, $sql:expr, $code:expr, $object:expr) => {
        #[test]
        fn $name() {
            expect_finding(stringify!($name), $sql, $code, $object);
        }
    };
}

dependent!(
    index_on_the_column,
    "CREATE INDEX kind_idx ON accounts (legacy_kind)",
    "index",
    "public.kind_idx"
);
dependent!(
    composite_index,
    "CREATE INDEX tenant_kind_idx ON accounts (tenant_id, legacy_kind)",
    "composite_index",
    "public.tenant_kind_idx"
);
dependent!(
    partial_index,
    "CREATE INDEX tenant_partial_idx ON accounts (tenant_id) WHERE legacy_kind IS NOT NULL",
    "partial_index",
    "public.tenant_partial_idx"
);
dependent!(
    expression_index,
    "CREATE INDEX lower_kind_idx ON accounts (lower(legacy_kind))",
    "expression_index",
    "public.lower_kind_idx"
);
dependent!(
    unique_constraint,
    "ALTER TABLE accounts ADD CONSTRAINT tenant_kind_key UNIQUE (tenant_id, legacy_kind, id)",
    "unique_constraint",
    "public.accounts.tenant_kind_key"
);
dependent!(
    check_constraint,
    "ALTER TABLE accounts ADD CONSTRAINT kind_known CHECK (legacy_kind IN ('personal', 'business'))",
    "check_constraint",
    "public.accounts.kind_known"
);
dependent!(
    incoming_foreign_key,
    "ALTER TABLE accounts ADD CONSTRAINT id_kind_key UNIQUE (id, legacy_kind);
     CREATE TABLE invoices (id int PRIMARY KEY, account_id bigint, account_kind text,
                            CONSTRAINT invoices_account_fk FOREIGN KEY (account_id, account_kind) REFERENCES accounts (id, legacy_kind))",
    "incoming_foreign_key",
    "public.invoices.invoices_account_fk"
);
dependent!(
    outgoing_foreign_key,
    "CREATE TABLE kinds (name text PRIMARY KEY); INSERT INTO kinds VALUES ('personal'), ('business');
     ALTER TABLE accounts ADD CONSTRAINT accounts_kind_fk FOREIGN KEY (legacy_kind) REFERENCES kinds (name)",
    "foreign_key",
    "public.accounts.accounts_kind_fk"
);
dependent!(
    view_using_the_column,
    "CREATE VIEW account_kinds AS SELECT id, legacy_kind FROM accounts",
    "view",
    "public.account_kinds"
);
dependent!(
    view_through_another_view,
    "CREATE VIEW account_kinds AS SELECT id, legacy_kind FROM accounts;
     CREATE VIEW account_ids AS SELECT id FROM account_kinds",
    "view",
    "public.account_ids"
);
dependent!(
    materialized_view,
    "CREATE MATERIALIZED VIEW kind_counts AS SELECT legacy_kind, count(*) FROM accounts GROUP BY 1",
    "materialized_view",
    "public.kind_counts"
);
dependent!(
    permissive_policy,
    "ALTER TABLE accounts ENABLE ROW LEVEL SECURITY; CREATE POLICY personal_only ON accounts USING (legacy_kind = 'personal')",
    "policy",
    "public.accounts.personal_only"
);
dependent!(
    restrictive_policy,
    "ALTER TABLE accounts ENABLE ROW LEVEL SECURITY; CREATE POLICY no_hidden ON accounts AS RESTRICTIVE USING (legacy_kind <> 'hidden')",
    "restrictive_policy",
    "public.accounts.no_hidden"
);
dependent!(
    trigger_when_clause,
    "CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
     CREATE TRIGGER touch_personal BEFORE UPDATE ON accounts FOR EACH ROW WHEN (NEW.legacy_kind = 'personal') EXECUTE FUNCTION touch()",
    "trigger",
    "public.accounts.touch_personal"
);
dependent!(
    update_of_trigger,
    "CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
     CREATE TRIGGER touch_kind BEFORE UPDATE OF legacy_kind ON accounts FOR EACH ROW EXECUTE FUNCTION touch()",
    "update_of_trigger",
    "public.accounts.touch_kind"
);
dependent!(
    generated_column,
    "ALTER TABLE accounts ADD COLUMN kind_upper text GENERATED ALWAYS AS (upper(legacy_kind)) STORED",
    "generated_column",
    "public.accounts.kind_upper"
);
dependent!(
    publication_column_list,
    "CREATE PUBLICATION kinds_pub FOR TABLE accounts (id, legacy_kind)",
    "publication_column_list",
    "kinds_pub"
);
dependent!(
    replica_identity,
    "ALTER TABLE accounts ALTER COLUMN legacy_kind SET NOT NULL;
     CREATE UNIQUE INDEX accounts_id_kind ON accounts (id, legacy_kind);
     ALTER TABLE accounts REPLICA IDENTITY USING INDEX accounts_id_kind",
    "replica_identity",
    "public.accounts_id_kind"
);
dependent!(
    inheritance_child,
    "CREATE TABLE archived_accounts () INHERITS (accounts)",
    "inheritance_child",
    "public.archived_accounts"
);
dependent!(
    partition_of_a_partitioned_table,
    "CREATE TABLE events (id int, at date, legacy_kind text) PARTITION BY RANGE (at);
     CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
     CREATE INDEX events_kind ON events (legacy_kind);
     ALTER TABLE accounts RENAME TO accounts_unused; ALTER TABLE events RENAME TO accounts",
    "inheritance_child",
    "public.events_2026"
);
dependent!(
    column_grant,
    "DO $$ BEGIN CREATE ROLE sunset_test_reader; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$;
     GRANT SELECT (legacy_kind) ON accounts TO sunset_test_reader",
    "column_grant",
    "public.accounts.legacy_kind"
);
dependent!(
    comment,
    "COMMENT ON COLUMN accounts.legacy_kind IS 'the old kind'",
    "comment",
    "public.accounts.legacy_kind"
);
dependent!(
    extended_statistics,
    "CREATE STATISTICS kind_stats (dependencies) ON tenant_id, legacy_kind FROM accounts",
    "extended_statistics",
    "public.kind_stats"
);
dependent!(
    owned_sequence,
    "CREATE SEQUENCE kind_seq OWNED BY accounts.legacy_kind",
    "owned_sequence",
    "public.kind_seq"
);
dependent!(
    function_body,
    "CREATE FUNCTION personal_count() RETURNS bigint LANGUAGE plpgsql AS $$
     BEGIN
       RETURN (SELECT count(*) FROM accounts WHERE legacy_kind = 'personal');
     END $$",
    "function_body",
    "public.personal_count()"
);
dependent!(
    function_with_a_tracked_sql_body,
    "CREATE FUNCTION kind_of(bigint) RETURNS text LANGUAGE sql BEGIN ATOMIC SELECT legacy_kind FROM public.accounts WHERE id = $1; END",
    "function_dependency",
    "public.kind_of(bigint)"
);
dependent!(
    trigger_function_body,
    "CREATE FUNCTION copy_kind() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.type := NEW.legacy_kind; RETURN NEW; END $$;
     CREATE TRIGGER copy_kind BEFORE INSERT ON accounts FOR EACH ROW EXECUTE FUNCTION copy_kind()",
    "trigger_function_body",
    "public.accounts.copy_kind"
);

dependent!(
    rewrite_rule,
    "CREATE TABLE kind_log (kind text);
     CREATE RULE log_kind AS ON UPDATE TO accounts DO ALSO INSERT INTO kind_log VALUES (NEW.legacy_kind)",
    "rule",
    "public.accounts.log_kind"
);

#[test]
fn recent_queries_from_pg_stat_statements() {
    let db = Db::new("recent_queries");
    db.exec(BASE);
    db.exec("CREATE EXTENSION IF NOT EXISTS pg_stat_statements");
    // Run often, so that pg_stat_statements (shared by every test on the server) does not evict
    // it as its least used entry before the check reads it.
    for _ in 0..20 {
        db.exec("SELECT legacy_kind FROM accounts WHERE id = 42");
    }
    let (exit, json) = db.check(&["--table", "accounts", "--column", "legacy_kind"]);
    assert_eq!(exit, 1, "{json}");
    let found = codes(&json);
    assert!(
        found.iter().any(|(c, o)| c == "recent_queries"
            && o.contains("SELECT legacy_kind FROM accounts WHERE id = $1")),
        "{found:?}"
    );
}

#[test]
fn without_pg_stat_statements_live_use_is_reported_unknown() {
    let db = Db::new("no_pgss");
    db.exec(BASE);
    let (exit, json) = db.check(&["--table", "accounts", "--column", "legacy_kind"]);
    assert_eq!(exit, 0, "nothing blocks: {json}");
    assert!(codes(&json).iter().any(|(c, _)| c == "live_use_unknown"));
}

#[test]
fn code_references_respect_gitignore_and_tell_migrations_apart() {
    let db = Db::new("code_refs");
    db.exec(BASE);
    let repo = tempfile::tempdir().unwrap();
    let write = |path: &str, text: &str| {
        let full = repo.path().join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, text).unwrap();
    };
    write(".gitignore", "vendor/\n");
    write(
        "app/models/account.rb",
        "class Account\n  def kind = self[:legacy_kind]\nend\n",
    );
    write("web/src/account.ts", "const k = account.legacyKind;\n");
    write(
        "app/models/other.rb",
        "legacy_kind_v2 = 1 # a different name\n",
    );
    write("vendor/lib.rb", "legacy_kind\n");
    write(
        "db/migrate/20200101000000_create_accounts.rb",
        "t.text :legacy_kind\n",
    );
    let (exit, json) = db.check(&[
        "--table",
        "accounts",
        "--column",
        "legacy_kind",
        "--repo",
        repo.path().to_str().unwrap(),
    ]);
    assert_eq!(exit, 1);
    let found = codes(&json);
    assert!(
        found.contains(&("code_reference".into(), "app/models/account.rb:2".into())),
        "{found:?}"
    );
    assert!(
        found.contains(&("code_reference".into(), "web/src/account.ts:1".into())),
        "{found:?}"
    );
    assert!(
        !found
            .iter()
            .any(|(_, o)| o.starts_with("vendor/") || o.starts_with("app/models/other.rb")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|(c, o)| c == "migration_reference" && o.contains("db/migrate")),
        "{found:?}"
    );
}

#[test]
fn backfill_parity_counts_mismatches_with_sample_keys() {
    let db = Db::new("parity");
    db.exec(BASE);
    db.exec("UPDATE accounts SET type = 'BusinessAccount' WHERE id IN (2, 4); UPDATE accounts SET type = NULL WHERE id = 6");
    let plan = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        plan.path(),
        "backfill: accounts-sti\ntable: public.accounts\nkey: id\ndiscriminator: type\nfrom: legacy_kind\nmap: { personal: PersonalAccount, business: BusinessAccount }\nunmapped: fail\ncoverage: application\n",
    )
    .unwrap();
    let plan_path = plan.path().to_str().unwrap();
    let (exit, json) = db.check(&[
        "--table",
        "accounts",
        "--column",
        "legacy_kind",
        "--backfill-plan",
        plan_path,
    ]);
    assert_eq!(exit, 1);
    let mismatch = json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "data_mismatch")
        .expect("data_mismatch");
    assert_eq!(mismatch["object"], "public.accounts");
    assert!(
        mismatch["detail"].as_str().unwrap().starts_with("2 rows"),
        "{mismatch}"
    );
    assert!(
        mismatch["detail"]
            .as_str()
            .unwrap()
            .contains("first keys: 2 4"),
        "{mismatch}"
    );
    assert!(codes(&json).contains(&("data_untyped".into(), "public.accounts".into())));

    db.exec("UPDATE accounts SET type = CASE WHEN legacy_kind = 'personal' THEN 'PersonalAccount' ELSE 'BusinessAccount' END");
    let (exit, json) = db.check(&[
        "--table",
        "accounts",
        "--column",
        "legacy_kind",
        "--backfill-plan",
        plan_path,
    ]);
    assert_eq!(exit, 0, "{json}");
    assert!(codes(&json).contains(&("data_parity".into(), "public.accounts".into())));
}

#[test]
fn every_finding_comes_out_of_one_run() {
    let db = Db::new("one_run");
    db.exec(BASE);
    db.exec(
        "CREATE INDEX tenant_kind_idx ON accounts (tenant_id, legacy_kind);
         CREATE VIEW account_kinds AS SELECT id, legacy_kind FROM accounts;
         ALTER TABLE accounts ENABLE ROW LEVEL SECURITY;
         CREATE POLICY no_hidden ON accounts AS RESTRICTIVE USING (legacy_kind <> 'hidden');
         COMMENT ON COLUMN accounts.legacy_kind IS 'old';
         CREATE STATISTICS kind_stats ON tenant_id, legacy_kind FROM accounts;
         CREATE FUNCTION personal_count() RETURNS bigint LANGUAGE plpgsql AS $$ BEGIN RETURN (SELECT count(*) FROM accounts WHERE legacy_kind = 'p'); END $$;",
    );
    let (exit, json) = db.check(&["--table", "accounts", "--column", "legacy_kind"]);
    assert_eq!(exit, 1);
    let found: Vec<String> = codes(&json).into_iter().map(|(c, _)| c).collect();
    for code in [
        "composite_index",
        "view",
        "restrictive_policy",
        "comment",
        "extended_statistics",
        "function_body",
        "live_use_unknown",
    ] {
        assert!(
            found.iter().any(|c| c == code),
            "{code} missing from {found:?}"
        );
    }
    for field in ["code", "severity", "blocking", "object", "detail", "fix"] {
        assert!(
            json["findings"][0].get(field).is_some(),
            "findings carry `{field}`"
        );
    }
    // Acknowledging every blocking code turns the check green, and says what it acknowledged.
    let (exit, json) = db.check(&[
        "--table",
        "accounts",
        "--column",
        "legacy_kind",
        "--allow",
        "composite_index",
        "--allow",
        "view=public.account_kinds",
        "--allow",
        "restrictive_policy",
        "--allow",
        "function_body",
    ]);
    assert_eq!(exit, 0, "{json}");
    assert!(
        json["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["acknowledged"] == true)
    );

    // The same acknowledgements from a reviewed config file, each with its reason.
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config.path(),
        "allow:\n  - { code: composite_index, reason: replaced by tenant_idx }\n  - { code: view, object: public.account_kinds, reason: rewritten in the same release }\n  - { code: restrictive_policy, reason: moved to type }\n  - { code: function_body, reason: dead code }\n",
    )
    .unwrap();
    let config = config.path().to_str().unwrap();
    let (exit, json) = db.check(&[
        "--table",
        "accounts",
        "--column",
        "legacy_kind",
        "--config",
        config,
    ]);
    assert_eq!(exit, 0, "{json}");
    let (exit, json) = db.check(&[
        "--table",
        "accounts",
        "--column",
        "legacy_kind",
        "--allow",
        "view=public.other",
    ]);
    assert_eq!(
        exit, 1,
        "an acknowledgement of another object leaves the view blocking: {json}"
    );
    assert_eq!(json["unused_acknowledgements"][0], "view");
    assert!(Path::new(config).exists());
}

#[test]
fn statements_hidden_from_the_checking_role_are_reported_as_unknown() {
    let db = Db::new("hidden_stats");
    db.exec(BASE);
    db.exec("CREATE EXTENSION IF NOT EXISTS pg_stat_statements");
    db.exec(
        "DO $$ BEGIN CREATE ROLE sunset_test_auditor LOGIN; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$;",
    );
    db.exec("SELECT legacy_kind FROM accounts WHERE id = 7");
    // The same server as another role (the throwaway cluster trusts local connections).
    let (scheme, rest) = db.url.split_once("://").unwrap();
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let auditor = format!("{scheme}://sunset_test_auditor@{host}");
    let (exit, json) = db.check_as(
        &auditor,
        &["--table", "accounts", "--column", "legacy_kind"],
    );
    assert_eq!(exit, 0, "{json}");
    let unknown = json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "live_use_unknown")
        .unwrap_or_else(|| panic!("no live_use_unknown in {json}"));
    assert!(
        unknown["detail"]
            .as_str()
            .unwrap()
            .contains("hidden from this role"),
        "{unknown}"
    );
}

#[test]
fn a_closed_stdout_is_not_a_failure() {
    let db = Db::new("dc-pipe");
    db.exec("CREATE TABLE accounts (id bigint PRIMARY KEY, legacy_kind text)");
    let mut command = std::process::Command::new(support::BIN);
    command
        .args([
            "check",
            "--json",
            "--table",
            "accounts",
            "--column",
            "legacy_kind",
        ])
        .envs(sunset_test_support::service_env())
        .env("DATABASE_URL", &db.url)
        .env_remove("RUST_LOG");
    let (exit, stderr) = sunset_test_support::run_with_closed_stdout(&mut command);
    assert!(matches!(exit, Some(0 | 1)), "{exit:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// The catalog comparison behind the scratch verification has one line per column, whatever the
/// major: on PostgreSQL 17 and newer a default statistics target is NULL, which must not turn a
/// column's line into NULL and drop it from the comparison.
#[test]
fn the_catalog_snapshot_has_a_line_for_every_column() {
    let db = Db::new("catalog_lines");
    db.exec(BASE);
    db.exec(
        "ALTER TABLE accounts ALTER COLUMN type SET STATISTICS 300;
         ALTER TABLE accounts ADD COLUMN label text GENERATED ALWAYS AS (upper(type)) STORED;
         CREATE VIEW account_types AS SELECT id, type FROM accounts;
         CREATE TABLE notes (id int, body text COLLATE \"C\" DEFAULT 'x');
         COMMENT ON COLUMN notes.body IS 'a note';",
    );
    let columns = db.int(
        "SELECT count(*) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND a.attnum > 0 AND NOT a.attisdropped
           AND c.relkind IN ('r', 'p', 'v', 'm', 'f')",
    );
    let lines = db
        .catalog()
        .iter()
        .filter(|line| line.starts_with("column "))
        .count();
    assert_eq!(columns, 9, "the fixture's columns, counted by PostgreSQL");
    assert_eq!(
        i64::try_from(lines).unwrap(),
        columns,
        "one column line per column"
    );
}
