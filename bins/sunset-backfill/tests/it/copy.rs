//! Copy mode as operators run it: legacy per-type tables copied into the STI table by the built
//! binary, killed, written to concurrently, validated, rolled back, and fed bad input.

use crate::support;

use std::time::Duration;

use sunset_test_support::connect;
use support::{Db, code, stderr};

/// The STI table with a few rows already there (keys that collide with personal accounts), two
/// legacy tables, and a trigger that counts every insert into the STI table per key.
const LEGACY: &str = "
CREATE TABLE accounts (id bigint PRIMARY KEY, name text NOT NULL, type text, note text DEFAULT 'copied');
CREATE TABLE personal_accounts (id bigint PRIMARY KEY, full_name text NOT NULL);
INSERT INTO personal_accounts SELECT g * 7, 'person ' || g FROM generate_series(1, ROWS) g;
CREATE TABLE business_accounts (legacy_id int PRIMARY KEY, company text NOT NULL, vat text, closed boolean NOT NULL DEFAULT false);
INSERT INTO business_accounts
SELECT g * 5, 'company ' || g, CASE WHEN g % 4 <> 0 THEN 'VAT' || g END, g % 9 = 0 FROM generate_series(1, ROWS / 4) g;
INSERT INTO accounts (id, name, type, note)
SELECT g * 7, 'already here ' || g, 'PersonalAccount', NULL FROM generate_series(1000, ROWS, 1000) g;
CREATE TABLE inserts (id bigint PRIMARY KEY, n int NOT NULL);
CREATE FUNCTION count_inserts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO inserts VALUES (NEW.id, 1) ON CONFLICT (id) DO UPDATE SET n = inserts.n + 1;
    RETURN NEW;
END $$;
CREATE TRIGGER count_inserts AFTER INSERT ON accounts FOR EACH ROW EXECUTE FUNCTION count_inserts();
CREATE TABLE snapshot AS SELECT * FROM accounts;
";

/// Business ids land far above personal ones; closed companies are not copied.
const PLAN: &str = "backfill: accounts-copy
mode: copy
table: public.accounts
key: id
discriminator: type
coverage: trigger
sources:
  - table: personal_accounts
    type: PersonalAccount
    columns: { name: full_name }
  - table: public.business_accounts
    type: BusinessAccount
    columns:
      id: legacy_id::bigint + 1000000000000
      name: \"company || coalesce(' / ' || vat, '')\"
    where: NOT closed
";

/// Inserts, renames, deletes and closes legacy rows while the copy runs. Keys of rows that were
/// already in the STI table are left alone (their STI row is not the copy's to mirror).
fn legacy_writer(url: String) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let client = connect(&url).await;
            for i in 0..300i64 {
                let between = i * 7 * 40 + 3;
                let beyond = 100_000_000 + i;
                client
                    .execute(
                        "INSERT INTO personal_accounts VALUES ($1::bigint, 'new ' || $1::bigint::text), ($2::bigint, 'new ' || $2::bigint::text)",
                        &[&between, &beyond],
                    )
                    .await
                    .unwrap();
                if i % 3 == 0 {
                    client
                        .execute(
                            "UPDATE personal_accounts SET full_name = 'renamed ' || id WHERE id = $1",
                            &[&(7 * (i * 13 + 1))],
                        )
                        .await
                        .unwrap();
                }
                if i % 5 == 0 {
                    client
                        .execute(
                            "DELETE FROM personal_accounts WHERE id = $1",
                            &[&(7 * (i * 17 + 2))],
                        )
                        .await
                        .unwrap();
                }
                if i % 4 == 0 {
                    client
                        .execute(
                            "UPDATE business_accounts SET closed = true WHERE legacy_id = $1",
                            &[&i32::try_from(5 * (i * 7 + 1)).unwrap()],
                        )
                        .await
                        .unwrap();
                }
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        });
    })
}

