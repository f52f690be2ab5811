//! `snapshots.trace_parent` and `webhook_deliveries.trace_parent`: the W3C
//! `traceparent` a later worker continues (the dispatcher for a snapshot,
//! the webhook worker for a delivery), so one snapshot is one trace from
//! `createSnapshot` to its webhook. Null when traces are not exported. No
//! statistics on the snapshot column: no query selects by it (see the
//! statistics migrations).

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
                    .add_column(text_null(Snapshots::TraceParent))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(WebhookDeliveries::Table)
                    .add_column(text_null(WebhookDeliveries::TraceParent))
                    .to_owned(),
            )
            .await?;
        crate::set_snapshot_statistics(manager, &["trace_parent"], 0).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(WebhookDeliveries::Table)
                    .drop_column(WebhookDeliveries::TraceParent)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Snapshots::Table)
                    .drop_column(Snapshots::TraceParent)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum Snapshots {
    Table,
    TraceParent,
}

#[derive(DeriveIden)]
enum WebhookDeliveries {
    Table,
    TraceParent,
}
