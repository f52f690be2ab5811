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
        pod_namespace: None,
        pod_name: None,
        container_name: None,
        base_image: None,
        base_digest: None,
        parent_id: None,
        target: "r/x:1".into(),
        repository: "r/x".into(),
        message: None,
        options: serde_json::json!({}),
        status: entity::SnapshotStatus::Queued,
        phase_bytes_done: 0,
        phase_bytes_total: 0,
        manifest_digest: None,
        config_digest: None,
        layer_digest: None,
        layer_size: None,
        uncompressed_size: None,
        paused_ms: None,
        prepare_ms: None,
        duration_ms: None,
        failure_code: None,
        failure_reason: None,
        last_event_seq: 0,
        dispatch_attempts: 0,
        next_dispatch_at: None,
        dispatched_at: None,
        agent_instance_id: None,
        created_at: now,
        updated_at: now,
        started_at: None,
        finished_at: None,
        owner: None,
        trace_parent: None,
        finding_count: None,
        secret_finding_count: None,
        deleted_at: None,
        deleted_by: None,
        manifest_deletion: None,
        flattened: false,
        layer_count: None,
        lineage_base_image: None,
        lineage_base_digest: None,
        lineage_base_layers: None,
    }
}
