//! The schema, as SeaORM migrations that run on PostgreSQL and SQLite alike.
//!
//! Each `mYYYYMMDD_NNNNNN_<what>` module is one step with a real `down`.
//! Written with the schema builder so types map on both backends; raw SQL
//! only where the builder cannot say it (the partial unique index), and then
//! in a form both backends accept.

// `MigrationTrait` is an `#[async_trait]` whose methods take
// `&SchemaManager` with its lifetime elided; an impl that writes
// `SchemaManager<'_>` no longer matches the trait (E0195).
#![allow(elided_lifetimes_in_paths)]

pub use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{DatabaseConnection, DbBackend, TransactionTrait};

mod m20261129_000001_create_nodes;
mod m20261129_000002_create_containers;
mod m20261129_000003_create_snapshots;
mod m20261129_000004_create_snapshot_events;
mod m20261129_000005_create_audit_log;
mod m20261129_000006_create_webhooks;
mod m20261202_000001_add_pod_owners;
mod m20261202_000002_snapshot_statistics;
mod m20261202_000003_snapshot_statistics_sample;
mod m20261202_000004_add_prepare_ms;
mod m20261203_000001_add_trace_parents;
mod m20261203_000001_create_persisted_queries;
mod m20261204_000001_webhook_outbox_notify;
mod m20261204_000002_add_snapshot_findings;
mod m20261205_000001_snapshot_deletion;
mod m20261206_000001_snapshot_layers;

/// The name of the partial unique index on `snapshots (node, container_id)`
/// over the in-flight statuses.
pub const SNAPSHOTS_ONE_IN_FLIGHT_INDEX: &str = "idx_snapshots_one_in_flight";

/// The PostgreSQL channel notified when a committed transaction leaves a
/// webhook delivery ready to send (see the `webhook_outbox_notify`
/// migration); the API's webhook workers listen on it.
pub const WEBHOOK_OUTBOX_CHANNEL: &str = "dcs_webhook_outbox";

/// A session setting: `off` keeps the outbox trigger from notifying for
/// this session's writes. The API sets it on its own connections because
/// it wakes its own worker in-process (see the migration).
pub const OUTBOX_NOTIFY_SETTING: &str = "dcs.outbox_notify";

#[derive(Debug)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261129_000001_create_nodes::Migration),
            Box::new(m20261129_000002_create_containers::Migration),
            Box::new(m20261129_000003_create_snapshots::Migration),
            Box::new(m20261129_000004_create_snapshot_events::Migration),
            Box::new(m20261129_000005_create_audit_log::Migration),
            Box::new(m20261129_000006_create_webhooks::Migration),
            Box::new(m20261202_000001_add_pod_owners::Migration),
            Box::new(m20261202_000002_snapshot_statistics::Migration),
            Box::new(m20261202_000003_snapshot_statistics_sample::Migration),
            Box::new(m20261202_000004_add_prepare_ms::Migration),
            Box::new(m20261203_000001_create_persisted_queries::Migration),
            Box::new(m20261203_000001_add_trace_parents::Migration),
            Box::new(m20261204_000001_webhook_outbox_notify::Migration),
            Box::new(m20261204_000002_add_snapshot_findings::Migration),
            Box::new(m20261205_000001_snapshot_deletion::Migration),
            Box::new(m20261206_000001_snapshot_layers::Migration),
        ]
    }
}

/// Sets Postgres' statistics target of `columns` of `snapshots` (`-1`: the
/// server's default). SQLite has no per-column statistics target: a no-op.
async fn set_snapshot_statistics(
    manager: &SchemaManager<'_>,
    columns: &[&str],
    target: i32,
) -> Result<(), DbErr> {
    let db = manager.get_connection();
    if db.get_database_backend() != DbBackend::Postgres {
        return Ok(());
    }
    let alters: Vec<String> = columns
        .iter()
        .map(|c| format!("ALTER COLUMN \"{c}\" SET STATISTICS {target}"))
        .collect();
    db.execute_unprepared(&format!("ALTER TABLE snapshots {}", alters.join(", ")))
        .await?;
    Ok(())
}

/// The PostgreSQL advisory lock held while migrating (`"dcs_migr"`).
const MIGRATION_LOCK: i64 = 0x6463_735f_6d69_6772;

/// Applies every pending migration; the API calls it at start-up.
///
/// On PostgreSQL, API replicas that start together take turns: all pending
/// migrations run in one transaction holding an advisory lock, so the
/// second replica finds nothing left to do instead of failing half-way.
pub async fn run_migrations(db: &DatabaseConnection) -> Result<(), DbErr> {
    if db.get_database_backend() != DbBackend::Postgres {
        return Migrator::up(db, None).await;
    }
    let txn = db.begin().await?;
    txn.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({MIGRATION_LOCK})"))
        .await?;
    Migrator::up(&txn, None).await?;
    txn.commit().await
}
