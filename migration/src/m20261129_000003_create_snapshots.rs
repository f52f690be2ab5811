use sea_orm_migration::{prelude::*, schema::*};

use crate::SNAPSHOTS_ONE_IN_FLIGHT_INDEX;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

/// The plain indexes: name and columns.
fn indexes() -> Vec<(&'static str, Vec<Snapshots>)> {
    vec![
        ("idx_snapshots_status", vec![Snapshots::Status]),
        ("idx_snapshots_requested_by", vec![Snapshots::RequestedBy]),
        ("idx_snapshots_node", vec![Snapshots::Node]),
        ("idx_snapshots_repository", vec![Snapshots::Repository]),
        ("idx_snapshots_parent_id", vec![Snapshots::ParentId]),
        (
            "idx_snapshots_manifest_digest",
            vec![Snapshots::ManifestDigest],
        ),
        // Cursor pagination: ORDER BY created_at, id.
        (
            "idx_snapshots_created_at_id",
            vec![Snapshots::CreatedAt, Snapshots::Id],
        ),
    ]
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Snapshots::Table)
                    .col(uuid(Snapshots::Id).primary_key())
                    .col(text(Snapshots::RequestedBy))
                    .col(text(Snapshots::Node))
                    .col(text(Snapshots::ContainerId))
                    .col(text_null(Snapshots::PodNamespace))
                    .col(text_null(Snapshots::PodName))
                    .col(text_null(Snapshots::ContainerName))
                    .col(text_null(Snapshots::BaseImage))
                    .col(text_null(Snapshots::BaseDigest))
                    .col(uuid_null(Snapshots::ParentId))
                    .col(text(Snapshots::Target))
                    .col(text(Snapshots::Repository))
                    .col(text_null(Snapshots::Message))
                    .col(json(Snapshots::Options))
                    .col(text(Snapshots::Status))
                    .col(big_integer(Snapshots::PhaseBytesDone).default(0))
                    .col(big_integer(Snapshots::PhaseBytesTotal).default(0))
                    .col(text_null(Snapshots::ManifestDigest))
                    .col(text_null(Snapshots::ConfigDigest))
                    .col(text_null(Snapshots::LayerDigest))
                    .col(big_integer_null(Snapshots::LayerSize))
                    .col(big_integer_null(Snapshots::UncompressedSize))
                    .col(big_integer_null(Snapshots::PausedMs))
                    .col(big_integer_null(Snapshots::DurationMs))
                    .col(text_null(Snapshots::FailureCode))
                    .col(text_null(Snapshots::FailureReason))
                    .col(big_integer(Snapshots::LastEventSeq).default(0))
                    .col(integer(Snapshots::DispatchAttempts).default(0))
                    .col(timestamp_with_time_zone_null(Snapshots::NextDispatchAt))
                    .col(timestamp_with_time_zone_null(Snapshots::DispatchedAt))
                    .col(uuid_null(Snapshots::AgentInstanceId))
                    .col(timestamp_with_time_zone(Snapshots::CreatedAt))
                    .col(timestamp_with_time_zone(Snapshots::UpdatedAt))
                    .col(timestamp_with_time_zone_null(Snapshots::StartedAt))
                    .col(timestamp_with_time_zone_null(Snapshots::FinishedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_snapshots_parent")
                            .from(Snapshots::Table, Snapshots::ParentId)
                            .to(Snapshots::Table, Snapshots::Id)
                            .on_delete(ForeignKeyAction::SetNull),
                    )
                    .to_owned(),
            )
            .await?;

        for (name, columns) in indexes() {
            let mut index = Index::create();
            index.name(name).table(Snapshots::Table);
            for column in columns {
                index.col(column);
            }
            manager.create_index(index).await?;
        }

        // At most one in-flight snapshot per container, enforced by the
        // database. The index builder has no WHERE clause; this statement is
        // the same on PostgreSQL and SQLite (both have partial indexes), and
        // the values are the `SnapshotStatus` texts of the entity crate.
        manager
            .get_connection()
            .execute_unprepared(&format!(
                "CREATE UNIQUE INDEX {SNAPSHOTS_ONE_IN_FLIGHT_INDEX} \
                 ON snapshots (node, container_id) \
                 WHERE status IN ('QUEUED', 'DIFFING', 'PUSHING')"
            ))
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name(SNAPSHOTS_ONE_IN_FLIGHT_INDEX)
                    .table(Snapshots::Table)
                    .to_owned(),
            )
            .await?;
        for (name, _) in indexes() {
            manager
                .drop_index(Index::drop().name(name).table(Snapshots::Table).to_owned())
                .await?;
        }
        manager
            .drop_table(Table::drop().table(Snapshots::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum Snapshots {
    Table,
    Id,
    RequestedBy,
    Node,
    ContainerId,
    PodNamespace,
    PodName,
    ContainerName,
    BaseImage,
    BaseDigest,
    ParentId,
    Target,
    Repository,
    Message,
    Options,
    Status,
    PhaseBytesDone,
    PhaseBytesTotal,
    ManifestDigest,
    ConfigDigest,
    LayerDigest,
    LayerSize,
    UncompressedSize,
    PausedMs,
    DurationMs,
    FailureCode,
    FailureReason,
    LastEventSeq,
    DispatchAttempts,
    NextDispatchAt,
    DispatchedAt,
    AgentInstanceId,
    CreatedAt,
    UpdatedAt,
    StartedAt,
    FinishedAt,
}
