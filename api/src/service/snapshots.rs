//! Snapshots: created by speakers, run by agents, linked into lineages.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use dcs_protocol::changes::ConfigChange;
use dcs_protocol::reference::{self, Target};
use dcs_protocol::{Acknowledgement, Compression};
use dcs_support::trace_context;
use entity::prelude::*;
use entity::{NodeState, SnapshotStatus, container, snapshot};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    Set, TransactionTrait,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::audit;
use super::event_log::record_event;
use super::findings;
use super::layers::{self, LayerPlan};
use super::page::{self, Page};
use super::snapshot_rows::{self, Columns};
use crate::auth::Principal;
use crate::bus::SnapshotChange;
use crate::db::OneConnection;
use crate::errors::{ApiError, ApiResult};
use crate::state::AppState;

/// Which container to snapshot: by id, or by pod and container name.
#[derive(Debug, Clone, Default)]
pub struct ContainerSelector {
    pub node: Option<String>,
    pub container_id: Option<String>,
    pub pod_namespace: Option<String>,
    pub pod_name: Option<String>,
    pub container_name: Option<String>,
}

/// What `createSnapshot` asks for.
#[derive(Debug, Clone, Default)]
pub struct NewSnapshot {
    pub container: ContainerSelector,
    pub target: String,
    pub message: Option<String>,
    pub changes: Vec<String>,
    pub excludes: Vec<String>,
    pub compression: Option<Compression>,
    pub pause: Option<bool>,
    /// Flatten onto the lineage base whatever the layer budget says
    /// (default false).
    pub flatten: Option<bool>,
    /// Secret findings to push anyway (`{rule, path}`), sent with the job.
    pub acknowledged_findings: Vec<Acknowledgement>,
}

/// Stored in `snapshots.options` and sent to the agent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct JobOptions {
    pub changes: Vec<String>,
    pub excludes: Vec<String>,
    pub compression: Compression,
    pub pause: bool,
    /// Flatten onto the lineage base: asked for, or the layer budget's
    /// decision. Absent from rows older than flattening.
    #[serde(default)]
    pub flatten: bool,
    /// Exactly one new layer: the layer budget has room for one only.
    /// Absent from older rows.
    #[serde(default)]
    pub single_layer: bool,
}

/// What a row whose options cannot be read is shown with: the request's
/// defaults.
impl Default for JobOptions {
    fn default() -> Self {
        Self {
            changes: Vec::new(),
            excludes: Vec::new(),
            compression: Compression::default(),
            pause: true,
            flatten: false,
            single_layer: false,
        }
    }
}

impl JobOptions {
    /// The layer budget's plan for this snapshot, as the agent is told it.
    fn with_plan(self, plan: LayerPlan) -> Self {
        Self {
            flatten: plan == LayerPlan::Flatten,
            single_layer: plan == LayerPlan::SingleLayer,
            ..self
        }
    }
}

const MAX_MESSAGE: usize = 2_000;
/// Longer than any real reference (Docker caps the name at 255 and the tag
/// at 128), short enough to keep every log line and row small.
const MAX_TARGET: usize = 512;
/// How many `changes` and how many `excludes` one request may carry, and
/// how long each may be.
const MAX_ITEMS: usize = 64;
const MAX_ITEM_LENGTH: usize = 4_096;
const MAX_LIST: usize = 100;
/// Longest container id, pod namespace, pod name, container name or node
/// name a request may give: containerd ids are at most 76 bytes, and
/// Kubernetes names at most 253.
const MAX_SELECTOR_FIELD: usize = 256;

/// Validates, authorises, records the snapshot as `QUEUED` and wakes the
/// dispatcher. The row is written before anything is sent to an agent.
#[tracing::instrument(skip_all, fields(who = %who.sub, snapshot_id = tracing::field::Empty))]
pub async fn create(
    state: &AppState,
    who: &Principal,
    request: NewSnapshot,
) -> ApiResult<snapshot::Model> {
    let result = create_inner(state, who, &request).await;
    if let Ok(s) = &result {
        tracing::Span::current().record("snapshot_id", tracing::field::display(s.id));
    }
    let (outcome, id) = match &result {
        Ok(s) => ("ok".to_string(), Some(s.id.to_string())),
        Err(e) => (e.code.as_str().to_lowercase(), None),
    };
    audit::record(
        &state.db,
        who,
        "createSnapshot",
        "snapshot",
        id,
        &outcome,
        serde_json::json!({"target": request.target}),
    )
    .await;
    result
}

