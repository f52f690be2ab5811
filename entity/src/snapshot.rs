//! `snapshots`: one commit job and, once pushed, the image it made.
//!
//! The database refuses a second in-flight snapshot (`QUEUED`, `DIFFING`,
//! `PUSHING`) of one container: the insert fails with a unique violation
//! ([`crate::is_unique_violation`]) on the partial index
//! `idx_snapshots_one_in_flight` over (`node`, `container_id`).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "snapshots")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The JWT `sub` of the caller.
    #[sea_orm(column_type = "Text")]
    pub requested_by: String,
    /// The node the container runs on (not a foreign key: a snapshot
    /// outlives its node).
    #[sea_orm(column_type = "Text")]
    pub node: String,
    #[sea_orm(column_type = "Text")]
    pub container_id: String,
    #[sea_orm(column_type = "Text", nullable)]
    pub pod_namespace: Option<String>,
    #[sea_orm(column_type = "Text", nullable)]
    pub pod_name: Option<String>,
    #[sea_orm(column_type = "Text", nullable)]
    pub container_name: Option<String>,
    #[sea_orm(column_type = "Text", nullable)]
    pub base_image: Option<String>,
    #[sea_orm(column_type = "Text", nullable)]
    pub base_digest: Option<String>,
    /// The snapshot whose image the container ran. A deleted snapshot's
    /// row stays (`DELETED`), so the link does too.
    pub parent_id: Option<Uuid>,
    /// The image reference pushed to, with its tag.
    #[sea_orm(column_type = "Text")]
    pub target: String,
    /// `target` without its tag or digest, for filtering.
    #[sea_orm(column_type = "Text")]
    pub repository: String,
    #[sea_orm(column_type = "Text", nullable)]
    pub message: Option<String>,
    /// The request's options: changes, excludes, compression, pause,
    /// flatten and single layer.
    pub options: Json,
    pub status: SnapshotStatus,
    /// Progress of the current phase (`PUSHING`); default 0.
    pub phase_bytes_done: i64,
    /// Default 0.
    pub phase_bytes_total: i64,
    #[sea_orm(column_type = "Text", nullable)]
    pub manifest_digest: Option<String>,
    #[sea_orm(column_type = "Text", nullable)]
    pub config_digest: Option<String>,
    #[sea_orm(column_type = "Text", nullable)]
    pub layer_digest: Option<String>,
    pub layer_size: Option<i64>,
    pub uncompressed_size: Option<i64>,
    pub paused_ms: Option<i64>,
    /// How long the change was read while the desktop ran, before the
    /// pause (0 when the commit did not pause).
    pub prepare_ms: Option<i64>,
    pub duration_ms: Option<i64>,
    /// A protocol `FailureCode` (`DISK_FULL`, ...).
    #[sea_orm(column_type = "Text", nullable)]
    pub failure_code: Option<String>,
    #[sea_orm(column_type = "Text", nullable)]
    pub failure_reason: Option<String>,
    /// The `seq` of the last agent event applied; default 0. The agent
    /// delivers its events in order; one is applied only when its `seq` is
    /// greater (progress events may be merged, so numbers can skip).
    pub last_event_seq: i64,
    /// Default 0.
    pub dispatch_attempts: i32,
    pub next_dispatch_at: Option<DateTimeUtc>,
    pub dispatched_at: Option<DateTimeUtc>,
    /// The agent instance the job was dispatched to.
    pub agent_instance_id: Option<Uuid>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub started_at: Option<DateTimeUtc>,
    pub finished_at: Option<DateTimeUtc>,
    /// The owner of the desktop when the snapshot was requested: they see
    /// the snapshot whoever requested it.
    #[sea_orm(column_type = "Text", nullable)]
    pub owner: Option<String>,
    /// The W3C `traceparent` of the request that created the snapshot,
    /// when traces are exported: its dispatch and webhooks continue that
    /// trace.
    #[sea_orm(column_type = "Text", nullable)]
    pub trace_parent: Option<String>,
    /// How many findings the agent's scan report lists (null: no report
    /// reached the API). The report itself is read through
    /// `snapshot_findings`, never with the row.
    pub finding_count: Option<i32>,
    /// How many of them are `SECRET`s.
    pub secret_finding_count: Option<i32>,
    /// When the snapshot was deleted (`DELETED`).
    pub deleted_at: Option<DateTimeUtc>,
    /// Who deleted it: a JWT `sub`, or `retention`.
    #[sea_orm(column_type = "Text", nullable)]
    pub deleted_by: Option<String>,
    /// What became of its manifest in the registry.
    pub manifest_deletion: Option<ManifestDeletion>,
    /// The image is its lineage base's layers plus one layer holding
    /// everything above them (as the agent reported); default false.
    pub flattened: bool,
    /// Layers in the pushed image (null: not pushed, or an agent that does
    /// not say).
    pub layer_count: Option<i32>,
    /// The first image of the lineage that no snapshot made: the image the
    /// container ran for a snapshot without a parent, else the parent's
    /// lineage base. What a flatten keeps the layers of. Null on rows
    /// older than flattening.
    #[sea_orm(column_type = "Text", nullable)]
    pub lineage_base_image: Option<String>,
    /// Its manifest (or index) digest.
    #[sea_orm(column_type = "Text", nullable)]
    pub lineage_base_digest: Option<String>,
    /// How many leading layers of this snapshot's image are the lineage
    /// base's (null: unknown); `layer_count` minus this is what the layer
    /// budget counts.
    pub lineage_base_layers: Option<i32>,
}

