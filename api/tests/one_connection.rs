//! `db::OneConnection`: the reads of one request share one pooled
//! connection on Postgres (one release, one ping), and errors come back as
//! SeaORM reports them, so their codes stay the same.
//!
//! Needs PostgreSQL (`DATABASE_URL`).

mod support;

use api::db::OneConnection;
use sea_orm::{DbBackend, Statement};
use support::App;

async fn backend_pid(reads: &mut OneConnection<'_>) -> i32 {
    let rows = reads
        .query_all(Statement::from_string(
            DbBackend::Postgres,
            "SELECT pg_backend_pid() AS pid",
        ))
        .await
        .expect("a read");
    rows[0].try_get::<i32>("", "pid").expect("pid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reads_of_one_holder_share_a_connection_and_others_get_their_own() {
    let app = App::start().await;
    let db = &app.state.db;
    let mut first = OneConnection::new(db);
    let a = backend_pid(&mut first).await;
    let b = backend_pid(&mut first).await;
    assert_eq!(a, b, "two reads of one holder, two connections");
    let mut second = OneConnection::new(db);
    let c = backend_pid(&mut second).await;
    assert_ne!(a, c, "a connection held by one was given to another");
    drop(first);
    drop(second);

    // Values are bound, and a failing statement is a SeaORM query error
    // with Postgres' SQLSTATE inside (what `ApiError` reads).
    let mut reads = OneConnection::new(db);
    let rows = reads
        .query_all(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT $1::text || $2::text AS joined",
            ["left ".into(), "right".into()],
        ))
        .await
        .expect("a read with values");
    assert_eq!(
        rows[0].try_get::<String>("", "joined").unwrap(),
        "left right"
    );
    let error = reads
        .query_all(Statement::from_string(DbBackend::Postgres, "SELECT 1/0"))
        .await
        .expect_err("division by zero");
    let api_error = api::errors::ApiError::from(error.clone());
    assert_eq!(api_error.code, api::errors::Code::Internal, "{error}");
    assert!(error.to_string().contains("division by zero"), "{error}");
    // The connection is still good after an error.
    backend_pid(&mut reads).await;
}
