//! Handing queued snapshots to agents, and noticing agents that went away.
//!
//! A queued snapshot is claimed (`FOR UPDATE SKIP LOCKED` on Postgres, so
//! several API replicas never send one job twice) by pushing its
//! `next_dispatch_at` forward, then sent to its node's agent outside the
//! transaction. An unreachable agent is retried with backoff, at most
//! [`MAX_ATTEMPTS`] times; an agent that refuses the job (any 4xx) fails it
//! at once with its reason; an agent that stops heartbeating is declared
//! lost and its running jobs fail.

use std::time::Duration;

use dcs_protocol::{FailureCode, FlattenBase, JobAccepted, JobRequest};
use dcs_support::trace_context;
use entity::prelude::*;
use entity::{NodeState, SnapshotStatus, snapshot};
use sea_orm::sea_query::LockBehavior;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DbBackend, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    Set, TransactionTrait,
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::service::agent_calls::cancel_on_agent;
use crate::service::agent_events::fail_snapshots;
use crate::service::findings;
use crate::service::nodes;
use crate::service::snapshots::JobOptions;
use crate::service::transitions::{self, Expected};
use crate::state::AppState;

/// How long a claim on a job lasts before another replica may retry it.
const CLAIM: Duration = Duration::from_secs(30);
const BATCH: u64 = 16;
/// Sends of one job before it fails: with the backoff below, about two
/// minutes of an agent that heartbeats but does not take jobs.
pub const MAX_ATTEMPTS: i32 = 15;
const TICK: Duration = Duration::from_millis(500);

/// Runs until `stop`: dispatches queued jobs and checks agents' heartbeats.
pub async fn run(state: AppState, stop: CancellationToken) {
    let started = std::time::Instant::now();
    loop {
        // Right after a start the heartbeats of the down time are missing
        // through no fault of the agents: give them a full timeout first.
        if started.elapsed() > state.agent_timeout
            && let Err(e) = nodes::mark_lost_agents(&state).await
        {
            tracing::warn!(error = ?e, "checking agents failed");
        }
        match dispatch_due(&state).await {
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "dispatching failed"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = state.dispatch_wakeup.notified() => {}
            _ = tokio::time::sleep(TICK) => {}
        }
    }
}

/// Claims and sends the jobs that are due; returns how many were sent.
pub async fn dispatch_due(state: &AppState) -> Result<usize, sea_orm::DbErr> {
    let claimed = claim(state).await?;
    let mut sent = 0;
    for job in claimed {
        let span = dispatch_span(&job);
        if send(state, job).instrument(span).await {
            sent += 1;
        }
    }
    Ok(sent)
}

/// The span of one send: it continues the trace of the request that
/// created the snapshot (stored with the row), whichever replica sends it
/// and however long after; the agent's job continues it in turn.
fn dispatch_span(job: &snapshot::Model) -> tracing::Span {
    let span = tracing::info_span!("dispatch", snapshot_id = %job.id, node = %job.node);
    trace_context::set_remote_parent(&span, job.trace_parent.as_deref());
    span
}

async fn claim(state: &AppState) -> Result<Vec<snapshot::Model>, sea_orm::DbErr> {
    let now = crate::clock::now();
    let txn = state.db.begin().await?;
    let mut query = Snapshot::find()
        .filter(snapshot::Column::Status.eq(SnapshotStatus::Queued))
        .filter(snapshot::Column::DispatchedAt.is_null())
        .filter(snapshot::Column::NextDispatchAt.lte(now))
        .order_by_asc(snapshot::Column::CreatedAt)
        .limit(BATCH);
    if state.db.get_database_backend() == DbBackend::Postgres {
        query = query.lock_with_behavior(
            sea_orm::sea_query::LockType::Update,
            LockBehavior::SkipLocked,
        );
    }
    let due = query.all(&txn).await?;
    let until = now + chrono::Duration::from_std(CLAIM).unwrap_or(chrono::Duration::seconds(30));
    for job in &due {
        let mut row: snapshot::ActiveModel = job.clone().into();
        row.next_dispatch_at = Set(Some(until));
        row.update(&txn).await?;
    }
    txn.commit().await?;
    Ok(due)
}

