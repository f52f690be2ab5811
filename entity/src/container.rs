//! `containers`: the inventory the agents report, one row per container of
//! a node. Deleting a node deletes its containers.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "containers")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false, column_type = "Text")]
    pub node: String,
    /// The containerd container id.
    #[sea_orm(primary_key, auto_increment = false, column_type = "Text")]
    pub id: String,
    #[sea_orm(column_type = "Text")]
    pub image: String,
    #[sea_orm(column_type = "Text", nullable)]
    pub image_digest: Option<String>,
    /// `running`, `paused`, `stopped`, `created`, ... as the agent says.
    #[sea_orm(column_type = "Text")]
    pub state: String,
    #[sea_orm(column_type = "Text")]
    pub snapshotter: String,
    #[sea_orm(column_type = "Text", nullable)]
    pub pod_name: Option<String>,
    #[sea_orm(column_type = "Text", nullable)]
    pub pod_namespace: Option<String>,
    #[sea_orm(column_type = "Text", nullable)]
    pub container_name: Option<String>,
    pub updated_at: DateTimeUtc,
    /// The speaker the pod belongs to: `dcs.io/owner` of the pod's sandbox,
    /// as the agent reads it (never the container's own labels).
    #[sea_orm(column_type = "Text", nullable)]
    pub owner: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::node::Entity",
        from = "Column::Node",
        to = "super::node::Column::Name",
        on_update = "NoAction",
        on_delete = "Cascade"
    )]
    Node,
}

impl Related<super::node::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Node.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
