//! Deleting a pushed snapshot (`deleteSnapshot`, and retention): its
//! manifest leaves the registry, its row becomes `DELETED` and stays (so
//! children keep their parent and `snapshot(id)` still answers), and a
//! `snapshot.deleted` webhook goes out.
//!
//! The registry is asked first, the row written after: if the API stops in
//! between, the row is still `PUSHED` and deleting it again finds the
//! manifest absent and finishes. Two deletes of one snapshot (two replicas,
//! a speaker and retention) both may ask the registry; only one writes the
//! row ([`transitions::mark_deleted`]), so one event and one webhook.

use dcs_protocol::reference;
use entity::prelude::*;
use entity::{ManifestDeletion, SnapshotStatus, snapshot};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, Set, TransactionTrait};

use super::event_log::record_event;
use super::snapshots::get;
use super::transitions;
use crate::auth::Principal;
use crate::bus::SnapshotChange;
use crate::errors::{ApiError, ApiResult, Code};
use crate::registry::{DeleteOutcome, RegistryError};
use crate::state::AppState;

/// Deletes a snapshot the caller may delete: their own, or any for admins.
#[tracing::instrument(skip_all, fields(who = %who.sub, snapshot_id = %id))]
pub async fn delete(
    state: &AppState,
    who: &Principal,
    id: uuid::Uuid,
) -> ApiResult<snapshot::Model> {
    let current = get(state, who, id).await?;
    // Seen but not deletable: a desktop owner's view of someone else's snapshot.
    if !state.policy.may_delete_snapshot(who, (&current).into()) {
        return Err(ApiError::forbidden(
            "only its requester or an admin may delete a snapshot",
        ));
    }
    let result = delete_pushed(state, &current, &who.sub).await;
    let outcome = match &result {
        Ok(_) => "deleted",
        Err(_) => "refused",
    };
    let detail = match &result {
        Ok(deleted) => serde_json::json!({"manifest": manifest_text(deleted)}),
        Err(e) => serde_json::json!({"code": e.code.as_str(), "reason": e.message}),
    };
    super::audit::record(
        &state.db,
        who,
        "deleteSnapshot",
        "snapshot",
        Some(id.to_string()),
        outcome,
        detail,
    )
    .await;
    result
}

/// What deleting did to the manifest, as stored (`DELETED`, `KEPT_SHARED`, ...).
pub fn manifest_text(snapshot: &snapshot::Model) -> Option<String> {
    use sea_orm::ActiveEnum as _;
    snapshot.manifest_deletion.map(|m| m.to_value())
}

/// Deletes `current`, which must be `PUSHED`; `by` is who asked (a `sub`,
/// or `retention`). Shared by `deleteSnapshot` and retention.
pub async fn delete_pushed(
    state: &AppState,
    current: &snapshot::Model,
    by: &str,
) -> ApiResult<snapshot::Model> {
    match current.status {
        SnapshotStatus::Pushed => {}
        SnapshotStatus::Deleted => {
            return Err(ApiError::conflict("the snapshot is already deleted"));
        }
        other => {
            return Err(ApiError::conflict(format!(
                "only a PUSHED snapshot can be deleted; this one is {}",
                other.as_str()
            )));
        }
    }
    let digest = current
        .manifest_digest
        .as_deref()
        .ok_or_else(|| ApiError::internal("deleting a snapshot", &"PUSHED without a digest"))?;
    let manifest = if shares_manifest(state, current, digest).await? {
        ManifestDeletion::KeptShared
    } else {
        let target = reference::parse_target(&current.target)
            .map_err(|e| ApiError::internal("deleting a snapshot", &e))?;
        match state.registries.delete_manifest(&target, digest).await {
            Ok(DeleteOutcome::Deleted) => ManifestDeletion::Deleted,
            Ok(DeleteOutcome::Absent) => ManifestDeletion::Absent,
            Ok(DeleteOutcome::Unsupported) => ManifestDeletion::KeptUnsupported,
            Err(e) => return Err(registry_error(e)),
        }
    };

    let now = crate::clock::now();
    let change = snapshot::ActiveModel {
        status: Set(SnapshotStatus::Deleted),
        deleted_at: Set(Some(now)),
        deleted_by: Set(Some(by.to_string())),
        manifest_deletion: Set(Some(manifest)),
        updated_at: Set(now),
        ..Default::default()
    };
    let txn = state.db.begin().await?;
    let Some(deleted) = transitions::mark_deleted(&txn, current.id, change).await? else {
        return Err(ApiError::conflict(
            "the snapshot was deleted meanwhile (by another request or by retention)",
        ));
    };
    let payload = serde_json::json!({"by": by, "manifest": manifest_text(&deleted)});
    record_event(&txn, &deleted, None, "DELETED", &payload).await?;
    crate::webhooks::outbox::enqueue_for_snapshot(&txn, &deleted).await?;
    let announced = SnapshotChange::of(&deleted);
    state.bus.notify(&txn, &announced).await?;
    txn.commit().await?;
    state.announce(announced, true);
    tracing::info!(
        snapshot_id = %deleted.id,
        by,
        manifest = ?manifest,
        "snapshot deleted"
    );
    Ok(deleted)
}

