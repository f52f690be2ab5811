-- Benchmark data of scripts/bench-api.sh: :rows snapshots (ids md5('bench' || i)) of 100
-- speakers, nine in ten built on the same speaker's previous one, and a lineage of
-- :generations generations (ids md5('chain' || k)). Finished rows only (PUSHED, one in
-- twenty FAILED), so the in-flight index does not stop new snapshots.
--   psql -v rows=99800 -v generations=200 -f fill.sql
\set ON_ERROR_STOP 1
BEGIN;
INSERT INTO snapshots (id, requested_by, owner, node, container_id, pod_namespace, pod_name,
    container_name, base_image, base_digest, parent_id, target, repository, message, options,
    status, phase_bytes_done, phase_bytes_total, manifest_digest, config_digest, layer_digest,
    layer_size, uncompressed_size, paused_ms, duration_ms, failure_code, failure_reason,
    last_event_seq, dispatch_attempts, next_dispatch_at, dispatched_at, agent_instance_id,
    created_at, updated_at, started_at, finished_at)
SELECT md5('bench' || i)::uuid,
       'speaker-' || (i % 100), 'speaker-' || (i % 100),
       'node-' || (i % 10), 'c-' || lpad((i % 1000)::text, 4, '0'), 'workshop',
       'desk-' || lpad((i % 1000)::text, 4, '0'), 'desktop',
       'registry.example/base/desktop:1', 'sha256:' || repeat('b', 64),
       CASE WHEN i % 10 <> 0 AND i > 100 THEN md5('bench' || (i - 100))::uuid END,
       'registry.example/workshops/speaker-' || (i % 100) || '/desk:v' || i,
       'registry.example/workshops/speaker-' || (i % 100) || '/desk',
       'snapshot ' || i,
       '{"changes":[],"excludes":[],"compression":"gzip","pause":true}'::json,
       CASE WHEN i % 20 = 0 THEN 'FAILED' ELSE 'PUSHED' END, 1000, 1000,
       CASE WHEN i % 20 <> 0 THEN 'sha256:' || encode(sha256(('m' || i)::bytea), 'hex') END,
       CASE WHEN i % 20 <> 0 THEN 'sha256:' || encode(sha256(('c' || i)::bytea), 'hex') END,
       CASE WHEN i % 20 <> 0 THEN 'sha256:' || encode(sha256(('l' || i)::bytea), 'hex') END,
       CASE WHEN i % 20 <> 0 THEN 123456 END, CASE WHEN i % 20 <> 0 THEN 654321 END,
       12, 2500,
       CASE WHEN i % 20 = 0 THEN 'REGISTRY' END, CASE WHEN i % 20 = 0 THEN 'registry said 500' END,
       4, 1, NULL, t, NULL,
       t, t + interval '3 seconds', t + interval '100 milliseconds', t + interval '3 seconds'
FROM (SELECT i, now() - interval '1 day' - (:rows - i) * interval '10 seconds' AS t
      FROM generate_series(1, :rows) i) g;
-- The lineage: generation k built on generation k-1.
INSERT INTO snapshots (id, requested_by, owner, node, container_id, pod_namespace, pod_name,
    container_name, base_image, base_digest, parent_id, target, repository, message, options,
    status, manifest_digest, config_digest, layer_digest, layer_size, uncompressed_size,
    paused_ms, duration_ms, last_event_seq, dispatch_attempts, dispatched_at,
    created_at, updated_at, started_at, finished_at)
SELECT md5('chain' || k)::uuid, 'speaker-0', 'speaker-0', 'node-0', 'c-lineage', 'workshop',
       'desk-lineage', 'desktop', 'registry.example/workshops/speaker-0/lineage:v' || (k - 1),
       'sha256:' || encode(sha256(('chain-m' || (k - 1))::bytea), 'hex'),
       CASE WHEN k > 1 THEN md5('chain' || (k - 1))::uuid END,
       'registry.example/workshops/speaker-0/lineage:v' || k,
       'registry.example/workshops/speaker-0/lineage', 'generation ' || k,
       '{"changes":[],"excludes":[],"compression":"gzip","pause":true}'::json, 'PUSHED',
       'sha256:' || encode(sha256(('chain-m' || k)::bytea), 'hex'),
       'sha256:' || encode(sha256(('chain-c' || k)::bytea), 'hex'),
       'sha256:' || encode(sha256(('chain-l' || k)::bytea), 'hex'),
       1000, 4000, 5, 900, 4, 1, t, t, t, t, t
FROM (SELECT k, now() - interval '400 days' + k * interval '1 hour' AS t
      FROM generate_series(1, :generations) k) g;
COMMIT;
ANALYZE;
