//! Rows for unit tests: `fixtures::snapshot()` is a queued snapshot with
//! every optional column empty; a test sets what it is about with struct
//! update syntax (`snapshot::Model { status: ..., ..fixtures::snapshot() }`).

use entity::snapshot;

/// A queued snapshot of container `c` on node `n`, requested by alice, to
/// `r/x:1`; no parent, no result, no lineage.
pub(crate) fn snapshot() -> snapshot::Model {
    let now = crate::clock::now();
    snapshot::Model {
        id: uuid::Uuid::new_v4(),
        requested_by: "alice".into(),
        node: "n".into(),
        container_id: "c".into(),
        target: "r/x:1".into(),
        repository: "r/x".into(),
        options: serde_json::json!({}),
        created_at: now,
        updated_at: now,
        ..crate::service::snapshot_rows::placeholder_row(uuid::Uuid::nil())
    }
}
