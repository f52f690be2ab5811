//! Flatten and the layer budget: what a snapshot's image is made of.
//!
//! - `flattened`: the image is its lineage base's layers plus one layer
//!   holding everything above them (default false).
//! - `layer_count`: layers in the pushed image (null: unknown, an older
//!   agent or not pushed yet).
//! - `lineage_base_image`, `lineage_base_digest`: the first image of the
//!   lineage that no snapshot made, which a flatten keeps the layers of
//!   (null on rows older than this migration).
//! - `lineage_base_layers`: how many leading layers of this snapshot's
//!   image are the lineage base's (null: unknown).
//!
//! No new index and no statistics: a snapshot's parent is found by its
//! manifest digest, and these are read from that one row; no query
//! selects by them (see the statistics migrations).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite adds one column per ALTER TABLE.
        for column in [
            boolean(Snapshots::Flattened).default(false).to_owned(),
            integer_null(Snapshots::LayerCount),
            text_null(Snapshots::LineageBaseImage),
            text_null(Snapshots::LineageBaseDigest),
            integer_null(Snapshots::LineageBaseLayers),
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
        crate::set_snapshot_statistics(
            manager,
            &[
                "flattened",
                "layer_count",
                "lineage_base_image",
                "lineage_base_digest",
                "lineage_base_layers",
            ],
            0,
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [
            Snapshots::LineageBaseLayers,
            Snapshots::LineageBaseDigest,
            Snapshots::LineageBaseImage,
            Snapshots::LayerCount,
            Snapshots::Flattened,
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
    Flattened,
    LayerCount,
    LineageBaseImage,
    LineageBaseDigest,
    LineageBaseLayers,
}
