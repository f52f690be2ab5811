//! GraphQL object types over the database models.

use async_graphql::{Context, Enum, ID, Object, Result, SimpleObject};
use chrono::{DateTime, Utc};
use entity::{container, node, snapshot};

use super::context::{loader, principal, state};
use super::findings::FindingReport;
use super::int64::Int64;
use super::loaders::{
    AncestorsOf, ChildrenById, DescendantsOf, LastSnapshotByContainer, LineageKey,
    SnapshotRefsById, SnapshotsById,
};
use crate::auth::Role;
use crate::auth::policy::Quotas;
use crate::service::findings::Counts;
use crate::service::layers;
use crate::service::quotas;
use crate::service::snapshots::{self, JobOptions};

/// Where a snapshot is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum SnapshotStatus {
    /// Waiting for its agent to start it.
    Queued,
    /// The agent reads the container's changes into a layer.
    Diffing,
    /// The agent sends the image to the registry.
    Pushing,
    /// The image is in the registry (final).
    Pushed,
    /// It failed; `failureCode` and `failureReason` say why (final).
    Failed,
    /// Cancelled before it finished (final).
    Cancelled,
    /// Deleted after it was pushed (final): `deletion` says by whom and
    /// what became of the image in the registry.
    Deleted,
}

/// What deleting a snapshot did to its image in the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum ManifestDeletion {
    /// The registry deleted the manifest (and every tag on it).
    Deleted,
    /// The registry no longer had it.
    Absent,
    /// Kept: another live snapshot of the repository has the same manifest
    /// digest, and registries delete by digest.
    KeptShared,
    /// Kept: the registry does not allow deletes.
    KeptUnsupported,
}

impl From<entity::ManifestDeletion> for ManifestDeletion {
    fn from(m: entity::ManifestDeletion) -> Self {
        use entity::ManifestDeletion as M;
        match m {
            M::Deleted => Self::Deleted,
            M::Absent => Self::Absent,
            M::KeptShared => Self::KeptShared,
            M::KeptUnsupported => Self::KeptUnsupported,
        }
    }
}

/// How a snapshot was deleted.
#[derive(SimpleObject, Debug)]
pub struct Deletion {
    /// When.
    pub at: DateTime<Utc>,
    /// Who: a token's subject, or `retention`.
    pub by: String,
    /// What became of the image in the registry.
    pub manifest: ManifestDeletion,
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
            S::Deleted => Self::Deleted,
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
            SnapshotStatus::Deleted => S::Deleted,
        }
    }
}

/// The caller, as the token describes them.
#[derive(SimpleObject, Debug)]
#[graphql(complex)]
pub struct Me {
    /// The token's subject: the speaker's or admin's name.
    pub sub: String,
    /// What the caller may do.
    pub role: Role,
    /// Pod namespaces in which a speaker may see and snapshot their own
    /// desktops (every desktop there with namespace-wide access).
    pub namespaces: Vec<String>,
    /// Repositories (`registry/path`) under which this speaker may push,
    /// e.g. `registry.example/workshops/alice`: a client builds a target
    /// from one. Empty for admins, who may push anywhere.
    pub repository_prefixes: Vec<String>,
}

#[async_graphql::ComplexObject]
impl Me {
    /// What the caller uses of each quota, and the limits (null: none; an
    /// admin has none).
    async fn quota(&self, ctx: &Context<'_>) -> Result<Quota> {
        let who = principal(ctx)?;
        let state = state(ctx)?;
        let used = quotas::usage(&state.db, &who.sub, crate::clock::now()).await?;
        let limits = if who.is_admin() {
            Quotas::default()
        } else {
            state.policy.quotas
        };
        let of = |used: u64, limit: Option<u64>| QuotaUse {
            used: Int64(used as i64),
            limit: limit.map(|l| Int64(l.min(i64::MAX as u64) as i64)),
        };
        Ok(Quota {
            in_flight: of(used.in_flight, limits.in_flight),
            per_day: of(used.last_day, limits.per_day),
            bytes: of(used.bytes, limits.bytes),
        })
    }
}

