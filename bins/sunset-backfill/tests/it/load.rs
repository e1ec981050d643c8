//! Gentleness on a live database: the plan's pace (`throttle.max_rows_per_second`, a lower
//! bound on how long a run takes that no machine can beat) and the load signals that pause a
//! run (other active sessions, a slow probe), each proved by loading the server for real.

use std::time::{Duration, Instant};

use crate::support::{ACCOUNTS, Db, accounts_plan, code, stderr};

#[test]
fn max_rows_per_second_holds_for_two_workers_together() {
    let db = Db::new("bf-pace");
    db.exec(&ACCOUNTS.replace("ROWS", "6000"));
    let in_scope = db.int("SELECT count(*) FROM accounts WHERE deleted_at IS NULL");
    let cap = 2000;
    let plan = db.plan(
        "plan.yaml",
        &accounts_plan(&format!(
            "batch: {{ size: 100, min_size: 10, max_size: 200, target_duration: 1s }}\nthrottle: {{ max_rows_per_second: {cap} }}\n"
        )),
    );
    let plan = plan.to_str().unwrap();
    let started = Instant::now();
    let run = db.backfill(&["run", plan, "--workers", "2"]);
    let took = started.elapsed();
    assert_eq!(code(&run), 0, "{}", stderr(&run));
    // Every row but the last batch's waits for its share of the cap before the next is sent.
    let floor = Duration::from_secs_f64((in_scope - 200) as f64 / cap as f64);
    assert!(
        took >= floor,
        "{in_scope} rows at most {cap}/s take at least {floor:?}, took {took:?}"
    );
    assert_eq!(code(&db.backfill(&["validate", plan])), 0);
}

/// Runs `plan` slowed down (4 ms a batch), waits for its first batches, then calls `hold` (which
/// loads the server its own way and returns what ends the load), and checks that the run stops
/// moving with `reason` in `status`, and moves again and finishes once the load ends.
fn paused_by_load_then_resumed(
    db: &Db,
    plan_extra: &str,
    reason: &str,
    hold: impl FnOnce(&Db) -> Box<dyn FnOnce()>,
) {
    db.exec(&ACCOUNTS.replace("ROWS", "30000"));
    db.slow_down_each_statement("accounts", "UPDATE");
    let plan = db.plan(
        "plan.yaml",
        &accounts_plan(&format!(
            "batch: {{ size: 40, min_size: 10, max_size: 40, target_duration: 1s }}\n{plan_extra}"
        )),
    );
    let plan = plan.to_str().unwrap();
    let mut run = db.spawn(&["run", plan]);
    let rows_done = |db: &Db| db.status(plan)["rows_seen"].as_i64().unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(60);
    while db.int("SELECT count(*) FROM pg_tables WHERE schemaname = 'sunset' AND tablename = 'backfill_runs'") == 0
        || db.int("SELECT count(*) FROM sunset.backfill_runs WHERE run = 'accounts-sti'") == 0
        || rows_done(db) == 0
    {
        assert!(Instant::now() < deadline, "the run never made progress");
        std::thread::sleep(Duration::from_millis(50));
    }
    let release = hold(db);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let status = db.status(plan);
        if status["throttle"]
            .as_str()
            .is_some_and(|t| t.contains(reason))
        {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the load never paused the run: {status}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // Paused: at most the batch in flight commits.
    let at_pause = rows_done(db);
    std::thread::sleep(Duration::from_secs(1));
    let held = rows_done(db);
    assert!(
        held - at_pause <= 40,
        "{at_pause} -> {held} while paused ({status})"
    );
    assert!(
        run.try_wait().unwrap().is_none(),
        "a paused run waits, it does not exit"
    );
    release();
    let deadline = Instant::now() + Duration::from_secs(120);
    let exit = loop {
        if let Some(exit) = run.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "the run did not finish once the load ended"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(exit.success(), "{}", run.stderr_text());
    assert!(rows_done(db) > held, "the run moved again");
    assert_eq!(code(&db.backfill(&["validate", plan])), 0);
}

#[test]
fn other_active_sessions_above_max_active_sessions_pause_the_run_until_they_end() {
    let db = Db::new("bf-sessions");
    paused_by_load_then_resumed(
        &db,
        "throttle: { max_active_sessions: 3 }\n",
        "other sessions running queries > 3",
        |db| {
            // Five sessions busy with a query, as an application at peak would be.
            let url = db.url.clone();
            let busy = std::thread::spawn(move || {
                let runtime = sunset_test_support::harness::runtime();
                runtime.block_on(async {
                    let mut sessions = Vec::new();
                    for _ in 0..5 {
                        let client = sunset_test_support::connect(&url).await;
                        sessions.push(tokio::spawn(async move {
                            let _ = client
                                .batch_execute("SELECT pg_sleep(120) /* busy */")
                                .await;
                        }));
                    }
                    for session in sessions {
                        let _ = session.await;
                    }
                });
            });
            let deadline = Instant::now() + Duration::from_secs(30);
            while db.int("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(120) /* busy */%' AND state = 'active'") < 5 {
                assert!(Instant::now() < deadline, "the busy sessions never started");
                std::thread::sleep(Duration::from_millis(50));
            }
            let db_url = db.url.clone();
            Box::new(move || {
                let runtime = sunset_test_support::harness::runtime();
                runtime.block_on(async {
                    sunset_test_support::connect(&db_url)
                        .await
                        .batch_execute("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(120) /* busy */%'")
                        .await
                        .unwrap();
                });
                busy.join().unwrap();
            })
        },
    );
}

#[test]
fn a_probe_slower_than_max_probe_latency_pauses_the_run_until_it_is_fast_again() {
    let db = Db::new("bf-probe");
    db.exec("CREATE TABLE orders (id int PRIMARY KEY); INSERT INTO orders SELECT generate_series(1, 100);");
    paused_by_load_then_resumed(
        &db,
        "throttle: { probe: \"SELECT count(*) FROM orders\", max_probe_latency: 200ms }\n",
        "the probe took",
        |db| {
            // The application's table locked by a long migration: its queries (and the probe) wait.
            let url = db.url.clone();
            let (locked_tx, locked_rx) = std::sync::mpsc::channel();
            let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
            let holder = std::thread::spawn(move || {
                let runtime = sunset_test_support::harness::runtime();
                runtime.block_on(async {
                    let client = sunset_test_support::connect(&url).await;
                    client
                        .batch_execute("BEGIN; LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
                        .await
                        .unwrap();
                    locked_tx.send(()).unwrap();
                    let _ = tokio::task::spawn_blocking(move || release_rx.recv()).await;
                    client.batch_execute("ROLLBACK").await.unwrap();
                });
            });
            locked_rx.recv().unwrap();
            Box::new(move || {
                release_tx.send(()).unwrap();
                holder.join().unwrap();
            })
        },
    );
}
