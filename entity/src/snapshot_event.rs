//! `snapshot_events`: the history of one snapshot, in `id` order. Deleting a
//! snapshot deletes its events.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "snapshot_events")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub snapshot_id: Uuid,
    /// The agent's sequence number; `None` for events the API records.
    pub seq: Option<i64>,
    #[sea_orm(column_type = "Text")]
    pub kind: String,
    pub payload: Json,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::snapshot::Entity",
        from = "Column::SnapshotId",
        to = "super::snapshot::Column::Id",
        on_update = "NoAction",
        on_delete = "Cascade"
    )]
    Snapshot,
}

impl Related<super::snapshot::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Snapshot.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
