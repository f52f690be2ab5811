use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Nodes::Table)
                    .col(text(Nodes::Name).primary_key())
                    .col(uuid(Nodes::InstanceId))
                    .col(text(Nodes::Url))
                    .col(text(Nodes::Version))
                    .col(text(Nodes::ContainerdVersion))
                    .col(integer(Nodes::MaxConcurrentJobs))
                    .col(timestamp_with_time_zone(Nodes::RegisteredAt))
                    .col(timestamp_with_time_zone(Nodes::LastSeenAt))
                    .col(text(Nodes::State))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Nodes::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Nodes {
    Table,
    Name,
    InstanceId,
    Url,
    Version,
    ContainerdVersion,
    MaxConcurrentJobs,
    RegisteredAt,
    LastSeenAt,
    State,
}
