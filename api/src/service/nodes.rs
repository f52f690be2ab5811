//! Agents: registration, heartbeats, and what happens when one goes away.

use dcs_protocol::{Ack, FailureCode, Heartbeat, Registration};
use entity::prelude::*;
use entity::{NodeState, SnapshotStatus, node, snapshot};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, Set, TransactionTrait,
};
use serde::{Deserialize, Serialize};

use super::agent_events::fail_snapshots;
use super::event_log::record_event;
use super::page::{self, Page};
use super::transitions::{self, Expected};
use crate::errors::ApiResult;
use crate::state::AppState;

/// Records (or refreshes) an agent. A new instance id means the agent
/// restarted: the jobs the old instance had cannot finish, so they fail.
#[tracing::instrument(skip_all, fields(node = %registration.node))]
pub async fn register(state: &AppState, registration: Registration) -> ApiResult<()> {
    let now = crate::clock::now();
    let txn = state.db.begin().await?;
    let previous = Node::find_by_id(registration.node.clone())
        .one(&txn)
        .await?;
    let row = node::ActiveModel {
        name: Set(registration.node.clone()),
        instance_id: Set(registration.instance_id),
        url: Set(registration.url.clone()),
        version: Set(registration.version.clone()),
        containerd_version: Set(registration.containerd_version.clone()),
        max_concurrent_jobs: Set(registration.max_concurrent_jobs as i32),
        registered_at: Set(now),
        last_seen_at: Set(now),
        state: Set(NodeState::Ready),
    };
    Node::insert(row)
        .on_conflict(
            OnConflict::column(node::Column::Name)
                .update_columns([
                    node::Column::InstanceId,
                    node::Column::Url,
                    node::Column::Version,
                    node::Column::ContainerdVersion,
                    node::Column::MaxConcurrentJobs,
                    node::Column::RegisteredAt,
                    node::Column::LastSeenAt,
                    node::Column::State,
                ])
                .to_owned(),
        )
        .exec(&txn)
        .await?;
    let mut failed = Vec::new();
    if let Some(previous) = previous
        && previous.instance_id != registration.instance_id
    {
        let orphans = Snapshot::find()
            .filter(snapshot::Column::Node.eq(registration.node.clone()))
            .filter(snapshot::Column::Status.is_in(SnapshotStatus::IN_FLIGHT))
            .filter(snapshot::Column::DispatchedAt.is_not_null())
            .filter(snapshot::Column::AgentInstanceId.ne(registration.instance_id))
            .all(&txn)
            .await?;
        failed = fail_snapshots(
            &txn,
            &state.bus,
            orphans,
            Expected::in_flight()
                .dispatched(true)
                .and(snapshot::Column::AgentInstanceId.ne(registration.instance_id)),
            FailureCode::AgentLost,
            &format!(
                "the agent on node {} restarted during the commit",
                registration.node
            ),
        )
        .await?;
    }
    txn.commit().await?;
    for change in failed {
        state.announce(change, true);
    }
    tracing::info!(node = %registration.node, url = %registration.url, "agent registered");
    state.dispatch_wakeup.notify_one();
    Ok(())
}

/// Marks the agent alive; `known: false` asks it to register again. The
/// heartbeat also says which jobs the agent has: those it no longer knows
/// are settled (see [`reconcile`]).
#[tracing::instrument(skip_all, fields(node = %beat.node))]
pub async fn heartbeat(state: &AppState, beat: Heartbeat) -> ApiResult<Ack> {
    let Some(node) = Node::find_by_id(beat.node.clone()).one(&state.db).await? else {
        return Ok(Ack { known: false });
    };
    if node.instance_id != beat.instance_id || node.state != NodeState::Ready {
        return Ok(Ack { known: false });
    }
    let mut row: node::ActiveModel = node.into();
    row.last_seen_at = Set(crate::clock::now());
    row.update(&state.db).await?;
    reconcile(state, &beat).await?;
    Ok(Ack { known: true })
}

/// A job must have been quiet this long before its absence from a
/// heartbeat counts: the heartbeat may have been composed before the agent
/// took the job, or crossed its last event on the way.
const RECONCILE_GRACE: chrono::Duration = chrono::Duration::seconds(15);