/// Sends one claimed job to its agent and records the outcome (in the
/// span of `dispatch_span`).
async fn send(state: &AppState, job: snapshot::Model) -> bool {
    state.metrics.dispatch_attempts.inc();
    let node = match Node::find_by_id(job.node.clone()).one(&state.db).await {
        Ok(node) => node,
        Err(e) => {
            tracing::warn!(error = %e, "reading the node failed");
            return false;
        }
    };
    let Some(node) = node.filter(|n| n.state == NodeState::Ready) else {
        fail(state, job, "the container's node has no connected agent").await;
        return false;
    };
    let options: JobOptions = match serde_json::from_value(job.options.clone()) {
        Ok(o) => o,
        Err(e) => {
            fail(state, job, &format!("stored options are unreadable: {e}")).await;
            return false;
        }
    };
    // The row keeps the target's canonical text, which the shared parser
    // reads back to the very target authorised at creation.
    let target = match dcs_protocol::reference::parse_target(&job.target) {
        Ok(t) => t,
        Err(e) => {
            let reason = format!("the stored target is unreadable: {e}");
            fail_with(state, job, FailureCode::BadRequest, &reason).await;
            return false;
        }
    };
    // A flatten keeps the lineage base's layers: without it (a row older
    // than flattening whose parent is unknown too) there is nothing to
    // flatten onto, and sending it again would not change that.
    let flatten = if options.flatten {
        match flatten_base(&job) {
            Some(base) => Some(base),
            None => {
                let reason = "the snapshot is to be flattened, but its lineage base (the first \
                              image of its lineage that no snapshot made) is not known";
                fail_with(state, job, FailureCode::BadRequest, reason).await;
                return false;
            }
        }
    } else {
        None
    };
    // Stored apart from the row (see `snapshot_findings`).
    let acknowledged_findings = match findings::acknowledgements(&state.db, job.id).await {
        Ok(acks) => acks,
        Err(e) => {
            tracing::warn!(error = ?e, "reading the acknowledgements failed");
            return false;
        }
    };
    let request = JobRequest {
        snapshot_id: job.id,
        container_id: job.container_id.clone(),
        target,
        compression: options.compression,
        pause: options.pause,
        excludes: options.excludes,
        changes: options.changes,
        message: job.message.clone(),
        last_event_seq: job.last_event_seq.max(0) as u64,
        acknowledged_findings,
        traceparent: trace_context::current_traceparent(),
        flatten,
        single_layer: options.single_layer,
    };
    let response = state.agents.send_job(&node.name, &node.url, &request).await;
    let attempts = job.dispatch_attempts + 1;
    let mut row: snapshot::ActiveModel = job.clone().into();
    row.dispatch_attempts = Set(attempts);
    row.updated_at = Set(crate::clock::now());
    match response {
        Ok(r) if r.status().is_success() => {
            // The instance that took the job, as it says; the node row read
            // before sending may name one that restarted at the same address.
            let taken_by = r
                .json::<JobAccepted>()
                .await
                .ok()
                .and_then(|a| a.instance_id)
                .unwrap_or(node.instance_id);
            row.dispatched_at = Set(Some(crate::clock::now()));
            row.agent_instance_id = Set(Some(taken_by));
            // Only if nothing recorded it yet: the agent's first event may
            // have (and then says which instance runs it), or a cancel won.
            let expected = Expected::in_flight().dispatched(false);
            match transitions::compare_and_set(&state.db, job.id, expected, row).await {
                Ok(Some(_)) => {}
                Ok(None) => cancel_if_finished(state, &job).await,
                Err(e) => {
                    tracing::warn!(error = %e, snapshot = %job.id, "recording the dispatch failed")
                }
            }
            tracing::info!(snapshot = %job.id, node = %node.name, "job dispatched");
            true
        }
        // The agent read the job and refused it: sending it again would
        // get the same answer.
        Ok(r) if r.status().is_client_error() => {
            let status = r.status();
            let message = agent_reason(status, r).await;
            fail_with(state, job, FailureCode::BadRequest, &message).await;
            false
        }
        other => {
            let reason = match other {
                Ok(r) => format!("HTTP {}", r.status()),
                Err(e) => dcs_support::describe_chain(&e),
            };
            let Some(backoff) = retry_after(attempts) else {
                let sentence = format!(
                    "the agent on node {} did not take the job after {attempts} attempts (last: {reason})",
                    node.name
                );
                tracing::warn!(snapshot = %job.id, node = %node.name, %reason, attempts, "giving up dispatch");
                fail(state, job, &sentence).await;
                return false;
            };
            row.next_dispatch_at = Set(Some(
                crate::clock::now() + chrono::Duration::from_std(backoff).unwrap_or_default(),
            ));
            if let Err(e) = row.update(&state.db).await {
                tracing::warn!(error = %e, "recording the retry failed");
            }
            tracing::warn!(snapshot = %job.id, node = %node.name, %reason, attempts, "agent unreachable; will retry");
            false
        }
    }
}