/// A speaker's quotas: what they use and how much they may.
#[derive(SimpleObject, Debug)]
pub struct Quota {
    /// Snapshots in progress (not yet PUSHED, FAILED or CANCELLED).
    pub in_flight: QuotaUse,
    /// Snapshots requested in the last 24 hours.
    pub per_day: QuotaUse,
    /// Compressed layer bytes of their PUSHED snapshots.
    pub bytes: QuotaUse,
}

/// One quota: what is used, and the limit (null: no limit).
#[derive(SimpleObject, Debug)]
pub struct QuotaUse {
    /// How much is used now.
    pub used: Int64,
    /// The most allowed; null when there is no limit.
    pub limit: Option<Int64>,
}

#[derive(Debug)]
pub struct Node(pub node::Model);

/// A node and its agent.
#[Object]
impl Node {
    /// The node's name (the Kubernetes node name).
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// `READY` or `LOST`.
    async fn state(&self) -> String {
        // The stored text of the state, which is what the schema's String says.
        sea_orm::ActiveEnum::to_value(&self.0.state)
    }
    /// The version of the node's agent.
    async fn agent_version(&self) -> &str {
        &self.0.version
    }
    /// The version of the node's containerd, as its agent reports it.
    async fn containerd_version(&self) -> &str {
        &self.0.containerd_version
    }
    /// How many snapshots the agent takes at once.
    async fn max_concurrent_jobs(&self) -> i32 {
        self.0.max_concurrent_jobs
    }
    /// When the agent last registered (it does at every start).
    async fn registered_at(&self) -> DateTime<Utc> {
        self.0.registered_at
    }
    /// The agent's last heartbeat.
    async fn last_seen_at(&self) -> DateTime<Utc> {
        self.0.last_seen_at
    }
}

#[derive(Debug)]
pub struct Container(pub container::Model);

/// A container on a node, as its agent last reported it.
#[Object]
impl Container {
    /// The containerd container id.
    async fn id(&self) -> &str {
        &self.0.id
    }
    /// The node it runs on.
    async fn node(&self) -> &str {
        &self.0.node
    }
    /// The image it was created from, by name.
    async fn image(&self) -> &str {
        &self.0.image
    }
    /// The manifest digest of that image, when containerd knows it.
    async fn image_digest(&self) -> Option<&str> {
        self.0.image_digest.as_deref()
    }
    /// `running`, `paused`, `stopped`, `created`, `none`, ...
    async fn state(&self) -> &str {
        &self.0.state
    }
    /// The containerd snapshotter of its file system (`overlayfs`, ...).
    async fn snapshotter(&self) -> &str {
        &self.0.snapshotter
    }
    /// The namespace of its pod (`io.kubernetes.pod.namespace`).
    async fn pod_namespace(&self) -> Option<&str> {
        self.0.pod_namespace.as_deref()
    }
    /// The name of its pod (`io.kubernetes.pod.name`).
    async fn pod_name(&self) -> Option<&str> {
        self.0.pod_name.as_deref()
    }
    /// Its name in the pod (`io.kubernetes.container.name`).
    async fn container_name(&self) -> Option<&str> {
        self.0.container_name.as_deref()
    }
    /// The speaker the pod belongs to (its `dcs.io/owner` label).
    async fn owner(&self) -> Option<&str> {
        self.0.owner.as_deref()
    }
    /// When its agent last reported it.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
    /// Its newest snapshot, if the caller may see it. One query for all
    /// the containers of a list.
    async fn last_snapshot(&self, ctx: &Context<'_>) -> Result<Option<Snapshot>> {
        let who = principal(ctx)?;
        let state = state(ctx)?;
        let key = (self.0.node.clone(), self.0.id.clone());
        let last = loader::<LastSnapshotByContainer>(ctx)?
            .load_one(key)
            .await?
            .flatten();
        Ok(last
            .filter(|s| snapshots::may_see(state, who, s))
            .map(Snapshot))
    }
}

/// Progress of the current phase.
#[derive(SimpleObject, Debug)]
pub struct Progress {
    /// Bytes of the phase done so far (sent to the registry, while pushing).
    pub bytes_done: Int64,
    /// Bytes of the phase in all.
    pub bytes_total: Int64,
}

