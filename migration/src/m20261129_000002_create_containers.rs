use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

const POD_INDEX: &str = "idx_containers_pod";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Containers::Table)
                    .col(text(Containers::Node))
                    .col(text(Containers::Id))
                    .col(text(Containers::Image))
                    .col(text_null(Containers::ImageDigest))
                    .col(text(Containers::State))
                    .col(text(Containers::Snapshotter))
                    .col(text_null(Containers::PodName))
                    .col(text_null(Containers::PodNamespace))
                    .col(text_null(Containers::ContainerName))
                    .col(timestamp_with_time_zone(Containers::UpdatedAt))
                    .primary_key(
                        Index::create()
                            .name("pk_containers")
                            .col(Containers::Node)
                            .col(Containers::Id),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_containers_node")
                            .from(Containers::Table, Containers::Node)
                            .to(Nodes::Table, Nodes::Name)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(POD_INDEX)
                    .table(Containers::Table)
                    .col(Containers::PodNamespace)
                    .col(Containers::PodName)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name(POD_INDEX)
                    .table(Containers::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(Containers::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Nodes {
    Table,
    Name,
}

#[derive(DeriveIden)]
enum Containers {
    Table,
    Node,
    Id,
    Image,
    ImageDigest,
    State,
    Snapshotter,
    PodName,
    PodNamespace,
    ContainerName,
    UpdatedAt,
}
