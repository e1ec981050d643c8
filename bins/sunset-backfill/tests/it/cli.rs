//! `sunset-backfill` as operators run it: the built binary against the real PostgreSQL, killed,
//! paused, scraped, and fed bad input.
//!
//! Longer than ~600 lines: one scenario per operator action (run, kill, pause, scrape, bad
//! input), each a whole story.

use std::io::Read;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use sunset_test_support::connect;

use crate::support;

use support::{ACCOUNTS, BIN, Db, accounts_plan, code, stderr};

/// Rows of the snapshot whose type should change: in scope and not already right.
const SHOULD_CHANGE_IDS: &str =
    "SELECT id FROM snapshot s JOIN accounts a USING (id) WHERE a.deleted_at IS NULL
    AND s.type IS DISTINCT FROM (CASE a.legacy_kind WHEN 'personal' THEN 'PersonalAccount'
        WHEN 'business' THEN 'BusinessAccount' WHEN 'partner' THEN 'PartnerAccount' END)";
fn should_change(db: &Db) -> i64 {
    db.int(&format!("SELECT count(*) FROM ({SHOULD_CHANGE_IDS}) x"))
}

#[test]
fn help_explains_with_examples() {
    let output = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success());
    for needle in [
        "run",
        "preflight",
        "status",
        "pause",
        "resume",
        "cancel",
        "validate",
        "rollback",
        "finish",
        "Examples:",
        "Exit codes:",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}: {help}");
    }
}

#[test]
fn sigkilled_twenty_times_the_run_ends_exactly_once_and_rolls_back_exactly() {
    let db = Db::new("bf-chaos");
    db.exec(&ACCOUNTS.replace("ROWS", "40000"));
    db.slow_down_each_statement("accounts", "UPDATE");
    let plan = db.plan(
        "plan.yaml",
        &accounts_plan("batch: { size: 20, min_size: 10, max_size: 20, target_duration: 50ms }\n"),
    );
    let plan = plan.to_str().unwrap();
    let should_change = should_change(&db);

    // New rows keep arriving during the run, between and beyond the existing ids.
    let inserter = {
        let url = db.url.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let client = connect(&url).await;
                for i in 0..300i64 {
                    let id = if i % 2 == 0 {
                        i * 7 * 60 + 3
                    } else {
                        10_000_000 + i
                    };
                    client
                        .execute(
                            "INSERT INTO accounts (id, legacy_kind) VALUES ($1, 'partner')",
                            &[&id],
                        )
                        .await
                        .unwrap();
                    tokio::time::sleep(Duration::from_millis(15)).await;
                }
            });
        })
    };

    let seed = db.run_and_kill_twenty_times(plan, "accounts-sti");
    inserter.join().unwrap();
    db.succeed(
        &["run", plan],
        &format!("the resumed run completes (seed {seed})"),
    );

    db.succeed(
        &["validate", plan],
        &format!("validate passes (seed {seed})"),
    );
    // Fresh statistics, or the checks below run as nested loops.
    db.exec("ANALYZE");
    assert_eq!(
        db.int("SELECT count(*) FROM accounts WHERE deleted_at IS NULL AND type IS NULL"),
        0,
        "no row without a type"
    );
    // The update counter sees every row the backfill changed (inserts get their type from the
    // coverage trigger before they land, which is not an update).
    assert_eq!(
        db.int("SELECT count(*) FROM type_updates WHERE n > 1"),
        0,
        "no row was updated twice (seed {seed})"
    );
    assert_eq!(
        db.int("SELECT COALESCE(sum(cardinality(old_values)), 0)::bigint FROM sunset.backfill_undo WHERE run = 'accounts-sti'"),
        db.int("SELECT count(*) FROM type_updates"),
        "one journal entry per changed row"
    );
    // The progress rows, committed in the same statement as each batch, agree with the journal:
    // no batch was counted without its changes, or twice.
    assert_eq!(
        db.int("SELECT COALESCE(sum(rows_changed), 0)::bigint FROM sunset.backfill_ranges WHERE run = 'accounts-sti'"),
        db.int("SELECT COALESCE(sum(cardinality(old_values)), 0)::bigint FROM sunset.backfill_undo WHERE run = 'accounts-sti'"),
        "the ranges' rows_changed add up to the journal (seed {seed})"
    );
    assert_eq!(
        db.int("SELECT count(*) FROM (SELECT k FROM sunset.backfill_undo u, unnest(u.keys) k WHERE u.run = 'accounts-sti') j
                FULL JOIN (SELECT id::text AS k FROM type_updates) c USING (k) WHERE j.k IS NULL OR c.k IS NULL"),
        0,
        "every changed row is journalled"
    );
    assert_eq!(
        db.int(&format!(
            "SELECT count(*) FROM ({SHOULD_CHANGE_IDS}) s JOIN type_updates u USING (id)"
        )),
        should_change,
        "every existing row that needed a type got it"
    );

    let journalled =
        db.int("SELECT count(*) FROM sunset.backfill_journal WHERE run = 'accounts-sti'");
    let rollback = db.backfill(&["rollback", plan]);
    assert_eq!(code(&rollback), 0, "rollback: {}", stderr(&rollback));
    assert_eq!(db.int("SELECT count(*) FROM snapshot s JOIN accounts a USING (id) WHERE s.type IS DISTINCT FROM a.type"), 0, "rollback restores the snapshot exactly");
    assert!(
        stderr(&rollback).contains(&format!("{journalled} rows restored")),
        "rollback says what it restored: {}",
        stderr(&rollback)
    );
    assert_eq!(
        db.int("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'sunset_backfill_%'"),
        0,
        "rollback removes the coverage trigger"
    );
}

