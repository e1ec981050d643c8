//! The plan's pace (`throttle.max_rows_per_second`): a lower bound on how long a run takes,
//! which no machine can beat, whatever its speed.

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
