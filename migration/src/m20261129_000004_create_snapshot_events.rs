use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

const SNAPSHOT_INDEX: &str = "idx_snapshot_events_snapshot_id_id";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(SnapshotEvents::Table)
                    .col(big_pk_auto(SnapshotEvents::Id))
                    .col(uuid(SnapshotEvents::SnapshotId))
                    .col(big_integer_null(SnapshotEvents::Seq))
                    .col(text(SnapshotEvents::Kind))
                    .col(json(SnapshotEvents::Payload))
                    .col(timestamp_with_time_zone(SnapshotEvents::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_snapshot_events_snapshot")
                            .from(SnapshotEvents::Table, SnapshotEvents::SnapshotId)
                            .to(Snapshots::Table, Snapshots::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(SNAPSHOT_INDEX)
                    .table(SnapshotEvents::Table)
                    .col(SnapshotEvents::SnapshotId)
                    .col(SnapshotEvents::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name(SNAPSHOT_INDEX)
                    .table(SnapshotEvents::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(SnapshotEvents::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Snapshots {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum SnapshotEvents {
    Table,
    Id,
    SnapshotId,
    Seq,
    Kind,
    Payload,
    CreatedAt,
}