fn run_and_validate(db: &Db, plan: &str, args: &[&str]) {
    let mut full = vec!["run", plan];
    full.extend_from_slice(args);
    let output = db.backfill(&full);
    assert_eq!(code(&output), 0, "run: {}", stderr(&output));
    let validate = db.backfill(&["validate", plan]);
    assert_eq!(
        code(&validate),
        0,
        "validate: {}{}",
        String::from_utf8_lossy(&validate.stdout),
        stderr(&validate)
    );
}

#[test]
fn uuid_and_composite_keys_are_backfilled_completely() {
    let db = Db::new("bf-keys");
    db.exec(
        "CREATE TABLE docs (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), kind text, doc_type text);
         INSERT INTO docs (kind) SELECT (ARRAY['a', 'b'])[1 + g % 2] FROM generate_series(1, 5000) g;
         CREATE TABLE events (tenant_id int NOT NULL, seq bigint NOT NULL, kind int, event_type text, PRIMARY KEY (tenant_id, seq));
         INSERT INTO events SELECT t, s * 3, s % 3 FROM generate_series(1, 20) t, generate_series(1, 300) s;",
    );
    let uuid_plan = db.plan(
        "docs.yaml",
        "backfill: docs\ntable: docs\nkey: id\ndiscriminator: doc_type\nfrom: kind\nmap: { a: ADoc, b: BDoc }\ncoverage: application\nbatch: { size: 300, max_size: 700 }\n",
    );
    run_and_validate(&db, uuid_plan.to_str().unwrap(), &[]);
    assert_eq!(
        db.int("SELECT count(*) FROM docs WHERE doc_type IS NULL"),
        0
    );

    let composite_plan = db.plan(
        "events.yaml",
        "backfill: events\ntable: public.events\nkey: [tenant_id, seq]\ndiscriminator: event_type\nfrom: kind\n\
         map: { \"0\": Created, \"1\": Updated }\nunmapped: { default: Other }\ncoverage: application\nbatch: { size: 250, max_size: 400 }\n",
    );
    run_and_validate(&db, composite_plan.to_str().unwrap(), &["--workers", "2"]);
    assert_eq!(
        db.int("SELECT count(*) FROM events WHERE event_type = 'Other'"),
        2000
    );
    assert_eq!(
        db.int("SELECT count(*) FROM sunset.backfill_journal WHERE run = 'events'"),
        6000
    );
}

