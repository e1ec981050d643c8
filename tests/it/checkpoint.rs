//! The checkpoint stores under the conditions they exist for: SIGKILL at any instant, a caller's
//! transaction that rolls back, and a second runner of the same run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sunset_checkpoint::{Error, FileStore, PgRunLock, PgStore};
use sunset_test_support::{connect, fresh_database, unique_name};
use sunset_tests::CrashState;

use crate::support::{Fixture, Jitter, last_saved};

const WRITER: &str = env!("CARGO_BIN_EXE_sunset-checkpoint-writer");

fn seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

#[test]
fn file_checkpoints_are_never_torn_when_the_writer_is_sigkilled() {
    let dir = tempfile::tempdir().unwrap();
    let dir_arg = dir.path().to_str().unwrap();
    let store = FileStore::in_dir(dir.path(), "crash");

    // A reader loads continuously while the writer runs and is killed: every read must be whole.
    let stop = Arc::new(AtomicBool::new(false));
    let whole_reads = Arc::new(AtomicU64::new(0));
    let reader = {
        let (store, stop, whole_reads) = (store.clone(), stop.clone(), whole_reads.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match store.load::<CrashState>() {
                    Ok(None) => {}
                    Ok(Some(checkpoint)) => {
                        assert!(
                            checkpoint.state.is_whole(),
                            "a reader saw a torn checkpoint"
                        );
                        whole_reads.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(error) => panic!("a reader saw an unreadable checkpoint: {error}"),
                }
            }
        })
    };

    let seed = seed();
    let mut jitter = Jitter::new(seed);
    let mut previous = 0;
    for round in 0..30 {
        let mut writer = Fixture::spawn(WRITER, &["file", dir_arg, "crash"]);
        writer.wait_for("locked");
        std::thread::sleep(jitter.millis(5..80));
        let acknowledged = last_saved(&writer.kill());
        // On a loaded machine the first round's writer can be killed before its first save.
        let Some(checkpoint) = store.load::<CrashState>().unwrap() else {
            assert!(
                acknowledged.is_none() && previous == 0,
                "round {round} (seed {seed}): a saved checkpoint is gone"
            );
            continue;
        };
        let acknowledged = acknowledged.unwrap_or(previous);
        assert!(
            checkpoint.state.is_whole(),
            "round {round} (seed {seed}): torn checkpoint"
        );
        let counter = checkpoint.state.counter;
        assert!(
            counter == acknowledged || counter == acknowledged + 1,
            "round {round} (seed {seed}): checkpoint {counter} is neither the last acknowledged ({acknowledged}) nor the next"
        );
        assert!(
            counter >= previous,
            "round {round}: progress went backwards ({previous} -> {counter})"
        );
        previous = counter;
    }
    stop.store(true, Ordering::Relaxed);
    reader
        .join()
        .expect("the reader saw only whole checkpoints");
    assert!(
        previous >= 30,
        "the writer made progress across kills (reached {previous})"
    );
    assert!(
        whole_reads.load(Ordering::Relaxed) > 0,
        "the reader read checkpoints while the writer ran"
    );
}

#[test]
fn a_second_file_runner_is_refused_with_the_holder_and_a_killed_one_leaves_no_lock() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::in_dir(dir.path(), "locked-run");
    let mut writer = Fixture::spawn(
        WRITER,
        &["file", dir.path().to_str().unwrap(), "locked-run"],
    );
    writer.wait_for("locked");
    let error = store.lock().expect_err("the fixture holds the lock");
    let Error::Locked { holder, .. } = &error else {
        panic!("expected Locked, got {error}")
    };
    assert_eq!(holder.pid, writer.pid());
    assert!(
        error.to_string().starts_with(&format!(
            "run `locked-run` is already running: held by pid {} on host `",
            writer.pid()
        )),
        "{error}"
    );
    writer.kill();
    store
        .lock()
        .expect("the kernel released the lock of the killed runner");
}

