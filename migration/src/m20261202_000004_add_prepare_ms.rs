//! `snapshots.prepare_ms`: how long the agent read the change while the
//! desktop ran, before it paused (the agent's `JobResult.prepare_ms`);
//! `paused_ms` beside it is the pause that followed. No statistics: no
//! query selects by it (see the statistics migrations).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Snapshots::Table)
                    .add_column(big_integer_null(Snapshots::PrepareMs))
                    .to_owned(),
            )
            .await?;
        crate::set_snapshot_statistics(manager, &["prepare_ms"], 0).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Snapshots::Table)
                    .drop_column(Snapshots::PrepareMs)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum Snapshots {
    Table,
    PrepareMs,
}