/// Who removes orphan images, in the audit log.
const ORPHAN_ACTOR: &str = "dcs-api";

/// Removes the image an agent pushed for `snapshot` although it ended
/// without one (`CANCELLED` or `FAILED`), so the registry holds no tag the
/// service does not stand for. Best effort: a failure is logged and
/// audited; the snapshot's row does not change either way.
pub async fn remove_orphan(state: &AppState, snapshot: &snapshot::Model, digest: &str) {
    let outcome = match orphan_outcome(state, snapshot, digest).await {
        Ok(manifest) => serde_json::json!({"manifest": manifest, "digest": digest}),
        Err(e) => {
            serde_json::json!({"code": e.code.as_str(), "reason": e.message, "digest": digest})
        }
    };
    tracing::info!(snapshot_id = %snapshot.id, status = snapshot.status.as_str(), %outcome, "image pushed for a snapshot that ended without one");
    super::audit::record_system(
        &state.db,
        ORPHAN_ACTOR,
        "removeOrphanImage",
        "snapshot",
        Some(snapshot.id.to_string()),
        if outcome.get("code").is_some() {
            "failed"
        } else {
            "removed"
        },
        outcome,
    )
    .await;
}

async fn orphan_outcome(
    state: &AppState,
    snapshot: &snapshot::Model,
    digest: &str,
) -> ApiResult<&'static str> {
    if shares_manifest(state, snapshot, digest).await? {
        return Ok("KEPT_SHARED");
    }
    let target = reference::parse_target(&snapshot.target)
        .map_err(|e| ApiError::internal("removing an orphan image", &e))?;
    match state.registries.delete_manifest(&target, digest).await {
        Ok(DeleteOutcome::Deleted) => Ok("DELETED"),
        Ok(DeleteOutcome::Absent) => Ok("ABSENT"),
        Ok(DeleteOutcome::Unsupported) => Ok("KEPT_UNSUPPORTED"),
        Err(e) => Err(registry_error(e)),
    }
}

/// Does another live snapshot of the same repository have this manifest?
/// A registry deletes by digest, which would take that one's tag too.
async fn shares_manifest(
    state: &AppState,
    current: &snapshot::Model,
    digest: &str,
) -> ApiResult<bool> {
    let others = Snapshot::find()
        .filter(snapshot::Column::Repository.eq(current.repository.clone()))
        .filter(snapshot::Column::ManifestDigest.eq(digest))
        .filter(snapshot::Column::Status.eq(SnapshotStatus::Pushed))
        .filter(snapshot::Column::Id.ne(current.id))
        .count(&state.db)
        .await?;
    Ok(others > 0)
}

fn registry_error(error: RegistryError) -> ApiError {
    match error {
        RegistryError::Unreachable { .. } => ApiError::unavailable(error.to_string()),
        RegistryError::Unauthorized { .. } | RegistryError::Refused { .. } => {
            ApiError::new(Code::RegistryRefused, error.to_string())
        }
        // The file's path and state are the operator's business.
        RegistryError::Credentials(e) => ApiError::internal("reading registry credentials", &e),
    }
}