async fn create_inner(
    state: &AppState,
    who: &Principal,
    request: &NewSnapshot,
) -> ApiResult<snapshot::Model> {
    let target = parse_target(&request.target)?;
    let options = validate_options(request)?;
    let acknowledgements =
        findings::validate_acknowledgements(request.acknowledged_findings.clone())?;
    let container = find_container(state, who, &request.container).await?;
    state.policy.check_push(who, &target.repository_path())?;

    ready_node(state, &container).await?;

    let parent = match &container.image_digest {
        Some(digest) => {
            Snapshot::find()
                .filter(snapshot::Column::ManifestDigest.eq(digest.clone()))
                // A deleted snapshot's image may still run: it stays the parent.
                .filter(
                    snapshot::Column::Status
                        .is_in([SnapshotStatus::Pushed, SnapshotStatus::Deleted]),
                )
                .order_by_desc(snapshot::Column::CreatedAt)
                .one(&state.db)
                .await?
        }
        None => None,
    };
    let above = parent
        .as_ref()
        .and_then(|p| layers::layers_above_base(p.layer_count, p.lineage_base_layers))
        .and_then(|above| u32::try_from(above).ok())
        .unwrap_or(0);
    let plan = layers::plan(options.flatten, above, state.layer_budget);
    let options = options.with_plan(plan);
    let (lineage_base_image, lineage_base_digest) = layers::lineage_base(
        parent.as_ref(),
        &container.image,
        container.image_digest.as_deref(),
    );

    let now = crate::clock::now();
    let row = snapshot::ActiveModel {
        id: Set(Uuid::new_v4()),
        requested_by: Set(who.sub.clone()),
        node: Set(container.node.clone()),
        container_id: Set(container.id.clone()),
        pod_namespace: Set(container.pod_namespace.clone()),
        pod_name: Set(container.pod_name.clone()),
        container_name: Set(container.container_name.clone()),
        base_image: Set(Some(container.image.clone())),
        base_digest: Set(container.image_digest.clone()),
        parent_id: Set(parent.map(|p| p.id)),
        lineage_base_image: Set(lineage_base_image),
        lineage_base_digest: Set(lineage_base_digest),
        // The canonical text: the dispatcher reads it back to this target.
        target: Set(target.to_string()),
        repository: Set(target.repository_path()),
        owner: Set(container.owner.clone()),
        message: Set(request.message.clone()),
        options: Set(serde_json::to_value(&options).unwrap_or_default()),
        status: Set(SnapshotStatus::Queued),
        phase_bytes_done: Set(0),
        phase_bytes_total: Set(0),
        last_event_seq: Set(0),
        dispatch_attempts: Set(0),
        next_dispatch_at: Set(Some(now)),
        created_at: Set(now),
        updated_at: Set(now),
        // The dispatch, later and maybe on another replica, continues the
        // trace of this request.
        trace_parent: Set(trace_context::current_traceparent()),
        ..Default::default()
    };
    let txn = state.db.begin().await?;
    super::quotas::check(&txn, &state.policy.quotas, who, now).await?;
    let inserted = match row.insert(&txn).await {
        Ok(s) => s,
        Err(e) if entity::is_unique_violation(&e) => {
            return Err(ApiError::conflict(format!(
                "a snapshot of container {} is already in progress",
                container.id
            )));
        }
        Err(e) => return Err(e.into()),
    };
    findings::store_acknowledgements(&txn, inserted.id, &acknowledgements).await?;
    record_event(&txn, &inserted, None, "QUEUED", &serde_json::json!({})).await?;
    state
        .bus
        .notify(&txn, &SnapshotChange::of(&inserted))
        .await?;
    txn.commit().await?;
    state.announce(SnapshotChange::of(&inserted), true);
    state.dispatch_wakeup.notify_one();
    Ok(inserted)
}

/// The node of `container`, if its agent is connected: snapshots and
/// previews are refused with UNAVAILABLE otherwise.
pub async fn ready_node(
    state: &AppState,
    container: &container::Model,
) -> ApiResult<entity::node::Model> {
    let node = Node::find_by_id(container.node.clone())
        .one(&state.db)
        .await?
        .ok_or_else(|| ApiError::unavailable("the container's node has no agent"))?;
    if node.state != NodeState::Ready {
        return Err(ApiError::unavailable(format!(
            "the agent of node {} is not connected",
            node.name
        )));
    }
    Ok(node)
}

