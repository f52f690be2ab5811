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

/// The outbox trigger wakes webhook workers once per committed statement
/// that leaves deliveries ready to send, and never for the workers' own
/// claims and results. Counted by a listener of our own: each step ends
/// with a marker notification, and Postgres delivers notifications in
/// commit order, so what arrives before the marker is what the step sent.
#[tokio::test]
async fn postgres_outbox_notifies_once_per_statement() {
    let database = TestDatabase::create()
        .await
        .unwrap_or_else(|err| panic!("PostgreSQL: {err:#}"));
    let outcome = outbox_notifications(&database).await;
    let dropped = database.drop().await;
    outcome.unwrap_or_else(|err| panic!("PostgreSQL: {err:#}"));
    dropped.unwrap_or_else(|err| panic!("PostgreSQL: {err:#}"));
}

async fn outbox_notifications(database: &TestDatabase) -> anyhow::Result<()> {
    use anyhow::{Context, ensure};
    use sea_orm_migration::sea_orm::sqlx::postgres::PgListener;

    let db = database.connect().await?;
    run_migrations(&db).await?;
    let mut listener = PgListener::connect(database.url()).await?;
    listener.listen(migration::WEBHOOK_OUTBOX_CHANNEL).await?;
    let mut step = 0;
    // Runs `sql`, then counts the notifications it caused.
    let mut notified = async |sql: &str| -> anyhow::Result<usize> {
        db.execute_unprepared(sql)
            .await
            .with_context(|| sql.to_string())?;
        step += 1;
        let marker = format!("marker-{step}");
        db.execute_unprepared(&format!(
            "SELECT pg_notify('{}', '{marker}')",
            migration::WEBHOOK_OUTBOX_CHANNEL
        ))
        .await?;
        let mut count = 0;
        loop {
            let notification =
                tokio::time::timeout(std::time::Duration::from_secs(10), listener.recv())
                    .await
                    .with_context(|| format!("no {marker} within 10 s"))??;
            if notification.payload() == marker {
                return Ok(count);
            }
            count += 1;
        }
    };
    let endpoint = uuid::Uuid::new_v4();
    notified(&format!(
        "INSERT INTO webhook_endpoints (id, url, event_types, enabled, secret, created_by, \
         created_at, updated_at) VALUES ('{endpoint}', 'https://receiver.test/', '[]', true, \
         'whsec_x', 'test', now(), now())"
    ))
    .await?;
    let insert = |rows: usize| {
        format!(
            "INSERT INTO webhook_deliveries (id, endpoint_id, message_id, event_type, payload, \
             status, attempts, next_attempt_at, created_at) \
             SELECT u, '{endpoint}', 'msg_' || replace(u::text, '-', ''), 'ping', '{{}}', \
                    'PENDING', 0, now(), now() \
             FROM (SELECT gen_random_uuid() AS u FROM generate_series(1, {rows})) s"
        )
    };

    let bulk = notified(&insert(10_000)).await?;
    ensure!(bulk == 1, "a 10,000-row insert sent {bulk} notifications");
    // As a status commit that queues one delivery per endpoint: Postgres
    // folds the statements' identical notifications into one.
    let one_transaction = notified(&format!("BEGIN; {}; {}; COMMIT", insert(1), insert(1))).await?;
    ensure!(
        one_transaction == 1,
        "two inserts in one transaction sent {one_transaction} notifications"
    );
    // The API's sessions say `off`: it wakes its own worker.
    let api_session = notified(&format!(
        "BEGIN; SET LOCAL {} = off; {}; COMMIT",
        migration::OUTBOX_NOTIFY_SETTING,
        insert(1)
    ))
    .await?;
    ensure!(
        api_session == 0,
        "an insert with notifications off sent {api_session}"
    );
    let claim = notified(
        "UPDATE webhook_deliveries SET next_attempt_at = now() + interval '30 seconds' \
         WHERE status = 'PENDING'",
    )
    .await?;
    ensure!(claim == 0, "a claim sent {claim} notifications");
    let retry = notified(
        "UPDATE webhook_deliveries SET attempts = 1, next_attempt_at = now() + interval '5 seconds'",
    )
    .await?;
    ensure!(retry == 0, "scheduling retries sent {retry} notifications");
    let done = notified(
        "UPDATE webhook_deliveries SET status = 'SUCCEEDED', next_attempt_at = NULL, \
         completed_at = now()",
    )
    .await?;
    ensure!(done == 0, "recording successes sent {done} notifications");
    let requeue = notified(
        "UPDATE webhook_deliveries SET status = 'PENDING', attempts = 0, \
         next_attempt_at = now(), completed_at = NULL",
    )
    .await?;
    ensure!(
        requeue == 1,
        "re-queueing 10,003 deliveries in one statement sent {requeue} notifications"
    );
    let quiet_requeue = notified(&format!(
        "BEGIN; SET LOCAL {} = off; \
         UPDATE webhook_deliveries SET next_attempt_at = now() - interval '1 second'; COMMIT",
        migration::OUTBOX_NOTIFY_SETTING
    ))
    .await?;
    ensure!(
        quiet_requeue == 0,
        "a re-queue with notifications off sent {quiet_requeue}"
    );

    // `down` removes the triggers and the function: nothing announces rows
    // any more. (Down to this migration, whatever came after it.)
    let names: Vec<String> = migration::Migrator::migrations()
        .iter()
        .map(|m| m.name().to_string())
        .collect();
    let position = names
        .iter()
        .position(|n| n == "m20261204_000001_webhook_outbox_notify")
        .context("the outbox notify migration is not in the list")?;
    let steps = u32::try_from(names.len() - position)?;
    let objects = async || -> anyhow::Result<i64> {
        let row = db
            .query_one_raw(Statement::from_string(
                DbBackend::Postgres,
                "SELECT (SELECT count(*) FROM pg_trigger WHERE tgname LIKE                  'webhook_deliveries_notify_%') + (SELECT count(*) FROM pg_proc WHERE                  proname = 'dcs_webhook_outbox_notify') AS n",
            ))
            .await?
            .context("no row")?;
        Ok(row.try_get::<i64>("", "n")?)
    };
    ensure!(
        objects().await? == 3,
        "before down: not 2 triggers and 1 function"
    );
    migration::Migrator::down(&db, Some(steps)).await?;
    ensure!(objects().await? == 0, "down left triggers or the function");
    let after_down = notified(&insert(1)).await?;
    ensure!(
        after_down == 0,
        "after down an insert still sent {after_down} notifications"
    );
    migration::Migrator::up(&db, None).await?;
    ensure!(
        objects().await? == 3,
        "after up again: not 2 triggers and 1 function"
    );
    let after_up = notified(&insert(1)).await?;
    ensure!(after_up == 1, "after up again an insert sent {after_up}");
    drop(listener);
    db.close().await?;
    Ok(())
}
