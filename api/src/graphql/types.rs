//! GraphQL object types over the database models.

use async_graphql::{Context, Enum, ID, Object, Result, SimpleObject};
use chrono::{DateTime, Utc};
use entity::{container, node, snapshot};

use super::context::{loader, principal, state};
use super::loaders::{AncestorsOf, ChildrenById, DescendantsOf, LineageKey, SnapshotsById};
use crate::auth::Role;
use crate::service::snapshots::{self, JobOptions};

/// Where a snapshot is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum SnapshotStatus {
    Queued,
    Diffing,
    Pushing,
    Pushed,
    Failed,
    Cancelled,
}

impl From<entity::SnapshotStatus> for SnapshotStatus {
    fn from(s: entity::SnapshotStatus) -> Self {
        use entity::SnapshotStatus as S;
        match s {
            S::Queued => Self::Queued,
            S::Diffing => Self::Diffing,
            S::Pushing => Self::Pushing,
            S::Pushed => Self::Pushed,
            S::Failed => Self::Failed,
            S::Cancelled => Self::Cancelled,
        }
    }
}

impl From<SnapshotStatus> for entity::SnapshotStatus {
    fn from(s: SnapshotStatus) -> Self {
        use entity::SnapshotStatus as S;
        match s {
            SnapshotStatus::Queued => S::Queued,
            SnapshotStatus::Diffing => S::Diffing,
            SnapshotStatus::Pushing => S::Pushing,
            SnapshotStatus::Pushed => S::Pushed,
            SnapshotStatus::Failed => S::Failed,
            SnapshotStatus::Cancelled => S::Cancelled,
        }
    }
}

/// The caller, as the token describes them.
#[derive(SimpleObject, Debug)]
pub struct Me {
    pub sub: String,
    pub role: Role,
    /// Pod namespaces in which a speaker may see and snapshot their own
    /// desktops (every desktop there with namespace-wide access).
    pub namespaces: Vec<String>,
}

/// A node and its agent.
#[derive(Debug)]
pub struct Node(pub node::Model);

#[Object]
impl Node {
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// `READY` or `LOST`.
    async fn state(&self) -> String {
        // The stored text of the state, which is what the schema's String says.
        sea_orm::ActiveEnum::to_value(&self.0.state)
    }
    async fn agent_version(&self) -> &str {
        &self.0.version
    }
    async fn containerd_version(&self) -> &str {
        &self.0.containerd_version
    }
    async fn max_concurrent_jobs(&self) -> i32 {
        self.0.max_concurrent_jobs
    }
    async fn registered_at(&self) -> DateTime<Utc> {
        self.0.registered_at
    }
    async fn last_seen_at(&self) -> DateTime<Utc> {
        self.0.last_seen_at
    }
}

/// A container on a node, as its agent last reported it.
#[derive(Debug)]
pub struct Container(pub container::Model);