/// The target, parsed by the parser the agent uses too: what is
/// authorised here is what the agent pushes.
pub fn parse_target(target: &str) -> ApiResult<Target> {
    if target.len() > MAX_TARGET {
        return Err(ApiError::bad_input(format!(
            "the target is longer than {MAX_TARGET} bytes"
        )));
    }
    reference::parse_target(target.trim())
        .map_err(|e| ApiError::bad_input(format!("invalid target reference \"{target}\": {e}")))
}

fn validate_options(request: &NewSnapshot) -> ApiResult<JobOptions> {
    check_list("changes", &request.changes)?;
    for change in &request.changes {
        change
            .parse::<ConfigChange>()
            .map_err(|e| ApiError::bad_input(e.to_string()))?;
    }
    validate_excludes(&request.excludes)?;
    if request
        .message
        .as_ref()
        .is_some_and(|m| m.len() > MAX_MESSAGE)
    {
        return Err(ApiError::bad_input(format!(
            "the message is longer than {MAX_MESSAGE} bytes"
        )));
    }
    Ok(JobOptions {
        changes: request.changes.clone(),
        excludes: request.excludes.clone(),
        compression: request.compression.unwrap_or_default(),
        pause: request.pause.unwrap_or(true),
        flatten: request.flatten.unwrap_or(false),
        single_layer: false,
    })
}

/// At most [`MAX_ITEMS`] items, each at most [`MAX_ITEM_LENGTH`] bytes.
fn check_list(name: &str, list: &[String]) -> ApiResult<()> {
    if list.len() > MAX_ITEMS {
        return Err(ApiError::bad_input(format!(
            "at most {MAX_ITEMS} {name} per snapshot"
        )));
    }
    if list.iter().any(|item| item.len() > MAX_ITEM_LENGTH) {
        return Err(ApiError::bad_input(format!(
            "each of the {name} may be at most {MAX_ITEM_LENGTH} bytes long"
        )));
    }
    Ok(())
}

/// Exclude patterns, as `createSnapshot` and `previewSnapshot` take them:
/// capped in number and length, and each a glob the agent's parser (the
/// one in the protocol) accepts.
pub(super) fn validate_excludes(excludes: &[String]) -> ApiResult<()> {
    check_list("excludes", excludes)?;
    for exclude in excludes {
        dcs_protocol::excludes::exclude_glob(exclude)
            .map_err(|e| ApiError::bad_input(e.to_string()))?;
    }
    Ok(())
}

/// Each name of the selector within [`MAX_SELECTOR_FIELD`] bytes: longer
/// ones name nothing, and are refused before any lookup.
fn check_selector(selector: &ContainerSelector) -> ApiResult<()> {
    let fields = [
        ("node", &selector.node),
        ("containerId", &selector.container_id),
        ("podNamespace", &selector.pod_namespace),
        ("podName", &selector.pod_name),
        ("containerName", &selector.container_name),
    ];
    for (name, value) in fields {
        if value.as_ref().is_some_and(|v| v.len() > MAX_SELECTOR_FIELD) {
            return Err(ApiError::bad_input(format!(
                "{name} may be at most {MAX_SELECTOR_FIELD} bytes long"
            )));
        }
    }
    Ok(())
}

