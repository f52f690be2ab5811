//! `DELETED` snapshots (the lifecycle's `deleteSnapshot` and retention):
//! the row stays, so children keep their parent and `snapshot(id)` still
//! answers; these columns say when, by whom, and what became of the
//! manifest in the registry (`snapshot::ManifestDeletion`'s text).
//!
//! No new index and no statistics: retention selects a repository's
//! `PUSHED` rows, newest first, which `idx_snapshots_repository` already
//! serves, and no query selects by these columns.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite adds one column per ALTER TABLE.
        for column in [
            timestamp_with_time_zone_null(Snapshots::DeletedAt),
            text_null(Snapshots::DeletedBy),
            text_null(Snapshots::ManifestDeletion),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Snapshots::Table)
                        .add_column(column)
                        .to_owned(),
                )
                .await?;
        }
        // No query selects by them (see the statistics migrations).
        crate::set_snapshot_statistics(
            manager,
            &["deleted_at", "deleted_by", "manifest_deletion"],
            0,
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [
            Snapshots::DeletedAt,
            Snapshots::DeletedBy,
            Snapshots::ManifestDeletion,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Snapshots::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Snapshots {
    Table,
    DeletedAt,
    DeletedBy,
    ManifestDeletion,
}
