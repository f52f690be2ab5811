//! A smaller statistics sample for `snapshots`: target 30 (Postgres'
//! default is 100) on the columns queries select by, join on or sort by.
//!
//! ANALYZE samples 300 rows per unit of the largest target on the table, so
//! the target sets the cost of every automatic ANALYZE, and on a small node
//! that CPU is taken from the requests being served. Measured on the
//! benchmark's table (`scripts/bench-api.sh`: 103,000 rows, 74 MB, 2 cores):
//! 285 ms at 100, 78 ms at 30, 29 ms at 10; sampling the rows is most of it,
//! each column adds about 14 ms at 100.
//!
//! 30 keeps what the planner uses here: every query is an index lookup or an
//! index-ordered page, and the statistics only decide null fractions,
//! distinct counts and whether an owner or namespace is big enough for a
//! scan. An MCV list of 30 still names the busiest owners; `status` has 7
//! values. The columns no query selects by have no statistics at all (the
//! previous migration).
//!
//! PostgreSQL only; SQLite has no per-column statistics target.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

/// Selected by, joined on or sorted by.
const QUERIED_COLUMNS: [&str; 15] = [
    "id",
    "requested_by",
    "owner",
    "node",
    "container_id",
    "pod_namespace",
    "parent_id",
    "repository",
    "status",
    "manifest_digest",
    "next_dispatch_at",
    "dispatched_at",
    "agent_instance_id",
    "created_at",
    "updated_at",
];

const SAMPLE_TARGET: i32 = 30;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::set_snapshot_statistics(manager, &QUERIED_COLUMNS, SAMPLE_TARGET).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::set_snapshot_statistics(manager, &QUERIED_COLUMNS, -1).await
    }
}