#[tokio::test(flavor = "multi_thread")]
async fn pg_checkpoints_commit_with_their_batch_across_sigkills() {
    let url = fresh_database("crash").await;
    let client = connect(&url).await;
    client
        .batch_execute("CREATE TABLE crash_rows (n bigint PRIMARY KEY)")
        .await
        .unwrap();
    let mut jitter = Jitter::new(seed());
    let mut previous = 0;
    for round in 0..10 {
        let mut writer = Fixture::spawn(WRITER, &["pg", &url, "pg-crash", "crash_rows"]);
        writer.wait_for("locked");
        tokio::time::sleep(jitter.millis(20..200)).await;
        let acknowledged = last_saved(&writer.kill()).unwrap_or(previous);
        let mut fresh = connect(&url).await;
        let store = PgStore::open(&mut fresh, "pg-crash").await.unwrap();
        let checkpoint = store
            .load::<serde_json::Value>(&fresh)
            .await
            .unwrap()
            .expect("a checkpoint exists");
        let counter = checkpoint.state["counter"].as_u64().unwrap();
        let row = fresh
            .query_one("SELECT count(*), coalesce(max(n), 0) FROM crash_rows", &[])
            .await
            .unwrap();
        let (rows, max): (i64, i64) = (row.get(0), row.get(1));
        assert_eq!(
            (u64::try_from(rows).unwrap(), u64::try_from(max).unwrap()),
            (counter, counter),
            "round {round}: every batch is committed exactly once with its checkpoint"
        );
        assert!(
            counter == acknowledged || counter == acknowledged + 1,
            "round {round}: {counter} vs {acknowledged}"
        );
        previous = counter;
    }
    assert!(
        previous >= 10,
        "the writer made progress across kills (reached {previous})"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pg_checkpoint_rolls_back_with_the_callers_transaction() {
    let url = fresh_database("rollback").await;
    let mut client = connect(&url).await;
    let store = PgStore::open(&mut client, "tx-run").await.unwrap();
    store
        .save(&client, "plan-a", &serde_json::json!({ "done": 1 }))
        .await
        .unwrap();

    let transaction = client.transaction().await.unwrap();
    store
        .save(&transaction, "plan-a", &serde_json::json!({ "done": 2 }))
        .await
        .unwrap();
    let inside = store
        .load::<serde_json::Value>(&transaction)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        inside.state["done"], 2,
        "the transaction sees its own checkpoint"
    );
    transaction.rollback().await.unwrap();
    let after_rollback = store
        .load::<serde_json::Value>(&client)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        after_rollback.state["done"], 1,
        "the rolled back checkpoint is gone"
    );

    let transaction = client.transaction().await.unwrap();
    store
        .save(&transaction, "plan-a", &serde_json::json!({ "done": 3 }))
        .await
        .unwrap();
    transaction.commit().await.unwrap();
    assert_eq!(
        store
            .load::<serde_json::Value>(&client)
            .await
            .unwrap()
            .unwrap()
            .state["done"],
        3
    );

    let changed = store
        .resume::<serde_json::Value>(&client, "plan-b", false)
        .await
        .unwrap_err();
    assert!(matches!(changed, Error::PlanChanged { .. }), "{changed}");
    assert_eq!(
        store
            .resume::<serde_json::Value>(&client, "plan-b", true)
            .await
            .unwrap(),
        None
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_first_runners_create_the_schema_once() {
    let url = fresh_database("schema-race").await;
    let mut handles = Vec::new();
    for i in 0..8 {
        let url = url.clone();
        handles.push(tokio::spawn(async move {
            let mut client = connect(&url).await;
            PgStore::open(&mut client, &format!("run-{i}"))
                .await
                .map(drop)
        }));
    }
    for handle in handles {
        handle
            .await
            .unwrap()
            .expect("every concurrent open succeeds");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_pg_runner_is_refused_with_the_holder_and_a_killed_one_leaves_no_lock() {
    let url = fresh_database("lock").await;
    let run = unique_name("lock-run");
    let mut holder = Fixture::spawn(WRITER, &["hold-pg-lock", &url, &run]);
    holder.wait_for("locked");
    let error = PgRunLock::acquire(&url, &run)
        .await
        .expect_err("the fixture holds the lock");
    let Error::Locked { holder: who, .. } = &error else {
        panic!("expected Locked, got {error}")
    };
    assert_eq!(who.pid, holder.pid());
    assert!(
        error
            .to_string()
            .contains(&format!("held by pid {} on host `", holder.pid())),
        "{error}"
    );

    // In-process too: a second session of the same process is refused as well.
    let other_run = unique_name("lock-run");
    let first = PgRunLock::acquire(&url, &other_run).await.unwrap();
    assert!(matches!(
        PgRunLock::acquire(&url, &other_run).await,
        Err(Error::Locked { .. })
    ));
    first.release().await.unwrap();
    PgRunLock::acquire(&url, &other_run)
        .await
        .expect("released explicitly");

    holder.kill();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match PgRunLock::acquire(&url, &run).await {
            Ok(_) => break,
            Err(Error::Locked { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(error) => panic!("the killed runner's lock was not released: {error}"),
        }
    }
}
