//! The migrations on SQLite and on PostgreSQL: the same checks on both.

mod common;

use std::process::Command;

use common::{exercise_schema, postgres::TestDatabase};
use migration::{MigratorTrait, SchemaManager, run_migrations};
use sea_orm_migration::sea_orm::{ConnectionTrait, Database, DbBackend, Statement};

fn sqlite_url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}?mode=rwc", dir.path().join("dcs.db").display())
}

#[tokio::test]
async fn sqlite_file_schema() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Database::connect(sqlite_url(&dir))
        .await
        .expect("open SQLite");
    exercise_schema(&db)
        .await
        .unwrap_or_else(|err| panic!("SQLite: {err:#}"));
    db.close().await.expect("close");
}

#[tokio::test]
async fn sqlite_memory_schema() {
    let db = Database::connect("sqlite::memory:")
        .await
        .expect("open SQLite");
    exercise_schema(&db)
        .await
        .unwrap_or_else(|err| panic!("SQLite in memory: {err:#}"));
}

/// How values are stored on SQLite, for whoever writes raw SQL there:
/// UUIDs as 16-byte blobs, times as RFC 3339 text in UTC, JSON as text.
#[tokio::test]
async fn sqlite_storage_forms() {
    let db = Database::connect("sqlite::memory:")
        .await
        .expect("open SQLite");
    run_migrations(&db).await.expect("up");
    common::insert_sample_snapshot(&db)
        .await
        .unwrap_or_else(|err| panic!("{err:#}"));
    let row = db
        .query_one_raw(Statement::from_string(
            DbBackend::Sqlite,
            "SELECT typeof(id) AS id_type, length(id) AS id_len, \
             typeof(created_at) AS time_type, created_at, \
             typeof(options) AS json_type, typeof(layer_size) AS int_type \
             FROM snapshots",
        ))
        .await
        .expect("query")
        .expect("one row");
    let get = |col: &str| row.try_get::<String>("", col).expect(col);
    assert_eq!(get("id_type"), "blob");
    assert_eq!(row.try_get::<i64>("", "id_len").unwrap(), 16);
    assert_eq!(get("time_type"), "text");
    assert_eq!(get("created_at"), "2026-11-29T12:00:00.123456+00:00");
    assert_eq!(get("json_type"), "text");
    assert_eq!(get("int_type"), "integer");
}

#[tokio::test]
async fn postgres_schema() {
    let database = TestDatabase::create()
        .await
        .unwrap_or_else(|err| panic!("PostgreSQL: {err:#}"));
    let outcome = match database.connect().await {
        Ok(db) => {
            let outcome = exercise_schema(&db).await;
            db.close().await.expect("close");
            outcome
        }
        Err(err) => Err(err),
    };
    let dropped = database.drop().await;
    outcome.unwrap_or_else(|err| panic!("PostgreSQL: {err:#}"));
    dropped.unwrap_or_else(|err| panic!("PostgreSQL: {err:#}"));
}

/// API replicas starting together on one database all succeed, and the
/// migrations are applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_concurrent_start_ups() {
    let database = TestDatabase::create()
        .await
        .unwrap_or_else(|err| panic!("PostgreSQL: {err:#}"));
    let outcome = common::concurrent_start_ups(&database).await;
    let dropped = database.drop().await;
    outcome.unwrap_or_else(|err| panic!("PostgreSQL: {err:#}"));
    dropped.unwrap_or_else(|err| panic!("PostgreSQL: {err:#}"));
}

/// The `migration` binary: up, status and reset against `DATABASE_URL`.
#[tokio::test]
async fn cli_applies_and_resets() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = sqlite_url(&dir);
    let run = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_migration"))
            .args(args)
            .env("DATABASE_URL", &url)
            .current_dir(dir.path())
            .output()
            .expect("run migration");
        assert!(
            output.status.success(),
            "migration {args:?}: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };

    run(&["up"]);
    let status = run(&["status"]);
    assert_eq!(
        status.matches("Applied").count(),
        migration::Migrator::migrations().len(),
        "{status}"
    );
    let db = Database::connect(&url).await.expect("open SQLite");
    assert!(
        SchemaManager::new(&db)
            .has_table("snapshots")
            .await
            .unwrap()
    );
    db.close().await.unwrap();

    run(&["reset"]);
    let db = Database::connect(&url).await.expect("open SQLite");
    assert!(
        !SchemaManager::new(&db)
            .has_table("snapshots")
            .await
            .unwrap()
    );
    db.close().await.unwrap();
}

/// Every column of `snapshots` has a decided statistics target: none for
/// the columns no query selects by, a 30-unit sample for the rest (the
/// cost of each automatic ANALYZE; see the statistics migrations). A new
/// column left at the server's default fails here until someone decides.
#[tokio::test]
async fn postgres_snapshot_statistics_targets() {
    let database = TestDatabase::create()
        .await
        .unwrap_or_else(|err| panic!("PostgreSQL: {err:#}"));
    let outcome = async {
        let db = database.connect().await?;
        run_migrations(&db).await?;
        let rows = db
            .query_all_raw(Statement::from_string(
                DbBackend::Postgres,
                "SELECT attname::text AS name, attstattarget::int AS target FROM pg_attribute \
                 WHERE attrelid = 'snapshots'::regclass AND attnum > 0 AND NOT attisdropped",
            ))
            .await?;
        db.close().await?;
        let mut undecided = Vec::new();
        for row in rows {
            let name: String = row.try_get("", "name")?;
            let target: i32 = row.try_get("", "target")?;
            if target != 0 && target != 30 {
                undecided.push(format!("{name} ({target})"));
            }
        }
        anyhow::ensure!(
            undecided.is_empty(),
            "snapshots columns with the default or an unexpected statistics target: {}",
            undecided.join(", ")
        );
        anyhow::Ok(())
    }
    .await;
    let dropped = database.drop().await;
    outcome.unwrap_or_else(|err| panic!("PostgreSQL: {err:#}"));
    dropped.unwrap_or_else(|err| panic!("PostgreSQL: {err:#}"));
}