/// Finds the container the request names and checks the caller may see
/// it: the one rule for `createSnapshot` and `previewSnapshot`.
pub(super) async fn find_container(
    state: &AppState,
    who: &Principal,
    selector: &ContainerSelector,
) -> ApiResult<container::Model> {
    check_selector(selector)?;
    if let (Some(kubernetes), None, Some(namespace), Some(pod)) = (
        &state.kubernetes,
        &selector.container_id,
        &selector.pod_namespace,
        &selector.pod_name,
    ) {
        return find_pod_container(state, who, kubernetes, namespace, pod, selector).await;
    }
    let mut query = Container::find();
    if let Some(node) = &selector.node {
        query = query.filter(container::Column::Node.eq(node.clone()));
    }
    match (
        &selector.container_id,
        &selector.pod_namespace,
        &selector.pod_name,
    ) {
        (Some(id), None, None) => {
            query = query.filter(container::Column::Id.eq(id.clone()));
        }
        (None, Some(ns), Some(pod)) => {
            query = query
                .filter(container::Column::PodNamespace.eq(ns.clone()))
                .filter(container::Column::PodName.eq(pod.clone()));
            if let Some(name) = &selector.container_name {
                query = query.filter(container::Column::ContainerName.eq(name.clone()));
            }
        }
        _ => {
            return Err(ApiError::bad_input(
                "name the container by containerId, or by podNamespace and podName (and containerName)",
            ));
        }
    }
    // Only the caller's containers are looked at: one that is not theirs
    // reads exactly like one that does not exist.
    let mut found = query
        .filter(state.policy.containers_visible(who))
        .limit(2)
        .all(&state.db)
        .await?;
    match found.len() {
        0 => Err(ApiError::not_found("no such container")),
        1 => Ok(found.remove(0)),
        _ => Err(ApiError::bad_input(
            "several containers match; name the node or the container name",
        )),
    }
}

/// Pod-name targeting through the Kubernetes API: the pod's status names
/// the node and the containerd container, its `dcs.io/owner` label whose it
/// is. The pod is authorised before anything about its state is said.
async fn find_pod_container(
    state: &AppState,
    who: &Principal,
    kubernetes: &crate::kubernetes::Kubernetes,
    namespace: &str,
    pod: &str,
    selector: &ContainerSelector,
) -> ApiResult<container::Model> {
    let found = kubernetes.pod(namespace, pod).await?;
    let Some(found) = found.filter(|p| {
        state
            .policy
            .may_use_container(who, Some(namespace), crate::kubernetes::pod_owner(p))
    }) else {
        return Err(ApiError::not_found("no such container"));
    };
    let resolved = crate::kubernetes::resolve_pod(&found, selector.container_name.as_deref())?;
    if selector.node.as_ref().is_some_and(|n| n != &resolved.node) {
        return Err(ApiError::bad_input(format!(
            "pod {namespace}/{pod} runs on node {}, not {}",
            resolved.node,
            selector.node.as_deref().unwrap_or_default()
        )));
    }
    let mut row = Container::find_by_id((resolved.node.clone(), resolved.container_id.clone()))
        .one(&state.db)
        .await?
        .ok_or_else(|| {
            ApiError::unavailable(format!(
                "the agent on node {} has not reported container {} yet",
                resolved.node, resolved.container_id
            ))
        })?;
    // The API server's word on the owner, not the node's.
    row.owner = resolved.owner;
    Ok(row)
}

/// A snapshot the caller may see.
#[tracing::instrument(skip_all, fields(snapshot_id = %id))]
pub async fn get(state: &AppState, who: &Principal, id: Uuid) -> ApiResult<snapshot::Model> {
    let found = Snapshot::find_by_id(id)
        .one(&state.db)
        .await?
        .ok_or_else(|| ApiError::not_found("no such snapshot"))?;
    if !may_see(state, who, &found) {
        return Err(ApiError::not_found("no such snapshot"));
    }
    Ok(found)
}

/// May the caller see this snapshot? The one rule, in
/// [`crate::auth::policy::Policy::may_see_snapshot`].
pub fn may_see(state: &AppState, who: &Principal, snapshot: &snapshot::Model) -> bool {
    state.policy.may_see_snapshot(who, snapshot.into())
}

/// The SQL condition selecting the snapshots [`may_see`] accepts.
pub fn visibility(state: &AppState, who: &Principal) -> Condition {
    state.policy.snapshots_visible(who)
}