#[Object]
impl Container {
    async fn id(&self) -> &str {
        &self.0.id
    }
    async fn node(&self) -> &str {
        &self.0.node
    }
    async fn image(&self) -> &str {
        &self.0.image
    }
    async fn image_digest(&self) -> Option<&str> {
        self.0.image_digest.as_deref()
    }
    /// `running`, `paused`, `stopped`, `created`, `none`, ...
    async fn state(&self) -> &str {
        &self.0.state
    }
    async fn snapshotter(&self) -> &str {
        &self.0.snapshotter
    }
    async fn pod_namespace(&self) -> Option<&str> {
        self.0.pod_namespace.as_deref()
    }
    async fn pod_name(&self) -> Option<&str> {
        self.0.pod_name.as_deref()
    }
    async fn container_name(&self) -> Option<&str> {
        self.0.container_name.as_deref()
    }
    /// The speaker the pod belongs to (its `dcs.io/owner` label).
    async fn owner(&self) -> Option<&str> {
        self.0.owner.as_deref()
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
}

/// Progress of the current phase.
#[derive(SimpleObject, Debug)]
pub struct Progress {
    pub bytes_done: i64,
    pub bytes_total: i64,
}

/// A snapshot: one commit of a container, and the image it made.
#[derive(Clone, Debug)]
pub struct Snapshot(pub snapshot::Model);

#[Object]
impl Snapshot {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    async fn status(&self) -> SnapshotStatus {
        self.0.status.into()
    }
    async fn progress(&self) -> Progress {
        Progress {
            bytes_done: self.0.phase_bytes_done,
            bytes_total: self.0.phase_bytes_total,
        }
    }
    async fn requested_by(&self) -> &str {
        &self.0.requested_by
    }
    /// The owner of the desktop when the snapshot was requested.
    async fn owner(&self) -> Option<&str> {
        self.0.owner.as_deref()
    }
    async fn node(&self) -> &str {
        &self.0.node
    }
    async fn container_id(&self) -> &str {
        &self.0.container_id
    }
    async fn pod_namespace(&self) -> Option<&str> {
        self.0.pod_namespace.as_deref()
    }
    async fn pod_name(&self) -> Option<&str> {
        self.0.pod_name.as_deref()
    }
    async fn container_name(&self) -> Option<&str> {
        self.0.container_name.as_deref()
    }
    /// The image the container ran when the snapshot was requested.
    async fn base_image(&self) -> Option<&str> {
        self.0.base_image.as_deref()
    }
    async fn base_digest(&self) -> Option<&str> {
        self.0.base_digest.as_deref()
    }
    /// The tag pushed to.
    async fn target(&self) -> &str {
        &self.0.target
    }
    async fn repository(&self) -> &str {
        &self.0.repository
    }
    async fn message(&self) -> Option<&str> {
        self.0.message.as_deref()
    }
    async fn compression(&self) -> String {
        options(&self.0).compression.to_string()
    }
    async fn changes(&self) -> Vec<String> {
        options(&self.0).changes
    }
    async fn excludes(&self) -> Vec<String> {
        options(&self.0).excludes
    }
    async fn manifest_digest(&self) -> Option<&str> {
        self.0.manifest_digest.as_deref()
    }
    async fn config_digest(&self) -> Option<&str> {
        self.0.config_digest.as_deref()
    }
    async fn layer_digest(&self) -> Option<&str> {
        self.0.layer_digest.as_deref()
    }
    /// Compressed size of the new layer.
    async fn layer_size(&self) -> Option<i64> {
        self.0.layer_size
    }
    async fn uncompressed_size(&self) -> Option<i64> {
        self.0.uncompressed_size
    }
    /// How long the container was paused while its changes were read.
    async fn paused_ms(&self) -> Option<i64> {
        self.0.paused_ms
    }
    /// How long the changes were read while the container ran, before the
    /// pause (0 when the snapshot did not pause).
    async fn prepare_ms(&self) -> Option<i64> {
        self.0.prepare_ms
    }
    async fn duration_ms(&self) -> Option<i64> {
        self.0.duration_ms
    }
    /// A stable code when the snapshot failed (`DISK_FULL`, `REGISTRY_AUTH`, ...).
    async fn failure_code(&self) -> Option<&str> {
        self.0.failure_code.as_deref()
    }
    async fn failure_reason(&self) -> Option<&str> {
        self.0.failure_reason.as_deref()
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
    async fn started_at(&self) -> Option<DateTime<Utc>> {
        self.0.started_at
    }
    async fn finished_at(&self) -> Option<DateTime<Utc>> {
        self.0.finished_at
    }

    /// The snapshot whose image this one was built on; null when the caller
    /// may not see it.
    async fn parent(&self, ctx: &Context<'_>) -> Result<Option<Snapshot>> {
        let Some(id) = self.0.parent_id else {
            return Ok(None);
        };
        let who = principal(ctx)?;
        let state = state(ctx)?;
        let loader = loader::<SnapshotsById>(ctx)?;
        let parent = loader.load_one(id).await?;
        Ok(parent
            .filter(|p| snapshots::may_see(state, who, p))
            .map(Snapshot))
    }

    /// Snapshots built on this one's image that the caller may see.
    async fn children(&self, ctx: &Context<'_>) -> Result<Vec<Snapshot>> {
        let who = principal(ctx)?;
        let state = state(ctx)?;
        let loader = loader::<ChildrenById>(ctx)?;
        let children = loader.load_one(self.0.id).await?.unwrap_or_default();
        Ok(visible(state, who, children))
    }

    /// Parent, grandparent, ... nearest first: at most `first` generations
    /// (default 100, at most 1,000), then only those the caller may see.
    /// One recursive SQL query for all the snapshots of a list.
    #[graphql(complexity = "super::complexity::list_complexity(first, child_complexity)")]
    async fn ancestors(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 100, validator(minimum = 1, maximum = 1000))] first: i32,
    ) -> Result<Vec<Snapshot>> {
        let who = principal(ctx)?;
        let state = state(ctx)?;
        let loader = loader::<AncestorsOf>(ctx)?;
        let key = LineageKey {
            root: self.0.id,
            first: first as usize,
        };
        let chain = loader.load_one(key).await?.unwrap_or_default();
        // Lists of cached lists resolve without ever waiting: give the
        // runtime a turn now and then, or the request's deadline, its
        // client's departure and SIGTERM are not noticed until it ends.
        // (After the load, so that every row of a list has asked for its
        // lineage before the loader's batch leaves: one query per list.)
        tokio::task::consume_budget().await;
        Ok(visible(state, who, chain))
    }

