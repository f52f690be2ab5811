//! What the snapshot service asks of agents, through the state's agent
//! client. Here, not in the dispatcher, so that the service (cancel) and
//! the dispatcher (a cancel that beat the dispatch) share it without the
//! service calling back up into the dispatcher.

use entity::prelude::*;
use entity::snapshot;
use sea_orm::EntityTrait;

use super::event_log::record_event;
use crate::state::AppState;

/// Asks the agent running a snapshot to cancel it; the result comes back
/// as the agent's event. Best effort: an unreachable agent is logged.
#[tracing::instrument(skip_all, fields(snapshot_id = %job.id, node = %job.node))]
pub async fn cancel_on_agent(state: &AppState, job: &snapshot::Model) {
    let Ok(Some(node)) = Node::find_by_id(job.node.clone()).one(&state.db).await else {
        return;
    };
    match state.agents.cancel_job(&node.name, &node.url, job.id).await {
        Ok(r) if r.status().is_success() => {
            let _ = record_event(
                &state.db,
                job,
                None,
                "CANCEL_REQUESTED",
                &serde_json::json!({}),
            )
            .await;
        }
        Ok(r) => {
            tracing::warn!(snapshot = %job.id, status = %r.status(), "agent refused the cancel")
        }
        Err(e) => tracing::warn!(snapshot = %job.id, error = %e, "agent unreachable for cancel"),
    }
}