/// Cancels a snapshot: at once when no agent has it yet, else by asking the
/// agent (the final status arrives with its event).
#[tracing::instrument(skip_all, fields(who = %who.sub, snapshot_id = %id))]
pub async fn cancel(state: &AppState, who: &Principal, id: Uuid) -> ApiResult<snapshot::Model> {
    let current = get(state, who, id).await?;
    // Seen but not cancellable happens only with namespace-wide access.
    if !state.policy.may_cancel_snapshot(who, (&current).into()) {
        return Err(ApiError::forbidden(
            "only its requester, the desktop's owner or an admin may cancel a snapshot",
        ));
    }
    if current.status.is_terminal() {
        return Err(ApiError::conflict(format!(
            "the snapshot has already finished ({:?})",
            current.status
        )));
    }
    let outcome = if current.dispatched_at.is_none() {
        let now = crate::clock::now();
        let mut row: snapshot::ActiveModel = current.clone().into();
        row.status = Set(SnapshotStatus::Cancelled);
        row.failure_reason = Set(Some(format!("cancelled by {}", who.sub)));
        row.finished_at = Set(Some(now));
        row.updated_at = Set(now);
        // Only if still undispatched: the dispatcher may have just claimed it.
        let txn = state.db.begin().await?;
        let updated = Snapshot::update_many()
            .set(row.clone())
            .filter(snapshot::Column::Id.eq(id))
            .filter(snapshot::Column::DispatchedAt.is_null())
            .filter(snapshot::Column::Status.eq(SnapshotStatus::Queued))
            .exec(&txn)
            .await?;
        let cancelled = if updated.rows_affected == 1 {
            let cancelled = Snapshot::find_by_id(id)
                .one(&txn)
                .await?
                .ok_or_else(|| ApiError::not_found("no such snapshot"))?;
            let by = serde_json::json!({"by": who.sub});
            record_event(&txn, &cancelled, None, "CANCELLED", &by).await?;
            let change = SnapshotChange::of(&cancelled);
            state.bus.notify(&txn, &change).await?;
            Some(change)
        } else {
            None
        };
        txn.commit().await?;
        if let Some(change) = cancelled {
            state.announce(change, true);
            "cancelled"
        } else {
            super::agent_calls::cancel_on_agent(state, &get(state, who, id).await?).await;
            "requested"
        }
    } else {
        super::agent_calls::cancel_on_agent(state, &current).await;
        "requested"
    };
    audit::record(
        &state.db,
        who,
        "cancelSnapshot",
        "snapshot",
        Some(id.to_string()),
        outcome,
        serde_json::json!({}),
    )
    .await;
    get(state, who, id).await
}

/// Filters of the `snapshots` query.
#[derive(Debug, Clone, Default)]
pub struct SnapshotFilter {
    pub requested_by: Option<String>,
    pub status: Option<SnapshotStatus>,
    pub repository: Option<String>,
    pub node: Option<String>,
}

/// Where a page of snapshots ended: newest first, by (created_at, id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cursor {
    /// Stored times have whole microseconds (`clock::now`).
    #[serde(rename = "at", with = "chrono::serde::ts_microseconds")]
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

impl page::Position for Cursor {
    const LIST: &'static str = "snapshots";
    fn is_plausible(&self) -> bool {
        page::plausible_time(&self.created_at)
    }
}

impl Cursor {
    pub fn of(snapshot: &snapshot::Model) -> Self {
        Self {
            created_at: snapshot.created_at,
            id: snapshot.id,
        }
    }
}

/// One page of snapshots after `after`, newest first, and whether more
/// follow.
#[tracing::instrument(level = "debug", skip_all, fields(who = %who.sub, first = first))]
pub async fn list(
    state: &AppState,
    reads: &mut OneConnection<'_>,
    who: &Principal,
    filter: SnapshotFilter,
    first: usize,
    after: Option<Cursor>,
    columns: &Columns,
) -> ApiResult<Page<snapshot::Model>> {
    let first = first.clamp(1, MAX_LIST);
    let mut query = Snapshot::find().filter(visibility(state, who));
    if let Some(owner) = filter.requested_by {
        query = query.filter(snapshot::Column::RequestedBy.eq(owner));
    }
    if let Some(status) = filter.status {
        query = query.filter(snapshot::Column::Status.eq(status));
    }
    if let Some(repository) = filter.repository {
        query = query.filter(snapshot::Column::Repository.eq(repository));
    }
    if let Some(node) = filter.node {
        query = query.filter(snapshot::Column::Node.eq(node));
    }
    if let Some(cursor) = after {
        query = query.filter(
            Condition::any()
                .add(snapshot::Column::CreatedAt.lt(cursor.created_at))
                .add(
                    Condition::all()
                        .add(snapshot::Column::CreatedAt.eq(cursor.created_at))
                        .add(snapshot::Column::Id.lt(cursor.id)),
                ),
        );
    }
    let query = query
        .order_by_desc(snapshot::Column::CreatedAt)
        .order_by_desc(snapshot::Column::Id)
        .limit(page::limit_with_one_more(first));
    let rows = snapshot_rows::read_all(reads, query, columns).await?;
    Ok(Page::from_one_more(rows, first))
}

