//! The owner of a container's pod (`dcs.io/owner` of its sandbox, or of
//! the pod in Kubernetes), on the container row and, copied when the
//! snapshot is requested, on the snapshot row: the owner of a desktop sees
//! its snapshots whoever requested them.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

const SNAPSHOTS_OWNER_INDEX: &str = "idx_snapshots_owner";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite adds one column per ALTER TABLE.
        manager
            .alter_table(
                Table::alter()
                    .table(Containers::Table)
                    .add_column(text_null(Containers::Owner))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Snapshots::Table)
                    .add_column(text_null(Snapshots::Owner))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(SNAPSHOTS_OWNER_INDEX)
                    .table(Snapshots::Table)
                    .col(Snapshots::Owner)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name(SNAPSHOTS_OWNER_INDEX)
                    .table(Snapshots::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Snapshots::Table)
                    .drop_column(Snapshots::Owner)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Containers::Table)
                    .drop_column(Containers::Owner)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum Containers {
    Table,
    Owner,
}

#[derive(DeriveIden)]
enum Snapshots {
    Table,
    Owner,
}