#[derive(Clone, Debug)]
pub struct Snapshot(pub snapshot::Model);

/// Does this selection of a snapshot read nothing but its id (and
/// `__typename`), through fragments too?
pub(crate) fn asks_only_id(field: async_graphql::SelectionField<'_>) -> bool {
    field
        .selection_set()
        .all(|f| matches!(f.name(), "id" | "__typename"))
}

impl Snapshot {
    /// A snapshot of which only `id` may be resolved (see [`asks_only_id`]):
    /// every other column holds a placeholder.
    fn id_only(id: uuid::Uuid) -> Self {
        Self(crate::service::snapshot_rows::placeholder_row(id))
    }
}

/// A snapshot: one commit of a container, and the image it made.
#[Object]
impl Snapshot {
    /// The snapshot's id (a UUID).
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// Where it is in its life.
    async fn status(&self) -> SnapshotStatus {
        self.0.status.into()
    }
    /// Progress of the current phase.
    async fn progress(&self) -> Progress {
        Progress {
            bytes_done: self.0.phase_bytes_done.into(),
            bytes_total: self.0.phase_bytes_total.into(),
        }
    }
    /// The `sub` of who requested it.
    async fn requested_by(&self) -> &str {
        &self.0.requested_by
    }
    /// The owner of the desktop when the snapshot was requested.
    async fn owner(&self) -> Option<&str> {
        self.0.owner.as_deref()
    }
    /// The node of the container.
    async fn node(&self) -> &str {
        &self.0.node
    }
    /// The containerd id of the container.
    async fn container_id(&self) -> &str {
        &self.0.container_id
    }
    /// The namespace of the container's pod.
    async fn pod_namespace(&self) -> Option<&str> {
        self.0.pod_namespace.as_deref()
    }
    /// The name of the container's pod.
    async fn pod_name(&self) -> Option<&str> {
        self.0.pod_name.as_deref()
    }
    /// The container's name in its pod.
    async fn container_name(&self) -> Option<&str> {
        self.0.container_name.as_deref()
    }
    /// The image the container ran when the snapshot was requested.
    async fn base_image(&self) -> Option<&str> {
        self.0.base_image.as_deref()
    }
    /// The manifest digest of that image.
    async fn base_digest(&self) -> Option<&str> {
        self.0.base_digest.as_deref()
    }
    /// The tag pushed to.
    async fn target(&self) -> &str {
        &self.0.target
    }
    /// The target without its tag: `registry/path`.
    async fn repository(&self) -> &str {
        &self.0.repository
    }
    /// The message kept in the image history.
    async fn message(&self) -> Option<&str> {
        self.0.message.as_deref()
    }
    /// The layer compression: `gzip` or `zstd`.
    async fn compression(&self) -> String {
        options(&self.0).compression.to_string()
    }
    /// The Dockerfile-style config changes asked for.
    async fn changes(&self) -> Vec<String> {
        options(&self.0).changes
    }
    /// The paths left out, as globs, besides the default ones.
    async fn excludes(&self) -> Vec<String> {
        options(&self.0).excludes
    }
    /// The digest of the pushed image's manifest.
    async fn manifest_digest(&self) -> Option<&str> {
        self.0.manifest_digest.as_deref()
    }
    /// The digest of the pushed image's config.
    async fn config_digest(&self) -> Option<&str> {
        self.0.config_digest.as_deref()
    }
    /// The digest of the new layer (compressed).
    async fn layer_digest(&self) -> Option<&str> {
        self.0.layer_digest.as_deref()
    }
    /// Compressed size of the new layer, in bytes.
    async fn layer_size(&self) -> Option<Int64> {
        self.0.layer_size.map(Int64)
    }
    /// Size of the new layer's tar before compression, in bytes.
    async fn uncompressed_size(&self) -> Option<Int64> {
        self.0.uncompressed_size.map(Int64)
    }
    /// How long the container was paused while its changes were read, in
    /// milliseconds.
    async fn paused_ms(&self) -> Option<Int64> {
        self.0.paused_ms.map(Int64)
    }
    /// How long the changes were read while the container ran, before the
    /// pause, in milliseconds (0 when the snapshot did not pause).
    async fn prepare_ms(&self) -> Option<Int64> {
        self.0.prepare_ms.map(Int64)
    }
    /// How long the agent worked on it, from its start to the push, in
    /// milliseconds.
    async fn duration_ms(&self) -> Option<Int64> {
        self.0.duration_ms.map(Int64)
    }
    /// Whether the pushed image is flattened: its lineage's base image
    /// (the first one no snapshot made) plus one layer holding everything
    /// above it. False until it is pushed.
    async fn flattened(&self) -> bool {
        self.0.flattened
    }
    /// How many layers the pushed image has in all, base image included;
    /// null until it is pushed, or when its agent did not say.
    async fn layer_count(&self) -> Option<i32> {
        self.0.layer_count
    }
    /// How many of the pushed image's layers are above its lineage's base
    /// image: what the layer budget counts (1 after a flatten); null when
    /// unknown.
    async fn layers_above_base(&self) -> Option<i32> {
        layers::layers_above_base(self.0.layer_count, self.0.lineage_base_layers)
    }
    /// What the secret scan found in the snapshot's change (null until an
    /// agent reports a scan: a pushed snapshot keeps its findings, one
    /// refused with `SECRETS_FOUND` lists what blocked it).
    #[graphql(complexity = "10 + child_complexity")]
    async fn findings(&self) -> Option<FindingReport> {
        let findings = self.0.finding_count?;
        let counts = Counts {
            findings,
            secrets: self.0.secret_finding_count.unwrap_or(0),
        };
        Some(FindingReport::stored(self.0.id, counts))
    }
    /// A stable code when the snapshot failed (`DISK_FULL`, `REGISTRY_AUTH`,
    /// `SECRETS_FOUND`: the scan found secrets that were neither
    /// acknowledged nor excluded, and nothing was pushed; ...).
    async fn failure_code(&self) -> Option<&str> {
        self.0.failure_code.as_deref()
    }
    /// Why it failed or was cancelled, in a sentence.
    async fn failure_reason(&self) -> Option<&str> {
        self.0.failure_reason.as_deref()
    }
    /// When it was requested.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// When it last changed.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
    /// When its agent started reading the changes.
    async fn started_at(&self) -> Option<DateTime<Utc>> {
        self.0.started_at
    }
    /// When it ended (pushed, failed or cancelled).
    async fn finished_at(&self) -> Option<DateTime<Utc>> {
        self.0.finished_at
    }
    /// How it was deleted; null unless `DELETED`.
    async fn deletion(&self) -> Option<Deletion> {
        let s = &self.0;
        Some(Deletion {
            at: s.deleted_at?,
            by: s.deleted_by.clone()?,
            manifest: s.manifest_deletion?.into(),
        })
    }