/// Snapshots by id, for DataLoaders: one query for any number of ids.
#[tracing::instrument(level = "debug", skip_all, fields(count = ids.len()))]
pub async fn by_ids(
    reads: &mut OneConnection<'_>,
    ids: &[Uuid],
) -> ApiResult<HashMap<Uuid, snapshot::Model>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let query = Snapshot::find().filter(snapshot::Column::Id.is_in(ids.to_vec()));
    Ok(reads
        .all::<snapshot::Model>(&query)
        .await?
        .into_iter()
        .map(|s| (s.id, s))
        .collect())
}

/// A snapshot's id and what [`may_see`] reads of it: enough to answer
/// `parent { id }` without reading and decoding the whole row.
#[derive(Clone, Debug, PartialEq, Eq, sea_orm::FromQueryResult)]
pub struct SnapshotRef {
    pub id: Uuid,
    pub requested_by: String,
    pub owner: Option<String>,
    pub pod_namespace: Option<String>,
}

impl From<&snapshot::Model> for SnapshotRef {
    fn from(s: &snapshot::Model) -> Self {
        Self {
            id: s.id,
            requested_by: s.requested_by.clone(),
            owner: s.owner.clone(),
            pod_namespace: s.pod_namespace.clone(),
        }
    }
}

/// [`may_see`] on what a [`SnapshotRef`] holds.
pub fn may_see_ref(state: &AppState, who: &Principal, snapshot: &SnapshotRef) -> bool {
    let parties = crate::auth::policy::SnapshotParties {
        requested_by: &snapshot.requested_by,
        owner: snapshot.owner.as_deref(),
        pod_namespace: snapshot.pod_namespace.as_deref(),
    };
    state.policy.may_see_snapshot(who, parties)
}

/// [`by_ids`], reading only the columns of a [`SnapshotRef`].
#[tracing::instrument(level = "debug", skip_all, fields(ids = ids.len()))]
pub async fn refs_by_ids(
    reads: &mut OneConnection<'_>,
    ids: &[Uuid],
) -> ApiResult<HashMap<Uuid, SnapshotRef>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let query = Snapshot::find()
        .select_only()
        .columns([
            snapshot::Column::Id,
            snapshot::Column::RequestedBy,
            snapshot::Column::Owner,
            snapshot::Column::PodNamespace,
        ])
        .filter(snapshot::Column::Id.is_in(ids.to_vec()));
    Ok(reads
        .all::<SnapshotRef>(&query)
        .await?
        .into_iter()
        .map(|s| (s.id, s))
        .collect())
}

