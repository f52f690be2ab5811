//! Job events from agents: each applied once, in order, in one transaction
//! with the snapshot's new status, then published to subscribers.

use dcs_protocol::{FailureCode, JobEvent, JobEventKind};
use entity::prelude::*;
use entity::{SnapshotStatus, snapshot};
use sea_orm::{DatabaseTransaction, EntityTrait, QuerySelect, Set, TransactionTrait};

use super::event_log::record_event;
use super::transitions::{self, Expected};
use crate::bus::SnapshotChange;
use crate::errors::{ApiError, ApiResult};
use crate::state::AppState;

/// Applies one event from the agent of `node`. Duplicates, events for
/// finished snapshots and events from an agent instance that no longer has
/// the job are acknowledged without effect, so the agent's retries are
/// harmless. The first event of a job also records its dispatch, in case it
/// arrived before the dispatcher could record the agent's answer.
#[tracing::instrument(skip_all, fields(snapshot_id = %event.snapshot_id, node = %node, seq = event.seq))]
pub async fn apply(state: &AppState, node: &str, event: JobEvent) -> ApiResult<()> {
    state.metrics.agent_events.inc();
    let txn = state.db.begin().await?;
    let Some(current) = Snapshot::find_by_id(event.snapshot_id)
        .lock_exclusive()
        .one(&txn)
        .await?
    else {
        return Err(ApiError::not_found("no such snapshot"));
    };
    if current.node != node {
        return Err(ApiError::forbidden("this snapshot belongs to another node"));
    }
    if (event.seq as i64) <= current.last_event_seq {
        return Ok(());
    }
    if current.status.is_terminal() {
        // Work going on for a snapshot cancelled here before its dispatch
        // was recorded (a replica died between the agent's 202 and the
        // write): the agent must stop it, before it pushes the tag.
        let working = matches!(
            event.kind,
            JobEventKind::Diffing | JobEventKind::Pushing { .. }
        );
        if working && current.status == SnapshotStatus::Cancelled {
            drop(txn);
            super::agent_calls::cancel_on_agent(state, &current).await;
        }
        return Ok(());
    }
    // A job handed back and sent to a new instance: the old one's late
    // events describe work that no longer counts.
    if current
        .agent_instance_id
        .is_some_and(|instance| instance != event.instance_id)
    {
        tracing::info!(snapshot = %event.snapshot_id, "event from a former agent instance ignored");
        return Ok(());
    }
    let now = crate::clock::now();
    let mut row: snapshot::ActiveModel = current.clone().into();
    row.last_event_seq = Set(event.seq as i64);
    row.updated_at = Set(now);
    if current.dispatched_at.is_none() {
        row.dispatched_at = Set(Some(now));
        row.agent_instance_id = Set(Some(event.instance_id));
    }
    let kind_name = match &event.kind {
        JobEventKind::Diffing => {
            row.status = Set(SnapshotStatus::Diffing);
            row.started_at = Set(Some(current.started_at.unwrap_or(now)));
            "DIFFING"
        }
        JobEventKind::Pushing {
            bytes_done,
            bytes_total,
        } => {
            row.status = Set(SnapshotStatus::Pushing);
            row.phase_bytes_done = Set(*bytes_done as i64);
            row.phase_bytes_total = Set(*bytes_total as i64);
            "PUSHING"
        }
        JobEventKind::Pushed(result) => {
            row.status = Set(SnapshotStatus::Pushed);
            row.manifest_digest = Set(Some(result.manifest_digest.clone()));
            row.config_digest = Set(Some(result.config_digest.clone()));
            row.layer_digest = Set(Some(result.layer_digest.clone()));
            row.layer_size = Set(Some(result.layer_size as i64));
            row.uncompressed_size = Set(Some(result.uncompressed_size as i64));
            row.paused_ms = Set(Some(result.paused_ms as i64));
            row.prepare_ms = Set(Some(result.prepare_ms as i64));
            row.duration_ms = Set(Some(result.duration_ms as i64));
            row.base_image = Set(Some(result.base_image.clone()));
            row.base_digest = Set(Some(result.base_digest.clone()));
            row.phase_bytes_done = Set(current.phase_bytes_total);
            row.finished_at = Set(Some(now));
            "PUSHED"
        }
        JobEventKind::Failed { code, reason, .. } => {
            row.status = Set(SnapshotStatus::Failed);
            row.failure_code = Set(Some(code_name(*code)));
            row.failure_reason = Set(Some(reason.clone()));
            row.finished_at = Set(Some(now));
            "FAILED"
        }
        JobEventKind::Cancelled { reason } => {
            row.status = Set(SnapshotStatus::Cancelled);
            row.failure_reason = Set(Some(reason.clone()));
            row.finished_at = Set(Some(now));
            "CANCELLED"
        }
        JobEventKind::HandedBack { reason } => {
            // Back in the queue: dispatched again when an agent is there.
            row.status = Set(SnapshotStatus::Queued);
            row.dispatched_at = Set(None);
            row.agent_instance_id = Set(None);
            row.next_dispatch_at = Set(Some(now));
            tracing::info!(snapshot = %event.snapshot_id, %reason, "job handed back");
            "HANDED_BACK"
        }
    };
    let Some(updated) =
        transitions::compare_and_set(&txn, current.id, Expected::unchanged(&current), row).await?
    else {
        // Changed since we read it (possible where rows are not locked):
        // the agent sends the event again and it is judged afresh.
        return Err(ApiError::unavailable(
            "the snapshot changed meanwhile; send the event again",
        ));
    };
    record_event(
        &txn,
        &updated,
        Some(event.seq as i64),
        kind_name,
        &event.kind,
    )
    .await?;
    // In the same transaction: the webhook exists iff the status does, and
    // every replica hears of the change in commit order.
    crate::webhooks::outbox::enqueue_for_snapshot(&txn, &updated).await?;
    state
        .bus
        .notify(&txn, &SnapshotChange::of(&updated))
        .await?;
    txn.commit().await?;

    state.announce(
        SnapshotChange::of(&updated),
        updated.status != current.status,
    );
    if updated.status == SnapshotStatus::Queued {
        state.dispatch_wakeup.notify_one();
    }
    Ok(())
}