    /// The snapshot whose image this one was built on; null when the caller
    /// may not see it.
    async fn parent(&self, ctx: &Context<'_>) -> Result<Option<Snapshot>> {
        let Some(id) = self.0.parent_id else {
            return Ok(None);
        };
        let who = principal(ctx)?;
        let state = state(ctx)?;
        if asks_only_id(ctx.field()) {
            // The id and the columns of the visibility rule, not the row.
            let loader = loader::<SnapshotRefsById>(ctx)?;
            let parent = loader.load_one(id).await?;
            return Ok(parent
                .filter(|p| snapshots::may_see_ref(state, who, p))
                .map(|p| Snapshot::id_only(p.id)));
        }
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
    serde_json::from_value(model.options.clone()).unwrap_or_default()
}

/// A change of a snapshot, as subscriptions deliver it.
#[derive(SimpleObject, Clone, Debug)]
pub struct SnapshotEvent {
    /// The snapshot that changed.
    pub snapshot_id: ID,
    /// Its status after the change.
    pub status: SnapshotStatus,
    /// Bytes of the current phase done (sent, while pushing).
    pub bytes_done: Int64,
    /// Bytes of the current phase in all.
    pub bytes_total: Int64,
    /// When the change happened.
    pub at: DateTime<Utc>,
}
