//! `persisted_queries`: GraphQL documents by their SHA-256, shared by the
//! API replicas (automatic persisted queries and registered queries). The
//! index serves the eviction of the least recently used automatic entries
//! and nothing else (look-ups go by the primary key): it holds the whole
//! eviction order (`kind`, `last_used_at`, `hash` as the tie-break), so
//! finding the first entry past the cap is an index-only scan, not a sort.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

const EVICTION_INDEX: &str = "idx_persisted_queries_kind_last_used";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(PersistedQueries::Table)
                    .col(text(PersistedQueries::Hash).primary_key())
                    .col(text(PersistedQueries::Query))
                    .col(text(PersistedQueries::Kind))
                    .col(text_null(PersistedQueries::Name))
                    .col(text_null(PersistedQueries::RegisteredBy))
                    .col(timestamp_with_time_zone(PersistedQueries::CreatedAt))
                    .col(timestamp_with_time_zone(PersistedQueries::LastUsedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(EVICTION_INDEX)
                    .table(PersistedQueries::Table)
                    .col(PersistedQueries::Kind)
                    .col(PersistedQueries::LastUsedAt)
                    .col(PersistedQueries::Hash)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name(EVICTION_INDEX)
                    .table(PersistedQueries::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(PersistedQueries::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum PersistedQueries {
    Table,
    Hash,
    Query,
    Kind,
    Name,
    RegisteredBy,
    CreatedAt,
    LastUsedAt,
}