#[test]
fn copy_sigkilled_twenty_times_with_concurrent_writes_copies_each_row_once_and_rolls_back_exactly()
{
    let db = Db::new("bf-copy-chaos");
    db.exec(&LEGACY.replace("ROWS", "40000"));
    db.slow_down_each_statement("accounts", "INSERT");
    let plan = db.plan(
        "plan.yaml",
        &format!(
            "{PLAN}batch: {{ size: 20, min_size: 10, max_size: 20, target_duration: 50ms }}\n"
        ),
    );
    let plan = plan.to_str().unwrap();
    let before = db.digest("accounts");

    let writer = legacy_writer(db.url.clone());
    let seed = db.run_and_kill_twenty_times(plan, "accounts-copy");
    writer.join().unwrap();
    db.succeed(
        &["run", plan],
        &format!("the resumed run completes (seed {seed})"),
    );
    db.succeed(
        &["validate", plan],
        &format!("validate passes (seed {seed})"),
    );

    // Fresh statistics, or the checks below run as nested loops over 250k rows.
    db.exec("ANALYZE");
    // Content, not only presence: renames reached the copies, deleted or closed rows lost theirs.
    assert_eq!(
        db.int("SELECT count(*) FROM personal_accounts p JOIN accounts a USING (id)
                WHERE p.id % 7000 <> 0 AND (a.name <> p.full_name OR a.type <> 'PersonalAccount' OR a.note <> 'copied')"),
        0,
        "every personal copy carries its source's current values (seed {seed})"
    );
    assert_eq!(
        db.int("SELECT count(*) FROM business_accounts b JOIN accounts a ON a.id = b.legacy_id + 1000000000000
                WHERE NOT b.closed AND (a.name <> b.company || coalesce(' / ' || b.vat, '') OR a.type <> 'BusinessAccount')"),
        0,
        "every business copy carries its mapped values"
    );
    assert_eq!(
        db.int(
            "SELECT count(*) FROM accounts a WHERE a.type = 'PersonalAccount'
                AND NOT EXISTS (SELECT 1 FROM personal_accounts p WHERE p.id = a.id)"
        ),
        0,
        "deleted legacy rows have no copy"
    );
    assert_eq!(
        db.int("SELECT count(*) FROM accounts a WHERE a.type = 'BusinessAccount'
                AND NOT EXISTS (SELECT 1 FROM business_accounts b WHERE b.legacy_id + 1000000000000 = a.id AND NOT b.closed)"),
        0,
        "closed companies have no copy"
    );
    assert_eq!(
        db.int("SELECT count(*) FROM snapshot s JOIN accounts a USING (id) WHERE a.name <> s.name"),
        0,
        "rows already in the STI table were left alone"
    );
    assert_eq!(
        db.int("SELECT count(*) FROM inserts WHERE n > 1"),
        0,
        "no row was inserted twice (seed {seed})"
    );
    assert_eq!(
        db.int("SELECT COALESCE(sum(cardinality(old_values)), 0)::bigint FROM sunset.backfill_undo WHERE run = 'accounts-copy'"),
        db.int("SELECT count(*) FROM inserts"),
        "one journal entry per inserted row"
    );
    assert_eq!(
        db.int("SELECT count(*) FROM (SELECT k FROM sunset.backfill_undo u, unnest(u.keys) k WHERE u.run = 'accounts-copy') j
                FULL JOIN (SELECT id::text AS k FROM inserts) c USING (k) WHERE j.k IS NULL OR c.k IS NULL"),
        0,
        "every inserted row is journalled"
    );

    let journalled = db.int("SELECT count(*) FROM sunset.backfill_journal");
    let rollback = db.backfill(&["rollback", plan]);
    assert_eq!(code(&rollback), 0, "rollback: {}", stderr(&rollback));
    assert!(
        stderr(&rollback).contains(&format!("{journalled} rows removed")),
        "rollback says what it removed: {}",
        stderr(&rollback)
    );
    assert_eq!(
        db.digest("accounts"),
        before,
        "rollback leaves the STI table exactly as before the run"
    );
    assert_eq!(
        db.int("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'sunset_backfill_%'"),
        0,
        "rollback removes the coverage triggers"
    );
}

#[test]
fn copy_with_uuid_and_composite_keys_and_two_workers_covers_every_row() {
    let db = Db::new("bf-copy-keys");
    db.exec(
        "CREATE TABLE docs (id uuid PRIMARY KEY, title text, doc_type text);
         CREATE TABLE invoices (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), title text);
         CREATE TABLE receipts (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), subject text);
         INSERT INTO invoices (title) SELECT 'invoice ' || g FROM generate_series(1, 3000) g;
         INSERT INTO receipts (subject) SELECT 'receipt ' || g FROM generate_series(1, 2000) g;
         CREATE TABLE events (tenant_id int NOT NULL, seq bigint NOT NULL, payload jsonb, event_type text, PRIMARY KEY (tenant_id, seq));
         CREATE TABLE created_events (tenant_id int, seq bigint, payload jsonb, PRIMARY KEY (tenant_id, seq));
         CREATE TABLE legacy_updates (t int NOT NULL, s bigint NOT NULL, body text, UNIQUE (t, s));
         INSERT INTO created_events SELECT t, s * 2, jsonb_build_object('n', s) FROM generate_series(1, 20) t, generate_series(1, 150) s;
         INSERT INTO legacy_updates SELECT t, s * 2 + 1, 'body ' || s FROM generate_series(1, 20) t, generate_series(1, 150) s;",
    );
    let docs = db.plan(
        "docs.yaml",
        "backfill: docs-copy\nmode: copy\ntable: docs\nkey: id\ndiscriminator: doc_type\ncoverage: application\n\
         sources:\n  - { table: invoices, type: Invoice }\n  - { table: receipts, type: Receipt, columns: { title: subject } }\n\
         batch: { size: 300, max_size: 700 }\n",
    );
    let run = db.backfill(&["run", docs.to_str().unwrap(), "--workers", "2"]);
    assert_eq!(code(&run), 0, "{}", stderr(&run));
    assert_eq!(code(&db.backfill(&["validate", docs.to_str().unwrap()])), 0);
    assert_eq!(
        db.int("SELECT count(*) FROM docs d JOIN receipts r USING (id) WHERE d.title = r.subject AND d.doc_type = 'Receipt'"),
        2000
    );

    let events = db.plan(
        "events.yaml",
        "backfill: events-copy\nmode: copy\ntable: public.events\nkey: [tenant_id, seq]\ndiscriminator: event_type\ncoverage: application\n\
         sources:\n  - { table: created_events, type: Created }\n\
         \x20 - { table: legacy_updates, type: Updated, key: [t, s], columns: { tenant_id: t, seq: s, payload: \"jsonb_build_object('body', body)\" } }\n\
         batch: { size: 250, max_size: 400 }\n",
    );
    let run = db.backfill(&["run", events.to_str().unwrap(), "--workers", "2"]);
    assert_eq!(code(&run), 0, "{}", stderr(&run));
    assert_eq!(
        code(&db.backfill(&["validate", events.to_str().unwrap()])),
        0
    );
    assert_eq!(
        db.int("SELECT count(*) FROM events WHERE event_type = 'Updated' AND payload ? 'body'"),
        3000
    );
    assert_eq!(
        db.int("SELECT count(*) FROM sunset.backfill_journal WHERE run = 'events-copy'"),
        6000
    );
    // A composite key's copy corrupted: named by both key columns and the column.
    db.exec("UPDATE events SET payload = '{}' WHERE (tenant_id, seq) = (4, 9)");
    let validate = db.backfill(&["validate", events.to_str().unwrap(), "--json"]);
    assert_eq!(code(&validate), 1, "{}", stderr(&validate));
    let report: serde_json::Value = serde_json::from_slice(&validate.stdout).unwrap();
    assert_eq!(report["differing"], 1, "{report}");
    assert_eq!(
        report["differing_rows"][0],
        serde_json::json!([["4", "9"], ["payload"]]),
        "{report}"
    );
    db.exec("UPDATE events SET payload = jsonb_build_object('body', 'body 4') WHERE (tenant_id, seq) = (4, 9)");
    // A copied row that disappears is reported by key.
    db.exec("DELETE FROM events WHERE (tenant_id, seq) = (3, 5)");
    let validate = db.backfill(&["validate", events.to_str().unwrap()]);
    assert_eq!(code(&validate), 1);
    let report = String::from_utf8_lossy(&validate.stdout);
    assert!(
        report.contains("missing: 1") && report.contains("(3, 5)"),
        "{report}"
    );
}

#[test]
fn bad_copy_plans_exit_2_with_a_clear_error_and_change_nothing() {
    let db = Db::new("bf-copy-bad");
    db.exec(&LEGACY.replace("ROWS", "300"));
    db.exec("CREATE TABLE heap_accounts (id bigint, full_name text);");
    let before = db.digest("accounts");
    let good = PLAN.to_owned();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "missing source table",
            good.replace("table: personal_accounts", "table: persons"),
            "sources[0]: table `persons` does not exist",
        ),
        (
            "unknown target column",
            good.replace(
                "columns: { name: full_name }",
                "columns: { nmae: full_name }",
            ),
            "sources[0].columns: target column `nmae` does not exist in table `public.accounts` (did you mean `name`?)",
        ),
        (
            "source without a primary key",
            good.replace("table: personal_accounts", "table: heap_accounts"),
            "`public.heap_accounts` has no primary key to walk it by",
        ),
        (
            "source key not unique",
            good.replace(
                "type: PersonalAccount\n",
                "type: PersonalAccount\n    key: full_name\n",
            ),
            "key (full_name) is not unique",
        ),
        (
            "key not mapped",
            good.replace("      id: legacy_id::bigint + 1000000000000\n", ""),
            "has no column `id` for the STI table's key",
        ),
        (
            "hostile expression",
            good.replace(
                "legacy_id::bigint + 1000000000000",
                "\"1; drop table accounts\"",
            ),
            "is not valid SQL for `public.business_accounts`",
        ),
        (
            "expression naming a missing column",
            good.replace("full_name", "fullname"),
            "column \\\"fullname\\\" does not exist",
        ),
        (
            "discriminator mapped",
            good.replace(
                "columns: { name: full_name }",
                "columns: { name: full_name, type: full_name }",
            ),
            "`type` is the discriminator",
        ),
        (
            "in-place fields in copy mode",
            good.replace(
                "coverage: trigger\n",
                "coverage: trigger\nfrom: kind\nwhere: \"true\"\n",
            ),
            "`from` is only used with `mode: in_place`",
        ),
        (
            "the STI table as its own source",
            good.replace("table: personal_accounts", "table: accounts"),
            "is the STI table itself",
        ),
        (
            "no coverage",
            good.replace("coverage: trigger\n", ""),
            "nothing copies rows written to the sources",
        ),
    ];
    for (name, plan_text, expected) in cases {
        let plan = db.plan("bad.yaml", &plan_text);
        let output = db.backfill(&["run", plan.to_str().unwrap()]);
        let message = stderr(&output).replace('"', "\\\"");
        assert_eq!(
            code(&output),
            2,
            "{name}: exit 2 expected, stderr: {message}"
        );
        assert!(
            message.contains(expected),
            "{name}: expected {expected:?} in: {message}"
        );
        assert_eq!(db.digest("accounts"), before, "{name}: no row changed");
    }
    assert_eq!(
        db.int("SELECT count(*) FROM inserts"),
        0,
        "no insert ever ran"
    );
    assert_eq!(
        db.int("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'sunset_backfill_%'"),
        0,
        "no trigger was installed"
    );
}

