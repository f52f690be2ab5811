//! The snapshot's event log (`snapshot_events`): one row per step of its
//! life, written in the same transaction as the status it describes. A leaf
//! of the service, so that every part that changes a snapshot (agent events,
//! cancels, node checks) writes the log without importing each other.

use entity::{snapshot, snapshot_event};
use sea_orm::{ActiveModelTrait, ConnectionTrait, Set};

use crate::errors::ApiResult;

/// Appends one entry; `seq` is the agent's event sequence when the entry
/// comes from an agent event, `None` when the API itself decided.
pub(crate) async fn record_event<C: ConnectionTrait>(
    db: &C,
    snapshot: &snapshot::Model,
    seq: Option<i64>,
    kind: &str,
    payload: &impl serde::Serialize,
) -> ApiResult<()> {
    snapshot_event::ActiveModel {
        snapshot_id: Set(snapshot.id),
        seq: Set(seq),
        kind: Set(kind.to_string()),
        payload: Set(serde_json::to_value(payload).unwrap_or_default()),
        created_at: Set(crate::clock::now()),
        ..Default::default()
    }
    .insert(db)
    .await?;
    Ok(())
}