/// Fails in-flight snapshots for a reason of the API's own (agent lost,
/// dispatch given up), each only if it is still as `expected` (plus not
/// terminal): a result that landed meanwhile wins, and nothing is failed
/// twice. Returns the changes to publish once the transaction commits.
pub(crate) async fn fail_snapshots(
    txn: &DatabaseTransaction,
    bus: &crate::bus::Bus,
    snapshots: Vec<snapshot::Model>,
    expected: Expected,
    code: FailureCode,
    reason: &str,
) -> ApiResult<Vec<SnapshotChange>> {
    let mut changes = Vec::new();
    let now = crate::clock::now();
    for current in snapshots {
        let id = current.id;
        let mut row: snapshot::ActiveModel = current.into();
        row.status = Set(SnapshotStatus::Failed);
        row.failure_code = Set(Some(code_name(code)));
        row.failure_reason = Set(Some(reason.to_string()));
        row.finished_at = Set(Some(now));
        row.updated_at = Set(now);
        let Some(updated) = transitions::compare_and_set(txn, id, expected.clone(), row).await?
        else {
            continue;
        };
        let payload = serde_json::json!({"code": code_name(code), "reason": reason});
        record_event(txn, &updated, None, "FAILED", &payload).await?;
        crate::webhooks::outbox::enqueue_for_snapshot(txn, &updated).await?;
        let change = SnapshotChange::of(&updated);
        bus.notify(txn, &change).await?;
        changes.push(change);
    }
    Ok(changes)
}

pub fn code_name(code: FailureCode) -> String {
    serde_json::to_value(code)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_else(|| "INTERNAL".to_string())
}
