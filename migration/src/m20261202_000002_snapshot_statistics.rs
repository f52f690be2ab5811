//! Planner statistics on `snapshots` only for the columns queries select
//! by, join on or sort by. `snapshots` is the biggest table and the widest
//! (digests, targets, messages, options): Postgres' automatic ANALYZE of
//! 100,000 rows cost 0.77 s of CPU with every column counted, 0.45 s with
//! these left out, and on a small node that burst is taken from the
//! requests being served (`scripts/bench-api.sh`: open-loop p99 went from
//! a few ms to 300+ ms while it ran). The planner never looks at these
//! columns' statistics: no query filters on them.
//!
//! PostgreSQL only; SQLite has no per-column statistics target.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

/// Read and written, never selected by.
const UNQUERIED_COLUMNS: [&str; 21] = [
    "pod_name",
    "container_name",
    "base_image",
    "base_digest",
    "target",
    "message",
    "options",
    "phase_bytes_done",
    "phase_bytes_total",
    "config_digest",
    "layer_digest",
    "layer_size",
    "uncompressed_size",
    "paused_ms",
    "duration_ms",
    "failure_code",
    "failure_reason",
    "last_event_seq",
    "dispatch_attempts",
    "started_at",
    "finished_at",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::set_snapshot_statistics(manager, &UNQUERIED_COLUMNS, 0).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::set_snapshot_statistics(manager, &UNQUERIED_COLUMNS, -1).await
    }
}