/// The image a flattened snapshot keeps the layers of: the row's lineage
/// base, when both its reference and its digest are known.
fn flatten_base(job: &snapshot::Model) -> Option<FlattenBase> {
    Some(FlattenBase {
        image: job.lineage_base_image.clone()?,
        digest: job.lineage_base_digest.clone()?,
    })
}

/// The job reached the agent after it ended here (a cancel that beat the
/// dispatch): the agent must stop it too, before it pauses the desktop or
/// pushes the tag.
async fn cancel_if_finished(state: &AppState, job: &snapshot::Model) {
    match Snapshot::find_by_id(job.id).one(&state.db).await {
        Ok(Some(now)) if now.status.is_terminal() => {
            tracing::info!(snapshot = %job.id, status = ?now.status, "job ended before its dispatch was recorded; cancelling it on the agent");
            cancel_on_agent(state, &now).await;
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, snapshot = %job.id, "reading the job failed"),
    }
}

/// The agent's sentence from its JSON error (`{"message": ...}`), else a
/// short, printable prefix of its body, else the status.
async fn agent_reason(status: reqwest::StatusCode, response: reqwest::Response) -> String {
    const MAX_REASON: usize = 500;
    let text = response.text().await.unwrap_or_default();
    let message = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["message"].as_str().map(String::from))
        .unwrap_or(text);
    let message: String = message
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_REASON)
        .collect();
    let message = message.trim();
    if message.is_empty() {
        format!("the agent refused the job (HTTP {status})")
    } else {
        format!("the agent refused the job: {message}")
    }
}

/// 0.5 s, 1 s, 2 s, ... at most 10 s between attempts.
/// When to send again after `attempts` failed sends; `None`: give up.
fn retry_after(attempts: i32) -> Option<Duration> {
    (attempts < MAX_ATTEMPTS).then(|| backoff(attempts))
}

fn backoff(attempts: i32) -> Duration {
    let exponent = attempts.clamp(1, 6) as u32 - 1;
    Duration::from_millis(500 * 2u64.pow(exponent)).min(Duration::from_secs(10))
}

async fn fail(state: &AppState, job: snapshot::Model, reason: &str) {
    fail_with(state, job, FailureCode::AgentLost, reason).await;
}

async fn fail_with(state: &AppState, job: snapshot::Model, code: FailureCode, reason: &str) {
    let result = async {
        let txn = state.db.begin().await?;
        // Only a job no agent has: one that was dispatched meanwhile ends
        // with its agent's result.
        let expected = Expected::status_in(&[SnapshotStatus::Queued]).dispatched(false);
        let changes = fail_snapshots(&txn, &state.bus, vec![job], expected, code, reason).await?;
        txn.commit().await?;
        Ok::<_, crate::errors::ApiError>(changes)
    }
    .await;
    match result {
        Ok(changes) => {
            for change in changes {
                state.announce(change, true);
            }
        }
        Err(e) => tracing::warn!(error = ?e, "recording a failure failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_agent_is_tried_for_about_two_minutes_then_given_up() {
        let waits: Vec<Duration> = (1..).map_while(retry_after).collect();
        assert_eq!(waits.len() + 1, MAX_ATTEMPTS as usize, "sends in all");
        assert_eq!(waits[0], Duration::from_millis(500));
        assert!(waits.windows(2).all(|w| w[0] <= w[1]));
        let total: Duration = waits.iter().sum();
        assert!(
            (Duration::from_secs(60)..=Duration::from_secs(180)).contains(&total),
            "{total:?}"
        );
        assert_eq!(retry_after(MAX_ATTEMPTS), None);
    }
}