/// Jobs recorded as running on this agent instance that its heartbeat does
/// not list: one that never started goes back to the queue, one that had
/// started fails (what it did is unknown; the registry tag is only written
/// last, so at worst an untagged blob stays).
async fn reconcile(state: &AppState, beat: &Heartbeat) -> ApiResult<()> {
    let quiet_since = crate::clock::now() - RECONCILE_GRACE;
    // Jobs of this instance it does not list, and jobs recorded for an
    // earlier instance of this node (a dispatch written late, after the
    // restart's registration had looked): neither will ever report.
    let unknown = Snapshot::find()
        .filter(snapshot::Column::Node.eq(beat.node.clone()))
        .filter(snapshot::Column::AgentInstanceId.is_not_null())
        .filter(
            Condition::any()
                .add(snapshot::Column::AgentInstanceId.ne(beat.instance_id))
                .add(snapshot::Column::Id.is_not_in(beat.running_jobs.clone())),
        )
        .filter(snapshot::Column::Status.is_in(SnapshotStatus::IN_FLIGHT))
        .filter(snapshot::Column::DispatchedAt.lt(quiet_since))
        .filter(snapshot::Column::UpdatedAt.lt(quiet_since))
        .all(&state.db)
        .await?;
    if unknown.is_empty() {
        return Ok(());
    }
    let (never_started, started): (Vec<_>, Vec<_>) = unknown
        .into_iter()
        .partition(|s| s.status == SnapshotStatus::Queued);
    let txn = state.db.begin().await?;
    let now = crate::clock::now();
    let mut requeued = false;
    for job in never_started {
        let mut row: snapshot::ActiveModel = job.clone().into();
        row.dispatched_at = Set(None);
        row.agent_instance_id = Set(None);
        row.next_dispatch_at = Set(Some(now));
        row.updated_at = Set(now);
        let expected = Expected::unchanged(&job).dispatched(true);
        if let Some(updated) = transitions::compare_and_set(&txn, job.id, expected, row).await? {
            let payload = serde_json::json!({"reason": "the agent no longer knows the job"});
            record_event(&txn, &updated, None, "REQUEUED", &payload).await?;
            requeued = true;
        }
    }
    let reason = format!(
        "the agent on node {} no longer knows the job (it stopped without reporting a result)",
        beat.node
    );
    let mut failed = Vec::new();
    for job in started {
        let expected = Expected::unchanged(&job).dispatched(true);
        failed.extend(
            fail_snapshots(
                &txn,
                &state.bus,
                vec![job],
                expected,
                FailureCode::AgentLost,
                &reason,
            )
            .await?,
        );
    }
    txn.commit().await?;
    for change in failed {
        state.announce(change, true);
    }
    if requeued {
        state.dispatch_wakeup.notify_one();
    }
    Ok(())
}

/// Agents silent longer than the timeout are lost; their running jobs fail.
pub async fn mark_lost_agents(state: &AppState) -> ApiResult<()> {
    let deadline = crate::clock::now()
        - chrono::Duration::from_std(state.agent_timeout).unwrap_or(chrono::Duration::seconds(30));
    let lost = Node::find()
        .filter(node::Column::State.eq(NodeState::Ready))
        .filter(node::Column::LastSeenAt.lt(deadline))
        .all(&state.db)
        .await?;
    for node in lost {
        let txn = state.db.begin().await?;
        let name = node.name.clone();
        let instance = node.instance_id;
        // Only if it is still the silent instance: one that registered or
        // heartbeat meanwhile is not lost.
        let marked = Node::update_many()
            .col_expr(node::Column::State, Expr::value(NodeState::Lost))
            .filter(node::Column::Name.eq(name.clone()))
            .filter(node::Column::InstanceId.eq(instance))
            .filter(node::Column::State.eq(NodeState::Ready))
            .filter(node::Column::LastSeenAt.lt(deadline))
            .exec(&txn)
            .await?;
        if marked.rows_affected == 0 {
            continue;
        }
        let running = Snapshot::find()
            .filter(snapshot::Column::Node.eq(name.clone()))
            .filter(snapshot::Column::Status.is_in(SnapshotStatus::IN_FLIGHT))
            .filter(snapshot::Column::DispatchedAt.is_not_null())
            .filter(snapshot::Column::AgentInstanceId.eq(instance))
            .all(&txn)
            .await?;
        let failed = fail_snapshots(
            &txn,
            &state.bus,
            running,
            Expected::in_flight().dispatched(true).on_instance(instance),
            FailureCode::AgentLost,
            &format!("the agent on node {name} stopped responding during the commit"),
        )
        .await?;
        txn.commit().await?;
        tracing::warn!(node = %name, failed = failed.len(), "agent lost");
        for change in failed {
            state.announce(change, true);
        }
    }
    Ok(())
}

/// Where a page of nodes ended: by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeCursor {
    pub name: String,
}

impl page::Position for NodeCursor {
    const LIST: &'static str = "nodes";
    fn is_plausible(&self) -> bool {
        page::plausible_text(&self.name)
    }
}

/// One page of the nodes, after `after`, by name.
#[tracing::instrument(level = "debug", skip_all, fields(first = first))]
pub async fn list(
    state: &AppState,
    first: usize,
    after: Option<NodeCursor>,
) -> ApiResult<Page<node::Model>> {
    let mut query = Node::find();
    if let Some(after) = after {
        query = query.filter(node::Column::Name.gt(after.name));
    }
    let rows = query
        .order_by_asc(node::Column::Name)
        .limit(page::limit_with_one_more(first))
        .all(&state.db)
        .await?;
    Ok(Page::from_one_more(rows, first))
}

/// How many nodes have registered: cheap, one row per node.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn count(state: &AppState) -> ApiResult<u64> {
    Ok(Node::find().count(&state.db).await?)
}
