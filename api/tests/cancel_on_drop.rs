//! `db::query_cancellable` on Postgres: a statement whose future is dropped
//! (deadline, client gone) is cancelled in the server at once; the same
//! statement run plainly keeps running after the drop (the control, which
//! shows why the guard exists). Needs PostgreSQL (`DATABASE_URL`).

use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement};

async fn postgres() -> DatabaseConnection {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| {
        panic!(
            "DATABASE_URL is not set: this test needs PostgreSQL; run \
             `scripts/dev-env.sh start && source .dcs-env/env.sh`"
        )
    });
    Database::connect(url).await.expect("connect to PostgreSQL")
}

/// Active statements (other than this one) whose text holds `marker`.
async fn running(db: &DatabaseConnection, marker: &str) -> i64 {
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT count(*) AS n FROM pg_stat_activity \
             WHERE state = 'active' AND pid <> pg_backend_pid() AND query LIKE $1",
            [format!("%{marker}%").into()],
        ))
        .await
        .expect("pg_stat_activity")
        .expect("a row");
    row.try_get("", "n").expect("count")
}

async fn until_gone(db: &DatabaseConnection, marker: &str, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if running(db, marker).await == 0 {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_statement_is_cancelled_in_the_server() {
    let db = postgres().await;
    let marker = format!("m{}", uuid::Uuid::new_v4().simple());
    let sql = format!("SELECT pg_sleep(30), '{marker}' AS marker");

    // The control: dropped, but still running in the server.
    let plain = tokio::time::timeout(
        Duration::from_millis(500),
        db.query_all_raw(Statement::from_string(DbBackend::Postgres, sql.clone())),
    )
    .await;
    assert!(plain.is_err(), "pg_sleep(30) cannot answer in 0.5 s");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        running(&db, &marker).await,
        1,
        "a plain statement keeps running after its future is dropped"
    );
    db.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT pg_cancel_backend(pid) FROM pg_stat_activity \
         WHERE pid <> pg_backend_pid() AND query LIKE $1",
        [format!("%{marker}%").into()],
    ))
    .await
    .expect("cancel the control");
    assert!(
        until_gone(&db, &marker, Duration::from_secs(5))
            .await
            .is_some(),
        "the control could not be cancelled"
    );

    // Through the guard: gone at once.
    let guarded = tokio::time::timeout(
        Duration::from_millis(500),
        api::db::query_cancellable(&db, &sql, Vec::new()),
    )
    .await;
    assert!(guarded.is_err());
    let gone = until_gone(&db, &marker, Duration::from_secs(2)).await;
    println!("guarded statement gone {gone:?} after the drop");
    assert!(gone.is_some(), "the dropped statement is still running");

    // And a statement that answers in time answers.
    let rows = api::db::query_cancellable(&db, "SELECT 1 AS one", Vec::new())
        .await
        .expect("SELECT 1");
    assert_eq!(rows.len(), 1);
}