    /// Children, grandchildren, ... breadth first (by generation, then
    /// age): at most `first` (default 100, at most 1,000), then only those
    /// the caller may see. One recursive SQL query for all the snapshots of
    /// a list.
    #[graphql(complexity = "super::complexity::list_complexity(first, child_complexity)")]
    async fn descendants(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 100, validator(minimum = 1, maximum = 1000))] first: i32,
    ) -> Result<Vec<Snapshot>> {
        let who = principal(ctx)?;
        let state = state(ctx)?;
        let loader = loader::<DescendantsOf>(ctx)?;
        let key = LineageKey {
            root: self.0.id,
            first: first as usize,
        };
        let all = loader.load_one(key).await?.unwrap_or_default();
        tokio::task::consume_budget().await;
        Ok(visible(state, who, all))
    }
}

/// The snapshots of a lineage the caller may see.
fn visible(
    state: &crate::state::AppState,
    who: &crate::auth::Principal,
    rows: Vec<snapshot::Model>,
) -> Vec<Snapshot> {
    rows.into_iter()
        .filter(|s| snapshots::may_see(state, who, s))
        .map(Snapshot)
        .collect()
}

fn options(model: &snapshot::Model) -> JobOptions {
    serde_json::from_value(model.options.clone()).unwrap_or(JobOptions {
        changes: Vec::new(),
        excludes: Vec::new(),
        compression: dcs_protocol::Compression::Gzip,
        pause: true,
    })
}

/// A page of snapshots, newest first.
#[derive(SimpleObject, Debug)]
pub struct SnapshotConnection {
    pub edges: Vec<SnapshotEdge>,
    pub page_info: PageInfo,
}

#[derive(SimpleObject, Debug)]
pub struct SnapshotEdge {
    pub cursor: String,
    pub node: Snapshot,
}

#[derive(SimpleObject, Debug)]
pub struct PageInfo {
    pub has_next_page: bool,
    pub end_cursor: Option<String>,
}

/// A change of a snapshot, as subscriptions deliver it.
#[derive(SimpleObject, Clone, Debug)]
pub struct SnapshotEvent {
    pub snapshot_id: ID,
    pub status: SnapshotStatus,
    pub bytes_done: i64,
    pub bytes_total: i64,
    pub at: DateTime<Utc>,
}
