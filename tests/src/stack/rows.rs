//! Rows written straight into a test's database, for tests about reading
//! them (pages, sizes): far faster than making each through agents and
//! real containers, and able to hold what no real run makes in a test's
//! time (a 3 GiB layer). Values are the tests' own, never user input.

use super::Database;

/// A node as its agent registers it, `READY`.
pub fn insert_node(db: &Database, name: &str) {
    db.query(&format!(
        "INSERT INTO nodes (name, instance_id, url, version, containerd_version, \
         max_concurrent_jobs, registered_at, last_seen_at, state) VALUES \
         ('{name}', gen_random_uuid(), 'http://127.0.0.1:1', '0.1.0', '1.6.20', 2, now(), now(), 'READY')"
    ));
}

/// A running container of a pod in `namespace`, owned by `owner`.
pub fn insert_container(db: &Database, node: &str, id: &str, namespace: &str, owner: &str) {
    db.query(&format!(
        "INSERT INTO containers (node, id, image, image_digest, state, snapshotter, pod_name, \
         pod_namespace, container_name, updated_at, owner) VALUES ('{node}', '{id}', \
         'localhost/dcs-test/busybox:1', NULL, 'running', 'overlayfs', 'pod-{id}', \
         '{namespace}', 'desktop', now(), '{owner}')"
    ));
}

/// A webhook endpoint that is disabled, so that no worker ever sends to
/// it; its id.
pub fn insert_disabled_endpoint(db: &Database) -> String {
    db.query(
        "INSERT INTO webhook_endpoints (id, url, description, event_types, enabled, secret, \
         created_by, created_at, updated_at) VALUES (gen_random_uuid(), \
         'https://hooks.example.invalid/dcs', 'pages test', '[\"snapshot.pushed\"]', false, \
         'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'root', now(), now()) RETURNING id",
    )
}

/// A delivery that has ended (`SUCCEEDED`), created `seconds_ago`; its id.
pub fn insert_finished_delivery(db: &Database, endpoint: &str, seconds_ago: u32) -> String {
    db.query(&format!(
        "WITH id AS (SELECT gen_random_uuid() AS id) \
         INSERT INTO webhook_deliveries (id, endpoint_id, message_id, event_type, payload, status, \
         attempts, last_status_code, completed_at, created_at) \
         SELECT id, '{endpoint}', 'msg_' || replace(id::text, '-', ''), 'ping', '{{}}', \
         'SUCCEEDED', 1, 204, now(), now() - interval '{seconds_ago} seconds' FROM id RETURNING id"
    ))
}

/// Sizes and durations of a pushed snapshot.
#[derive(Debug, Clone, Copy)]
pub struct PushedSizes {
    pub layer_size: i64,
    pub uncompressed_size: i64,
    pub paused_ms: i64,
    pub prepare_ms: i64,
    pub duration_ms: i64,
    /// Bytes of the push phase, done and in all.
    pub bytes: i64,
}

/// A snapshot that `requested_by` took of their own desktop, `PUSHED`
/// with these sizes; its id.
pub fn insert_pushed_snapshot(db: &Database, requested_by: &str, sizes: PushedSizes) -> String {
    let PushedSizes {
        layer_size,
        uncompressed_size,
        paused_ms,
        prepare_ms,
        duration_ms,
        bytes,
    } = sizes;
    db.query(&format!(
        "INSERT INTO snapshots (id, requested_by, owner, node, container_id, pod_namespace, \
         pod_name, container_name, base_image, base_digest, target, repository, options, status, \
         phase_bytes_done, phase_bytes_total, manifest_digest, config_digest, layer_digest, \
         layer_size, uncompressed_size, paused_ms, prepare_ms, duration_ms, last_event_seq, \
         dispatch_attempts, created_at, updated_at, started_at, finished_at) VALUES \
         (gen_random_uuid(), '{requested_by}', '{requested_by}', 'node-1', 'desk-1', 'ws', \
         'desktop', 'desktop', 'localhost/dcs-test/busybox:1', 'sha256:{zeros}', \
         'registry.test/workshops/{requested_by}/big:v1', 'registry.test/workshops/{requested_by}/big', \
         '{{\"changes\": [], \"excludes\": [], \"compression\": \"zstd\", \"pause\": true}}', \
         'PUSHED', {bytes}, {bytes}, 'sha256:{ones}', 'sha256:{twos}', 'sha256:{threes}', \
         {layer_size}, {uncompressed_size}, {paused_ms}, {prepare_ms}, {duration_ms}, 4, 1, \
         now(), now(), now(), now()) RETURNING id",
        zeros = "0".repeat(64),
        ones = "1".repeat(64),
        twos = "2".repeat(64),
        threes = "3".repeat(64),
    ))
}
