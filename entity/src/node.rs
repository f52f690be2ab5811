//! `nodes`: one row per node agent that registered.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "nodes")]
pub struct Model {
    /// The Kubernetes node name.
    #[sea_orm(primary_key, auto_increment = false, column_type = "Text")]
    pub name: String,
    /// New at every agent start.
    pub instance_id: Uuid,
    /// Where the API reaches the agent.
    #[sea_orm(column_type = "Text")]
    pub url: String,
    #[sea_orm(column_type = "Text")]
    pub version: String,
    #[sea_orm(column_type = "Text")]
    pub containerd_version: String,
    pub max_concurrent_jobs: i32,
    pub registered_at: DateTimeUtc,
    pub last_seen_at: DateTimeUtc,
    pub state: NodeState,
}

/// Whether the agent of a node is heard from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "Text")]
pub enum NodeState {
    #[sea_orm(string_value = "READY")]
    Ready,
    /// Missed its heartbeats; its jobs are failed or handed back.
    #[sea_orm(string_value = "LOST")]
    Lost,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::container::Entity")]
    Container,
}

impl Related<super::container::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Container.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