#[test]
fn copying_explicit_keys_moves_the_sti_tables_sequence_past_them() {
    let db = Db::new("bf-copy-serial");
    db.exec(
        "CREATE TABLE vehicles (id bigserial PRIMARY KEY, name text, kind text);
         CREATE TABLE vans (id bigint PRIMARY KEY, name text);
         INSERT INTO vans SELECT g * 10, 'van ' || g FROM generate_series(1, 500) g;",
    );
    let plan = db.plan(
        "vehicles.yaml",
        "backfill: vehicles-copy\nmode: copy\ntable: vehicles\nkey: id\ndiscriminator: kind\ncoverage: application\n\
         sources:\n  - { table: vans, type: Van }\n",
    );
    let run = db.backfill(&["run", plan.to_str().unwrap()]);
    assert_eq!(code(&run), 0, "{}", stderr(&run));
    db.exec("INSERT INTO vehicles (name, kind) VALUES ('new car', 'Car')");
    assert_eq!(
        db.int("SELECT max(id) FROM vehicles WHERE kind = 'Car'"),
        5001
    );
}

/// validate compares the values, not only keys and types: a copied row corrupted afterwards, and
/// a copied row whose source changed with no trigger to carry it over, make it exit 1 naming the
/// key and the column; rows the STI table held before the run (left alone) are not compared.
#[test]
fn validate_finds_a_corrupted_copy_and_a_source_changed_behind_its_back() {
    let db = Db::new("bf-copy-values");
    db.exec(&LEGACY.replace("ROWS", "3000"));
    let plan = db.plan("plan.yaml", PLAN);
    let plan = plan.to_str().unwrap();
    db.succeed(&["run", plan], "the copy");
    db.succeed(&["validate", plan], "validate after a clean copy");

    db.exec("UPDATE accounts SET name = 'CORRUPTED' WHERE id = 42");
    let validate = db.backfill(&["validate", plan, "--json"]);
    assert_eq!(code(&validate), 1, "{}", stderr(&validate));
    let report: serde_json::Value = serde_json::from_slice(&validate.stdout).unwrap();
    assert_eq!(report["differing"], 1, "{report}");
    assert_eq!(report["differing_rows"][0][0][0], "42", "{report}");
    assert_eq!(report["differing_rows"][0][1][0], "name", "{report}");

    // Differences in many of the ranges validate compares one by one: all counted, the first
    // ten named in key order; the rows that were there before the run (7000, 14000, 21000) are
    // not the run's and are not counted, whatever they hold.
    db.exec("UPDATE accounts SET name = 'CORRUPTED' WHERE id % 700 = 0 AND id < 1000000000000");
    let validate = db.backfill(&["validate", plan, "--json"]);
    assert_eq!(code(&validate), 1, "{}", stderr(&validate));
    let report: serde_json::Value = serde_json::from_slice(&validate.stdout).unwrap();
    let run_rows = "a.id NOT IN (SELECT id FROM snapshot)";
    let oracle = db.int(&format!(
        "SELECT count(*) FROM accounts a JOIN personal_accounts p ON p.id = a.id
         WHERE a.name IS DISTINCT FROM p.full_name AND {run_rows}"
    ));
    assert_eq!(oracle, 28, "27 corrupted by id and 42");
    assert_eq!(report["differing"], oracle, "{report}");
    let named: Vec<&str> = report["differing_rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row[0][0].as_str().unwrap())
        .collect();
    assert_eq!(
        named,
        [
            "42", "700", "1400", "2100", "2800", "3500", "4200", "4900", "5600", "6300"
        ]
    );
    db.exec(&format!(
        "UPDATE accounts a SET name = p.full_name FROM personal_accounts p WHERE p.id = a.id AND {run_rows}"
    ));
    db.succeed(&["validate", plan], "validate once the copies are repaired");
    db.exec("UPDATE accounts a SET name = s.name FROM snapshot s WHERE s.id = a.id");

    // The source changes with the coverage trigger gone: the copy no longer matches it.
    db.exec(
        "UPDATE accounts SET name = 'person 6' WHERE id = 42;
         DO $$ DECLARE t record; BEGIN
           FOR t IN SELECT tgname, tgrelid::regclass AS rel FROM pg_trigger WHERE tgname LIKE 'sunset_backfill_%' LOOP
             EXECUTE format('DROP TRIGGER %I ON %s', t.tgname, t.rel);
           END LOOP; END $$;
         UPDATE business_accounts SET vat = 'VAT-NEW' WHERE legacy_id = 5;",
    );
    let validate = db.backfill(&["validate", plan]);
    assert_eq!(code(&validate), 1, "{}", stderr(&validate));
    let out = String::from_utf8_lossy(&validate.stdout);
    assert!(
        out.contains(
            "copied rows whose values differ from their source: 1, first: (1000000000005): name"
        ),
        "{out}"
    );
    // The rows that were there before the run keep their own names, and are not counted.
    assert_eq!(
        db.int("SELECT count(*) FROM accounts WHERE name LIKE 'already here %'"),
        3,
        "the STI table's own rows were left alone"
    );
}
