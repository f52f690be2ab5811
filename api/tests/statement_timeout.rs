//! A statement Postgres cancels at the statement timeout is answered
//! `TIMEOUT` (worth a retry), not `INTERNAL`: here a read waits behind a
//! table lock that another session holds.
//!
//! Needs PostgreSQL (`DATABASE_URL`).

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use support::{ADMIN, App, error_code};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_cancelled_by_postgres_is_a_timeout() {
    let app = App::builder()
        .statement_timeout(Duration::from_millis(300))
        .request_timeout(Duration::from_secs(10))
        .start()
        .await;
    // Another session takes the table and keeps it for a while.
    let mut holder = Command::new("psql")
        .arg(&app.db.url)
        .args([
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            "BEGIN; LOCK TABLE snapshots IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(20); COMMIT;",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run psql (PostgreSQL client)");
    let locked = "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
                  WHERE c.relname = 'snapshots' AND l.mode = 'AccessExclusiveLock' AND l.granted";
    let waited = Instant::now();
    while app.db.query(locked) != "1" {
        assert!(
            waited.elapsed() < Duration::from_secs(10),
            "the lock was never taken"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let started = Instant::now();
    let body = app
        .graphql(
            ADMIN,
            "{ snapshots(first: 5) { edges { node { id } } } }",
            json!({}),
        )
        .await;
    let took = started.elapsed();
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(error_code(&body).as_deref(), Some("TIMEOUT"), "{body}");
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("statement timeout"), "{message}");
    assert!(took < Duration::from_secs(5), "answered after {took:?}");
}