/// What deleting a snapshot did to its manifest in the registry. Stored as
/// the upper-case text of each variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "Text")]
pub enum ManifestDeletion {
    /// The registry deleted it (and with it every tag on that digest).
    #[sea_orm(string_value = "DELETED")]
    Deleted,
    /// The registry did not have it any more.
    #[sea_orm(string_value = "ABSENT")]
    Absent,
    /// Kept: another live snapshot of the repository has the same digest,
    /// and a registry deletes by digest.
    #[sea_orm(string_value = "KEPT_SHARED")]
    KeptShared,
    /// Kept: the registry does not allow deletes.
    #[sea_orm(string_value = "KEPT_UNSUPPORTED")]
    KeptUnsupported,
}

/// Where a snapshot is in its life. Stored as the upper-case text of each
/// variant (`QUEUED`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "Text")]
pub enum SnapshotStatus {
    #[sea_orm(string_value = "QUEUED")]
    Queued,
    #[sea_orm(string_value = "DIFFING")]
    Diffing,
    #[sea_orm(string_value = "PUSHING")]
    Pushing,
    #[sea_orm(string_value = "PUSHED")]
    Pushed,
    #[sea_orm(string_value = "FAILED")]
    Failed,
    #[sea_orm(string_value = "CANCELLED")]
    Cancelled,
    /// Deleted after it was pushed: the one change of a terminal status.
    #[sea_orm(string_value = "DELETED")]
    Deleted,
}

impl SnapshotStatus {
    /// The statuses covered by the one-in-flight-per-container index.
    pub const IN_FLIGHT: [Self; 3] = [Self::Queued, Self::Diffing, Self::Pushing];

    /// `PUSHED`, `FAILED`, `CANCELLED` and `DELETED`: the job has ended.
    /// Only `PUSHED -> DELETED` follows.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Pushed | Self::Failed | Self::Cancelled | Self::Deleted
        )
    }

    /// The text stored in the `status` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "QUEUED",
            Self::Diffing => "DIFFING",
            Self::Pushing => "PUSHING",
            Self::Pushed => "PUSHED",
            Self::Failed => "FAILED",
            Self::Cancelled => "CANCELLED",
            Self::Deleted => "DELETED",
        }
    }
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    /// The snapshot this one was taken on top of.
    #[sea_orm(
        belongs_to = "Entity",
        from = "Column::ParentId",
        to = "Column::Id",
        on_update = "NoAction",
        on_delete = "SetNull"
    )]
    Parent,
    #[sea_orm(has_many = "super::snapshot_event::Entity")]
    SnapshotEvent,
}

impl Related<super::snapshot_event::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::SnapshotEvent.def()
    }
}

/// From a snapshot to its parent: `model.find_linked(ParentLink)`. Children
/// are `Entity::find().filter(Column::ParentId.eq(id))`.
#[derive(Clone, Copy, Debug)]
pub struct ParentLink;

impl Linked for ParentLink {
    type FromEntity = Entity;
    type ToEntity = Entity;

    fn link(&self) -> Vec<RelationDef> {
        vec![Relation::Parent.def()]
    }
}

impl ActiveModelBehavior for ActiveModel {}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::{ActiveEnum, Iterable};

    #[test]
    fn status_text_matches_the_stored_value() {
        for status in SnapshotStatus::iter() {
            assert_eq!(status.to_value(), status.as_str());
            assert_eq!(
                SnapshotStatus::try_from_value(&status.as_str().to_owned()).unwrap(),
                status
            );
        }
        let terminal: Vec<_> = SnapshotStatus::iter().filter(|s| s.is_terminal()).collect();
        assert_eq!(
            terminal,
            [
                SnapshotStatus::Pushed,
                SnapshotStatus::Failed,
                SnapshotStatus::Cancelled,
                SnapshotStatus::Deleted
            ]
        );
        assert!(SnapshotStatus::IN_FLIGHT.iter().all(|s| !s.is_terminal()));
    }
}
