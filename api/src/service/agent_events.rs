//! Job events from agents: each applied once, in order, in one transaction
//! with the snapshot's new status, then published to subscribers.

use dcs_protocol::{FailureCode, JobEvent, JobEventKind, JobResult, ScanReport};
use entity::prelude::*;
use entity::{SnapshotStatus, snapshot};
use sea_orm::{DatabaseTransaction, EntityTrait, QuerySelect, Set, TransactionTrait};

use super::event_log::record_event;
use super::findings::{self, Counts};
use super::layers;
use super::transitions::{self, Expected};
use crate::bus::SnapshotChange;
use crate::errors::{ApiError, ApiResult};
use crate::state::AppState;

/// A count from an agent (u64 on the wire) as the database's BIGINT. No
/// real size or duration comes near 2^63; a value beyond is a broken or
/// hostile agent, refused with its name rather than stored wrapped.
fn stored_number(value: u64, field: &str) -> ApiResult<i64> {
    in_range(value, i64::MAX, field)
}

/// A small count from an agent (u32 on the wire, layers) as the database's
/// INTEGER: past 2^31 - 1 it is refused the same way.
fn stored_count(value: u32, field: &str) -> ApiResult<i32> {
    in_range(value.into(), i32::MAX, field)
}

fn in_range<T: TryFrom<u64> + std::fmt::Display>(value: u64, max: T, field: &str) -> ApiResult<T> {
    T::try_from(value).map_err(|_| {
        ApiError::bad_input(format!("{field} {value} is out of range (at most {max})"))
    })
}

/// The pushed image's layers as stored: the count, and how many of them
/// are the lineage base's (see [`layers::lineage_base_layers`]; a parent's
/// count is read from its row). Counts past INTEGER are refused.
async fn layer_columns(
    txn: &DatabaseTransaction,
    current: &snapshot::Model,
    result: &JobResult,
) -> ApiResult<(Option<i32>, Option<i32>)> {
    let layer_count = result
        .layer_count
        .map(|n| stored_count(n, "layerCount"))
        .transpose()?;
    let base_layer_count = result
        .base_layer_count
        .map(|n| stored_count(n, "baseLayerCount"))
        .transpose()?;
    let parent = match current.parent_id {
        // A parent row that is gone (it never is: deleted snapshots keep
        // theirs) counts as unknown.
        Some(id) => Some(
            Snapshot::find_by_id(id)
                .one(txn)
                .await?
                .and_then(|p| p.lineage_base_layers),
        ),
        None => None,
    };
    let base = layers::lineage_base_layers(result.flattened, layer_count, parent, base_layer_count);
    Ok((layer_count, base))
}

/// Applies one event from the agent of `node`. Duplicates, events for
/// finished snapshots and events from an agent instance that no longer has
/// the job are acknowledged without effect, so the agent's retries are
/// harmless. The first event of a job also records its dispatch, in case it
/// arrived before the dispatcher could record the agent's answer. Runs in
/// the caller's span (`agent_api`'s, with the snapshot id and the agent's
/// trace).
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
    let seq = stored_number(event.seq, "seq")?;
    if seq <= current.last_event_seq {
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
        // The agent pushed an image for a snapshot that ended here without
        // one (cancelled in time here, or failed as lost): the registry
        // would hold a tag no snapshot stands for. It is removed, off the
        // agent's request.
        if let JobEventKind::Pushed(result) = &event.kind
            && matches!(
                current.status,
                SnapshotStatus::Cancelled | SnapshotStatus::Failed
            )
        {
            let (state, digest) = (state.clone(), result.manifest_digest.clone());
            tokio::spawn(async move {
                super::deletion::remove_orphan(&state, &current, &digest).await;
            });
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
    row.last_event_seq = Set(seq);
    row.updated_at = Set(now);
    if current.dispatched_at.is_none() {
        row.dispatched_at = Set(Some(now));
        row.agent_instance_id = Set(Some(event.instance_id));
    }
    // The scan report a final event carries (a pushed snapshot keeps its
    // findings too), bounded before anything stores it.
    let report: Option<ScanReport> = match &event.kind {
        JobEventKind::Pushed(result) => Some(findings::bounded(result.findings.clone())),
        JobEventKind::Failed {
            findings: found, ..
        } => found.clone().map(findings::bounded),
        _ => None,
    };
    if let Some(report) = &report {
        let counts = Counts::of(report);
        row.finding_count = Set(Some(counts.findings));
        row.secret_finding_count = Set(Some(counts.secrets));
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
            row.phase_bytes_done = Set(stored_number(*bytes_done, "bytesDone")?);
            row.phase_bytes_total = Set(stored_number(*bytes_total, "bytesTotal")?);
            "PUSHING"
        }
        JobEventKind::Pushed(result) => {
            row.status = Set(SnapshotStatus::Pushed);
            row.manifest_digest = Set(Some(result.manifest_digest.clone()));
            row.config_digest = Set(Some(result.config_digest.clone()));
            row.layer_digest = Set(Some(result.layer_digest.clone()));
            row.layer_size = Set(Some(stored_number(result.layer_size, "layerSize")?));
            row.uncompressed_size = Set(Some(stored_number(
                result.uncompressed_size,
                "uncompressedSize",
            )?));
            row.paused_ms = Set(Some(stored_number(result.paused_ms, "pausedMs")?));
            row.prepare_ms = Set(Some(stored_number(result.prepare_ms, "prepareMs")?));
            row.duration_ms = Set(Some(stored_number(result.duration_ms, "durationMs")?));
            row.base_image = Set(Some(result.base_image.clone()));
            row.base_digest = Set(Some(result.base_digest.clone()));
            let (layer_count, lineage_base_layers) = layer_columns(&txn, &current, result).await?;
            row.flattened = Set(result.flattened);
            row.layer_count = Set(layer_count);
            row.lineage_base_layers = Set(lineage_base_layers);
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
    if let Some(report) = &report {
        findings::store_report(&txn, updated.id, report).await?;
    }
    record_event(
        &txn,
        &updated,
        Some(seq),
        kind_name,
        &logged(&event.kind, report.as_ref()),
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

/// The event as the log keeps it: a scan report is replaced by its counts,
/// since the report itself is on the snapshot row (once, not twice).
fn logged(kind: &JobEventKind, report: Option<&ScanReport>) -> serde_json::Value {
    let mut value = serde_json::to_value(kind).unwrap_or_default();
    if let Some(fields) = value.as_object_mut() {
        match report {
            Some(report) => {
                fields.insert("findings".into(), findings::summary(report));
            }
            None => {
                fields.remove("findings");
            }
        }
    }
    value
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_numbers_past_bigint_are_refused_by_name() {
        let three_gib = 3 * 1024 * 1024 * 1024_u64;
        assert_eq!(stored_number(three_gib, "layerSize").unwrap(), 3221225472);
        assert_eq!(stored_number(i64::MAX as u64, "x").unwrap(), i64::MAX);
        let refused = stored_number(u64::MAX, "layerSize").unwrap_err();
        assert_eq!(refused.code.as_str(), "BAD_USER_INPUT");
        assert!(
            refused
                .message
                .starts_with("layerSize 18446744073709551615 is out of range")
        );
    }
}