/// Children of each parent id, for DataLoaders.
#[tracing::instrument(level = "debug", skip_all, fields(parents = parents.len()))]
pub async fn children_of(
    reads: &mut OneConnection<'_>,
    parents: &[Uuid],
) -> ApiResult<HashMap<Uuid, Vec<snapshot::Model>>> {
    let mut map: HashMap<Uuid, Vec<snapshot::Model>> = HashMap::new();
    if parents.is_empty() {
        return Ok(map);
    }
    let query = Snapshot::find()
        .filter(snapshot::Column::ParentId.is_in(parents.to_vec()))
        .order_by_asc(snapshot::Column::CreatedAt);
    let rows = reads.all::<snapshot::Model>(&query).await?;
    for row in rows {
        if let Some(parent) = row.parent_id {
            map.entry(parent).or_default().push(row);
        }
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errors::Code;
    use serde_json::json;

    fn request(target: &str) -> NewSnapshot {
        NewSnapshot {
            target: target.into(),
            ..NewSnapshot::default()
        }
    }

    fn refused(result: ApiResult<impl std::fmt::Debug>) -> bool {
        matches!(result, Err(e) if e.code == Code::BadUserInput)
    }

    #[test]
    fn targets_are_parsed_by_the_shared_parser_and_capped() {
        let target = parse_target(" reg.example:5000/workshops/alice/app ").unwrap();
        assert_eq!(
            target.to_string(),
            "reg.example:5000/workshops/alice/app:latest"
        );
        assert_eq!(
            target.repository_path(),
            "reg.example:5000/workshops/alice/app"
        );
        assert!(refused(parse_target(
            "reg.example/workshops/alice/../bob:v1"
        )));
        assert!(refused(parse_target(
            "reg.example/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
        )));
        let long = format!("reg.example/{}:v1", "a/".repeat(300));
        assert!(long.len() > MAX_TARGET);
        assert!(refused(parse_target(&long)));
    }

    #[test]
    fn changes_and_excludes_are_capped_in_count_and_length() {
        let ok = |r: &NewSnapshot| validate_options(r).is_ok();
        let mut r = request("x");
        r.changes = vec!["ENV A=1".into(); MAX_ITEMS];
        r.excludes = vec!["/a".into(); MAX_ITEMS];
        assert!(ok(&r));
        r.changes.push("ENV A=1".into());
        assert!(refused(validate_options(&r)));
        r.changes.pop();
        r.excludes.push("/a".into());
        assert!(refused(validate_options(&r)));
        r.excludes.pop();
        r.excludes[0] = format!("/{}", "x".repeat(MAX_ITEM_LENGTH));
        assert!(refused(validate_options(&r)));
        r.excludes[0] = "/a".into();
        r.changes[0] = format!("ENV A={}", "x".repeat(MAX_ITEM_LENGTH));
        assert!(refused(validate_options(&r)));
        r.changes[0] = "LABEL dcs.io/owner=mallory".into();
        assert!(refused(validate_options(&r)));
    }

    #[test]
    fn flatten_is_stored_in_the_options_with_the_budget_plan() {
        let mut r = request("x");
        let options = validate_options(&r).unwrap();
        assert!(!options.flatten && !options.single_layer);
        r.flatten = Some(true);
        let options = validate_options(&r).unwrap();
        assert!(options.flatten && !options.single_layer);

        // The plan decides both; stored in camelCase.
        let stored = |o: JobOptions| serde_json::to_value(o).unwrap();
        let single = stored(
            validate_options(&request("x"))
                .unwrap()
                .with_plan(LayerPlan::SingleLayer),
        );
        assert_eq!(
            (&single["flatten"], &single["singleLayer"]),
            (&json!(false), &json!(true))
        );
        let flat = stored(options.clone().with_plan(LayerPlan::Flatten));
        assert_eq!(
            (&flat["flatten"], &flat["singleLayer"]),
            (&json!(true), &json!(false))
        );
        let back: JobOptions = serde_json::from_value(flat).unwrap();
        assert_eq!(back, options);

        // Rows older than flattening read as neither.
        let old = json!({"changes": [], "excludes": [], "compression": "zstd", "pause": false});
        let old: JobOptions = serde_json::from_value(old).unwrap();
        assert!(!old.flatten && !old.single_layer, "{old:?}");
        // A stored value that is not a boolean is unreadable, not true.
        for bad in [json!("yes"), json!(1), json!(null), json!({})] {
            let row = json!({"changes": [], "excludes": [], "compression": "gzip",
                             "pause": true, "flatten": bad});
            assert!(serde_json::from_value::<JobOptions>(row).is_err(), "{bad}");
        }
    }

    #[test]
    fn excludes_must_be_globs_the_agent_accepts() {
        for good in ["/home/*/.cache", "*.pyc", "/var/log/**", "/a/[bc]"] {
            assert!(validate_excludes(&[good.into()]).is_ok(), "{good}");
        }
        for bad in ["", "/", "/a/[", "/a/{b", "/a\0b"] {
            assert!(refused(validate_excludes(&[bad.into()])), "{bad:?}");
        }
    }

    #[test]
    fn selector_names_are_capped() {
        let ok = ContainerSelector {
            container_id: Some("c".repeat(MAX_SELECTOR_FIELD)),
            ..ContainerSelector::default()
        };
        assert!(check_selector(&ok).is_ok());
        let long = || Some("x".repeat(MAX_SELECTOR_FIELD + 1));
        for selector in [
            ContainerSelector {
                container_id: long(),
                ..ContainerSelector::default()
            },
            ContainerSelector {
                pod_namespace: long(),
                pod_name: Some("p".into()),
                ..ContainerSelector::default()
            },
            ContainerSelector {
                node: long(),
                ..ContainerSelector::default()
            },
        ] {
            assert!(refused(check_selector(&selector)), "{selector:?}");
        }
    }
}