#[test]
fn workers_in_two_processes_share_one_run_exactly_once() {
    let db = Db::new("bf-workers");
    db.exec(&ACCOUNTS.replace("ROWS", "20000"));
    let plan = db.plan(
        "plan.yaml",
        &accounts_plan("batch: { size: 50, min_size: 10, max_size: 50, target_duration: 1s }\n"),
    );
    let plan = plan.to_str().unwrap();
    let should_change = should_change(&db);
    let mut first = db.spawn(&["run", plan]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while db.int("SELECT count(*) FROM pg_tables WHERE schemaname = 'sunset' AND tablename = 'backfill_ranges'") == 0
        || db.int("SELECT count(*) FROM sunset.backfill_ranges WHERE run = 'accounts-sti' AND state = 'leased'") == 0
    {
        assert!(Instant::now() < deadline, "the first process never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let joined = db.backfill(&["run", plan, "--join", "--workers", "2"]);
    assert_eq!(code(&joined), 0, "joined workers: {}", stderr(&joined));
    let status = first.wait().unwrap();
    assert!(status.success(), "first process: {status}");
    assert!(
        db.int("SELECT count(DISTINCT split_part(leased_by, ':', 2)) FROM sunset.backfill_ranges WHERE run = 'accounts-sti'") >= 2,
        "both processes processed ranges"
    );
    assert_each_changed_once(&db, should_change);
    assert_eq!(code(&db.backfill(&["validate", plan])), 0);
}

#[test]
fn pause_from_another_process_stops_within_a_batch_and_resume_continues() {
    let db = Db::new("bf-pause");
    db.exec(&ACCOUNTS.replace("ROWS", "30000"));
    db.slow_down_each_statement("accounts", "UPDATE");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics_addr = format!("127.0.0.1:{port}");
    let plan = db.plan(
        "plan.yaml",
        &accounts_plan("batch: { size: 40, min_size: 10, max_size: 40, target_duration: 1s }\n"),
    );
    let plan = plan.to_str().unwrap();
    let mut child = db.spawn(&["run", plan, "--metrics-addr", &metrics_addr]);
    let rows_done = |db: &Db| db.status(plan)["rows_seen"].as_i64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let started = db.int("SELECT count(*) FROM pg_tables WHERE schemaname = 'sunset' AND tablename = 'backfill_runs'") == 1
            && db.int("SELECT count(*) FROM sunset.backfill_runs WHERE run = 'accounts-sti'") == 1;
        if started && rows_done(&db) > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the run never made progress");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Metrics: the counters move while the run works.
    let first = scrape(&metrics_addr);
    let deadline = Instant::now() + Duration::from_secs(30);
    while scrape(&metrics_addr) <= first {
        assert!(
            Instant::now() < deadline,
            "rows_processed_total never moved past {first}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let pause = db.backfill(&["pause", plan]);
    assert_eq!(code(&pause), 0, "{}", stderr(&pause));
    let at_pause = rows_done(&db);
    std::thread::sleep(Duration::from_secs(1));
    let after = rows_done(&db);
    assert!(
        after - at_pause <= 40,
        "at most the batch in flight finished after pause ({at_pause} -> {after})"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(rows_done(&db), after, "nothing moves while paused");
    let status = db.status(plan);
    assert_eq!(status["state"], "paused");
    assert!(
        status["throttle"]
            .as_str()
            .unwrap()
            .contains("paused by operator"),
        "{status}"
    );

    assert_eq!(code(&db.backfill(&["resume", plan])), 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while rows_done(&db) == after {
        assert!(Instant::now() < deadline, "resume did not continue the run");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(code(&db.backfill(&["cancel", plan])), 0);
    let status = wait_with_timeout(&mut child, Duration::from_secs(20));
    assert_eq!(status, Some(3), "a cancelled run exits 3 (resumable)");
    run_and_validate(&db, plan, &[]);
}

fn scrape(addr: &str) -> u64 {
    let mut stream = std::net::TcpStream::connect(addr).expect("metrics endpoint");
    std::io::Write::write_all(&mut stream, b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).unwrap();
    assert!(
        body.contains("# TYPE sunset_backfill_batch_duration_seconds histogram"),
        "{body}"
    );
    body.lines()
        .find_map(|line| {
            line.strip_prefix("sunset_backfill_rows_processed_total{run=\"accounts-sti\"} ")
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rows counter in {body}"))
}

fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn bad_plans_and_flags_exit_2_with_a_clear_error_and_change_nothing() {
    let db = Db::new("bf-bad");
    db.exec(&ACCOUNTS.replace("ROWS", "300"));
    db.exec("CREATE TABLE loose (code text UNIQUE, kind text, type text);
             CREATE TABLE pairs (a int NOT NULL, b int NOT NULL, kind text, type text, UNIQUE (b, a));");
    let before = db.digest("accounts");
    let good = accounts_plan("");
    let cases: Vec<(&str, String, Vec<&str>, &str)> = vec![
        (
            "missing table",
            good.replace("table: public.accounts\n", ""),
            vec![],
            "missing field `table`",
        ),
        (
            "unknown table",
            good.replace("public.accounts", "public.nope"),
            vec![],
            "table `public.nope` does not exist",
        ),
        (
            "typo'd key",
            good.replace("table:", "tabel:"),
            vec![],
            "unknown field `tabel`",
        ),
        (
            "wrong discriminator",
            good.replace("discriminator: type", "discriminator: tpye"),
            vec![],
            "discriminator column `tpye` does not exist in table `public.accounts` (did you mean `type`?)",
        ),
        (
            "wrong legacy column",
            good.replace("from: legacy_kind", "from: kind"),
            vec![],
            "`from` column `kind` does not exist",
        ),
        (
            "wrong key column",
            good.replace("key: id", "key: uid"),
            vec![],
            "key column `uid` does not exist",
        ),
        (
            "non-unique key",
            good.replace("key: id", "key: legacy_kind"),
            vec![],
            "key (legacy_kind) is not unique",
        ),
        (
            "nullable key",
            good.replace("public.accounts", "loose")
                .replace("key: id", "key: code")
                .replace("from: legacy_kind", "from: kind")
                .replace("where: \"deleted_at IS NULL\"\n", ""),
            vec![],
            "key column `code` of `public.loose` is nullable",
        ),
        (
            "key in the wrong order",
            good.replace("public.accounts", "pairs")
                .replace("key: id", "key: [a, b]")
                .replace("from: legacy_kind", "from: kind")
                .replace("where: \"deleted_at IS NULL\"\n", ""),
            vec![],
            "write `key: [b, a]`",
        ),
        (
            "unmapped value with unmapped: fail",
            good.replace(", partner: PartnerAccount", ""),
            vec![],
            "`partner`: 98 rows",
        ),
        (
            "hostile table name",
            good.replace("public.accounts", "\"a; drop table accounts\""),
            vec![],
            "table `a; drop table accounts` is not a valid table name",
        ),
        (
            "hostile column name",
            good.replace(
                "discriminator: type",
                "discriminator: \"type; drop table accounts\"",
            ),
            vec![],
            "discriminator column `type; drop table accounts` does not exist",
        ),
        (
            "two statements in where",
            good.replace("deleted_at IS NULL", "true; drop table accounts"),
            vec![],
            "is not valid SQL",
        ),
        (
            "where naming a missing column",
            good.replace("deleted_at IS NULL", "removed_at IS NULL"),
            vec![],
            "column \\\"removed_at\\\" does not exist",
        ),
        (
            "no coverage",
            good.replace("coverage: trigger\n", ""),
            vec![],
            "add `coverage: trigger`",
        ),
        (
            "bad duration",
            format!("{good}batch: {{ target_duration: 200 }}\n"),
            vec![],
            "missing a unit",
        ),
        (
            "zero workers",
            good.clone(),
            vec!["--workers", "0"],
            "--workers",
        ),
        (
            "unknown flag",
            good.clone(),
            vec!["--wrokers", "2"],
            "--wrokers",
        ),
        (
            "bad metrics address",
            good.clone(),
            vec!["--metrics-addr", "localhost"],
            "--metrics-addr",
        ),
    ];
    let count = cases.len();
    for (name, plan_text, flags, expected) in cases {
        let plan = db.plan("bad.yaml", &plan_text);
        let mut args = vec!["run", plan.to_str().unwrap()];
        args.extend(flags);
        let output = db.backfill(&args);
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
    assert!(count >= 15);
    let missing = db.backfill(&["run", "/nonexistent/plan.yaml"]);
    assert_eq!(code(&missing), 2);
    assert!(stderr(&missing).contains("cannot read plan `/nonexistent/plan.yaml`"));
    let plan = db.plan("good.yaml", &good);
    let no_url = Command::new(BIN)
        .args(["run", plan.to_str().unwrap()])
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert_eq!(code(&no_url), 2, "{}", stderr(&no_url));
    assert!(stderr(&no_url).contains("pass --database-url or set DATABASE_URL"));
    assert_eq!(
        db.int("SELECT count(*) FROM type_updates"),
        0,
        "no update ever ran"
    );
}

#[test]
fn ctrl_c_stops_after_the_batch_with_exit_3_and_finish_refuses_untyped_rows_outside_the_plan() {
    let db = Db::new("bf-sigint");
    db.exec(&ACCOUNTS.replace("ROWS", "6000"));
    let plan = db.plan(
        "plan.yaml",
        &accounts_plan("batch: { size: 20, min_size: 10, max_size: 20, target_duration: 1s }\n"),
    );
    let plan = plan.to_str().unwrap();
    let mut child = db.spawn(&["run", plan]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while db.int("SELECT count(*) FROM pg_tables WHERE schemaname = 'sunset' AND tablename = 'backfill_ranges'") == 0
        || db.int("SELECT COALESCE(sum(rows_seen), 0)::bigint FROM sunset.backfill_ranges WHERE run = 'accounts-sti'") == 0
    {
        assert!(Instant::now() < deadline, "the run never made progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(
        wait_with_timeout(&mut child, Duration::from_secs(20)),
        Some(3),
        "Ctrl-C exits 3 after the current batch"
    );
    assert!(db.int("SELECT count(*) FROM type_updates") > 0);
    run_and_validate(&db, plan, &[]);

    // Soft-deleted rows are outside `where`: one without a type makes NOT NULL impossible.
    db.exec("UPDATE accounts SET type = NULL WHERE id = (SELECT min(id) FROM accounts WHERE deleted_at IS NOT NULL)");
    let finish = db.backfill(&["finish", plan]);
    assert_eq!(code(&finish), 1, "{}", stderr(&finish));
    assert!(
        stderr(&finish)
            .contains("rows of `public.accounts` have no `type` (outside the plan's `where`"),
        "{}",
        stderr(&finish)
    );
    assert_eq!(
        db.int("SELECT count(*) FROM pg_constraint WHERE conname = 'accounts_type_not_null'"),
        0,
        "no constraint left behind"
    );
    db.exec("UPDATE accounts SET type = 'DeletedAccount' WHERE type IS NULL");
    let finish = db.backfill(&["finish", plan]);
    assert_eq!(code(&finish), 0, "{}", stderr(&finish));
    assert_eq!(db.text("SELECT attnotnull::text FROM pg_attribute WHERE attrelid = 'accounts'::regclass AND attname = 'type'").as_deref(), Some("true"));
}

#[test]
fn a_long_transaction_pauses_the_run_with_the_reason_shown_until_it_ends() {
    let db = Db::new("bf-health");
    db.exec(&ACCOUNTS.replace("ROWS", "20000"));
    let plan = db.plan(
        "plan.yaml",
        &accounts_plan(
            "batch: { size: 20, min_size: 10, max_size: 20, target_duration: 1s }\nthrottle: { max_transaction_age: 1s }\n",
        ),
    );
    let plan = plan.to_str().unwrap();
    // Another session holds a transaction open past the limit when the run starts.
    let holder = db.runtime.block_on(connect(&db.url));
    db.runtime
        .block_on(holder.batch_execute("BEGIN; SELECT txid_current()"))
        .unwrap();
    // Until the server itself says it is older than the plan's limit.
    let deadline = Instant::now() + Duration::from_secs(30);
    while db.int(
        "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND backend_xid IS NOT NULL
         AND datname = current_database() AND now() - xact_start > interval '1s'",
    ) == 0
    {
        assert!(Instant::now() < deadline, "the open transaction never got old enough");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut child = db.spawn(&["run", plan]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let reason = loop {
        let output = db.backfill(&["status", plan, "--json"]);
        let status: serde_json::Value =
            serde_json::from_slice(&output.stdout).unwrap_or(serde_json::Value::Null);
        if let Some(reason) = status["throttle"].as_str() {
            break reason.to_owned();
        }
        assert!(
            status["state"] != "done",
            "the run ended without noticing the transaction: {status}"
        );
        assert!(Instant::now() < deadline, "the run never paused: {status}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        reason.contains("a transaction open for"),
        "reason shown in status: {reason}"
    );
    let seen = db.status(plan)["rows_seen"].as_i64().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        db.status(plan)["rows_seen"].as_i64().unwrap(),
        seen,
        "no batch while paused"
    );
    assert!(child.try_wait().unwrap().is_none(), "a paused run waits");
    db.runtime.block_on(holder.batch_execute("COMMIT")).unwrap();
    assert_eq!(
        wait_with_timeout(&mut child, Duration::from_secs(60)),
        Some(0),
        "the run resumes on its own and completes"
    );
    assert_eq!(code(&db.backfill(&["validate", plan])), 0);
}

/// The run over TLS, the certificate verified (`sslmode=verify-full`): every session of the run
/// (workers, monitor, run lock) is encrypted.
#[test]
fn a_run_over_verified_tls_encrypts_every_session() {
    let db = Db::new("bf-tls");
    db.exec(
        "CREATE TABLE docs (id int PRIMARY KEY, kind text, doc_type text);
         INSERT INTO docs SELECT g, (ARRAY['a', 'b'])[1 + g % 2] FROM generate_series(1, 3000) g;",
    );
    let Some(ca) = sunset_test_support::tls_ca_file() else {
        return;
    };
    // The certificate is for `localhost`.
    let url = format!(
        "{}?sslmode=verify-full&sslrootcert={ca}",
        db.url.replacen("@127.0.0.1:", "@localhost:", 1)
    );
    let plan = db.plan(
        "docs.yaml",
        "backfill: docs\ntable: docs\nkey: id\ndiscriminator: doc_type\nfrom: kind\nmap: { a: ADoc, b: BDoc }\ncoverage: application\nbatch: { size: 200 }\n",
    );
    db.exec(
        "CREATE TABLE plain_sessions (n bigint);
         CREATE FUNCTION count_plain() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
           INSERT INTO plain_sessions SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
           WHERE a.application_name LIKE 'sunset%' AND NOT s.ssl;
           RETURN NEW; END $$;
         CREATE TRIGGER count_plain AFTER UPDATE ON docs FOR EACH STATEMENT EXECUTE FUNCTION count_plain();",
    );
    let output = db
        .command(&["run", plan.to_str().unwrap(), "--workers", "2"])
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert_eq!(
        db.int("SELECT count(*) FROM docs WHERE doc_type IS NULL"),
        0
    );
    assert!(
        db.int("SELECT count(*) FROM plain_sessions") > 0,
        "the trigger saw the batches"
    );
    assert_eq!(
        db.int("SELECT coalesce(max(n), 0) FROM plain_sessions"),
        0,
        "a sunset session was not encrypted"
    );
    // A wrong CA is refused before anything is written.
    let wrong = db
        .command(&["run", plan.to_str().unwrap()])
        .env(
            "DATABASE_URL",
            format!(
                "{}?sslmode=verify-full&sslrootcert=system",
                db.url.replacen("@127.0.0.1:", "@localhost:", 1)
            ),
        )
        .output()
        .unwrap();
    assert_eq!(code(&wrong), 1, "{}", stderr(&wrong));
    assert!(
        stderr(&wrong).to_lowercase().contains("certificate"),
        "{}",
        stderr(&wrong)
    );
}

#[test]
fn a_lost_run_lock_stops_the_workers_after_their_batch_and_the_run_resumes_exactly() {
    let db = Db::new("bf-lock");
    db.exec(&ACCOUNTS.replace("ROWS", "30000"));
    db.slow_down_each_statement("accounts", "UPDATE");
    let plan = db.plan(
        "plan.yaml",
        &accounts_plan("batch: { size: 40, min_size: 10, max_size: 40, target_duration: 1s }\n"),
    );
    let plan = plan.to_str().unwrap();
    let mut child = db.spawn(&["run", plan, "--workers", "2"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let started = db.int("SELECT count(*) FROM pg_tables WHERE schemaname = 'sunset' AND tablename = 'run_locks'") == 1
            && db.int("SELECT count(*) FROM sunset.run_locks WHERE run = 'accounts-sti'") == 1
            && db.int("SELECT count(*) FROM pg_tables WHERE schemaname = 'sunset' AND tablename = 'backfill_ranges'") == 1
            && db.int("SELECT COALESCE(sum(rows_seen), 0)::bigint FROM sunset.backfill_ranges WHERE run = 'accounts-sti'") > 0;
        if started {
            break;
        }
        assert!(Instant::now() < deadline, "the run never made progress");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The lock's own session ends, as when its connection drops; the workers' sessions live on.
    let terminated = db.int(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(backend_pid) FROM sunset.run_locks WHERE run = 'accounts-sti') t",
    );
    assert_eq!(terminated, 1);
    let status = wait_with_timeout(&mut child, Duration::from_secs(30));
    let err = child.stderr_text();
    assert_eq!(status, Some(1), "{err}");
    assert!(err.contains("run lock of `accounts-sti` was lost"), "{err}");
    let left = db.int(
        "SELECT count(*) FROM sunset.backfill_ranges WHERE run = 'accounts-sti' AND state <> 'done'",
    );
    assert!(left > 0, "the kill landed mid-run: ranges were left to do");
    // Nothing of the stopped run was lost or doubled: the resumed run finishes and validates,
    // and every row the plan changes was updated exactly once.
    run_and_validate(&db, plan, &[]);
    assert_eq!(
        db.int("SELECT count(*) FROM type_updates WHERE n <> 1"),
        0,
        "a row was updated twice"
    );
    assert_eq!(
        db.int("SELECT count(*) FROM type_updates"),
        should_change(&db)
    );
}

#[test]
fn a_closed_stdout_is_not_a_failure() {
    let db = Db::new("bf-pipe");
    db.exec(&ACCOUNTS.replace("ROWS", "100"));
    let plan = db.plan("plan.yaml", &accounts_plan(""));
    let plan = plan.to_str().unwrap();
    run_and_validate(&db, plan, &[]);
    let (exit, stderr) =
        sunset_test_support::run_with_closed_stdout(&mut db.command(&["status", plan, "--json"]));
    assert_eq!(exit, Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn help_of_every_command_is_pinned() {
    expect_test::expect_file!["snapshots/help.txt"].assert_eq(&sunset_test_support::help_text(BIN));
}

/// 20,000 accounts whose every UPDATE statement sleeps 4 ms, and a plan of 20-row batches: a
/// run that lasts seconds. The plan's path and how many rows it should change.
fn slow_accounts(db: &Db) -> (String, i64) {
    db.exec(&ACCOUNTS.replace("ROWS", "20000"));
    db.slow_down_each_statement("accounts", "UPDATE");
    let plan = db.plan(
        "plan.yaml",
        &accounts_plan("batch: { size: 20, min_size: 10, max_size: 20, target_duration: 50ms }\n"),
    );
    (plan.to_str().unwrap().to_owned(), should_change(db))
}

/// Every row that needed a type got it, and none was updated twice.
fn assert_each_changed_once(db: &Db, should_change: i64) {
    assert_eq!(
        db.int("SELECT count(*) FROM type_updates WHERE n > 1"),
        0,
        "no row updated twice"
    );
    assert_eq!(db.int("SELECT count(*) FROM type_updates"), should_change);
}

/// Waits until `sql` (a count) is positive, panicking with `what` after a minute.
fn wait_for_count(db: &Db, what: &str, sql: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = db
            .text("SELECT to_regclass('sunset.backfill_ranges')::text")
            .is_some()
            && db.int(sql) > 0;
        if ready {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Two `run` processes on one plan: the second is refused at once, naming the holder's pid, host
/// and start time, and changes nothing; the first still ends the run exactly once.
#[test]
fn a_second_run_of_the_same_plan_is_refused_naming_the_holder() {
    let db = Db::new("bf-second");
    let (plan, should_change) = slow_accounts(&db);
    let plan = plan.as_str();
    let mut first = db.spawn(&["run", plan]);
    wait_for_count(
        &db,
        "the first run leases a range",
        "SELECT count(*) FROM sunset.backfill_ranges WHERE run = 'accounts-sti' AND state = 'leased'",
    );
    let journal = || db.int("SELECT count(*) FROM sunset.backfill_undo WHERE run = 'accounts-sti'");
    let second = db.backfill(&["run", plan]);
    let message = stderr(&second);
    assert_eq!(code(&second), 1, "{message}");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_owned();
    for expected in [
        format!("pid {}", first.id()),
        format!("on host `{host}`"),
        "started 20".to_owned(),
    ] {
        assert!(message.contains(&expected), "no `{expected}` in: {message}");
    }
    let committed = journal();
    let status = first.wait().unwrap();
    assert!(status.success(), "the first run: {status}");
    assert!(journal() >= committed, "the journal only grew");
    assert_each_changed_once(&db, should_change);
}

/// A process SIGKILLed while its worker holds a lease: a worker of another process on the same
/// run takes the range over as soon as it looks (the lease's session is gone), long before the
/// lease's 60 s expiry, and the run still changes each row exactly once.
#[test]
fn a_killed_processes_lease_is_taken_over_by_a_running_worker_at_once() {
    let db = Db::new("bf-takeover");
    let (plan, should_change) = slow_accounts(&db);
    let plan = plan.as_str();
    let mut first = db.spawn(&["run", plan]);
    let first_pid = first.id();
    let held_by_first = format!(
        "SELECT count(*) FROM sunset.backfill_ranges WHERE run = 'accounts-sti' AND state = 'leased'
         AND split_part(leased_by, ':', 2) = '{first_pid}'"
    );
    wait_for_count(&db, "the first process leases a range", &held_by_first);
    let mut joined = db.spawn(&["run", plan, "--join"]);
    let joined_pid = joined.id();
    wait_for_count(
        &db,
        "the joined process leases a range",
        &format!(
            "SELECT count(*) FROM sunset.backfill_ranges WHERE run = 'accounts-sti' AND state = 'leased'
             AND split_part(leased_by, ':', 2) = '{joined_pid}'"
        ),
    );
    let orphaned = db.strings(&format!(
        "SELECT range_no::text FROM sunset.backfill_ranges WHERE run = 'accounts-sti' AND state = 'leased'
         AND split_part(leased_by, ':', 2) = '{first_pid}'"
    ));
    assert!(
        !orphaned.is_empty(),
        "the first process holds a lease when killed"
    );
    first.kill().unwrap();
    first.wait().unwrap();
    let killed_at = Instant::now();
    let ranges = orphaned.join(", ");
    let deadline = killed_at + Duration::from_secs(30);
    while db.int(&format!(
        "SELECT count(*) FROM sunset.backfill_ranges WHERE run = 'accounts-sti' AND range_no IN ({ranges})
         AND state = 'leased' AND split_part(leased_by, ':', 2) = '{first_pid}'"
    )) > 0
    {
        assert!(
            Instant::now() < deadline,
            "ranges {ranges} of the killed process were not taken over within 30 s (the lease expires after 60 s)"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = joined.wait().unwrap();
    assert!(
        status.success(),
        "the joined process ends the run: {status}"
    );
    assert_each_changed_once(&db, should_change);
    assert_eq!(code(&db.backfill(&["validate", plan])), 0);
}

/// Rows already typed otherwise than the mapping says (the fixture's `LegacyAccount`s): preflight
/// counts them with their first keys; `overwrite` unset leaves them alone and validate lists them
/// (and passes); `overwrite: true` replaces them, journalled, and rollback brings them back.
#[test]
fn rows_typed_otherwise_are_counted_by_preflight_and_kept_unless_overwrite() {
    let db = Db::new("bf-overwrite");
    db.exec(&ACCOUNTS.replace("ROWS", "3000"));
    let in_scope = |condition: &str| {
        db.int(&format!(
            "SELECT count(*) FROM accounts WHERE deleted_at IS NULL AND {condition}"
        ))
    };
    let otherwise = in_scope("type = 'LegacyAccount'");
    let same = in_scope("type IS NOT NULL AND type <> 'LegacyAccount'");
    let first_otherwise = db
        .text("SELECT min(id)::text FROM accounts WHERE deleted_at IS NULL AND type = 'LegacyAccount'")
        .unwrap();
    assert!(otherwise > 0 && same > 0, "the fixture has both kinds");

    let keep = db.plan(
        "keep.yaml",
        &accounts_plan("").replace("overwrite: true\n", ""),
    );
    let keep = keep.to_str().unwrap();
    let preflight = db.succeed(&["preflight", keep, "--json"], "preflight");
    let report: serde_json::Value = serde_json::from_slice(&preflight.stdout).unwrap();
    let typed = &report["already_typed"];
    assert_eq!(typed["same"], same, "{report}");
    assert_eq!(typed["different"], otherwise, "{report}");
    assert_eq!(typed["overwrite"], false, "{report}");
    assert_eq!(
        typed["sample"][0]["key"][0],
        first_otherwise.as_str(),
        "{report}"
    );
    assert_eq!(typed["sample"][0]["type"], "LegacyAccount", "{report}");
    let text = stderr(&db.succeed(&["preflight", keep], "preflight"));
    assert!(
        text.contains(&format!(
            "{otherwise} otherwise: left alone (overwrite: false"
        )),
        "{text}"
    );
    db.succeed(&["run", keep], "the run");
    assert_eq!(
        in_scope("type = 'LegacyAccount'"),
        otherwise,
        "rows typed otherwise keep their type"
    );
    assert_eq!(
        in_scope("type IS NULL"),
        0,
        "every untyped row got its type"
    );
    let validate = db.succeed(&["validate", keep, "--json"], "validate passes");
    let validation: serde_json::Value = serde_json::from_slice(&validate.stdout).unwrap();
    assert_eq!(validation["kept"], otherwise, "{validation}");
    assert_eq!(validation["mismatched"], 0, "{validation}");
    assert_eq!(
        validation["kept_keys"][0][0],
        first_otherwise.as_str(),
        "{validation}"
    );
    let listed = db.succeed(&["validate", keep], "validate passes");
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains(&format!(
            "kept another type (overwrite: false): {otherwise} rows"
        )),
        "{}",
        String::from_utf8_lossy(&listed.stdout)
    );
    db.succeed(&["rollback", keep], "rollback");

    let replace = db.plan(
        "replace.yaml",
        &accounts_plan("").replace("backfill: accounts-sti", "backfill: accounts-replace"),
    );
    let replace = replace.to_str().unwrap();
    let text = stderr(&db.succeed(&["preflight", replace], "preflight"));
    assert!(
        text.contains(&format!("{otherwise} otherwise: REPLACED")),
        "{text}"
    );
    db.succeed(&["run", replace], "the run");
    assert_eq!(
        in_scope("type = 'LegacyAccount'"),
        0,
        "overwrite: true replaces them"
    );
    assert_eq!(
        db.int("SELECT count(*) FROM sunset.backfill_journal WHERE run = 'accounts-replace' AND old_value = 'LegacyAccount'"),
        otherwise,
        "each replaced type is journalled"
    );
    db.succeed(&["rollback", replace], "rollback");
    assert_eq!(
        db.int("SELECT count(*) FROM snapshot s JOIN accounts a USING (id) WHERE s.type IS DISTINCT FROM a.type"),
        0,
        "rollback brings every type back"
    );
}
