//! The JSON bodies of webhook events: `{type, version, timestamp, data}`.
//! The shape is versioned (`version`, now 1): fields are only ever added
//! within a version. Bodies stay under 20 KB: free-text fields are cut.

use chrono::{DateTime, SecondsFormat, Utc};
use entity::snapshot;
use sea_orm::ActiveEnum as _;
use serde_json::{Value, json};

use super::EventType;

pub const VERSION: u32 = 1;
/// The failure code of a snapshot refused by the secret scan.
const SECRETS_FOUND: &str = "SECRETS_FOUND";
/// Longest free text (messages, failure reasons) in a body.
const MAX_TEXT: usize = 2_000;

fn text(value: &Option<String>) -> Value {
    match value {
        Some(s) if s.len() > MAX_TEXT => {
            let mut end = MAX_TEXT;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            json!(format!("{}…", &s[..end]))
        }
        Some(s) => json!(s),
        None => Value::Null,
    }
}

fn time(t: Option<DateTime<Utc>>) -> Value {
    t.map(|t| json!(t.to_rfc3339_opts(SecondsFormat::Millis, true)))
        .unwrap_or(Value::Null)
}

fn envelope(event_type: EventType, at: DateTime<Utc>, data: Value) -> String {
    json!({
        "type": event_type.as_str(),
        "version": VERSION,
        "timestamp": at.to_rfc3339_opts(SecondsFormat::Millis, true),
        "data": data,
    })
    .to_string()
}

/// `snapshot.pushed`, `snapshot.failed` or `snapshot.deleted` for a
/// snapshot that reached one of those statuses; `None` for other statuses.
/// `parent_image` is the parent snapshot's target.
pub fn snapshot_event(
    snapshot: &snapshot::Model,
    parent_image: Option<&str>,
) -> Option<(EventType, String)> {
    let event_type = match snapshot.status {
        entity::SnapshotStatus::Pushed => EventType::SnapshotPushed,
        entity::SnapshotStatus::Failed => EventType::SnapshotFailed,
        entity::SnapshotStatus::Deleted => EventType::SnapshotDeleted,
        _ => return None,
    };
    let mut data = json!({
        "snapshotId": snapshot.id,
        "parentSnapshotId": snapshot.parent_id,
        "parentImage": parent_image,
        "image": snapshot.target,
        "repository": snapshot.repository,
        "requestedBy": snapshot.requested_by,
        "node": snapshot.node,
        "containerId": snapshot.container_id,
        "pod": {
            "namespace": snapshot.pod_namespace,
            "name": snapshot.pod_name,
            "container": snapshot.container_name,
        },
        "baseImage": snapshot.base_image,
        "baseDigest": snapshot.base_digest,
        "message": text(&snapshot.message),
        // Counts only: a finding's path can say more than a webhook
        // receiver should learn (null: no scan report reached the API).
        "findingCount": snapshot.finding_count,
        "secretFindingCount": snapshot.secret_finding_count,
        "timings": {
            "requestedAt": time(Some(snapshot.created_at)),
            "startedAt": time(snapshot.started_at),
            "finishedAt": time(snapshot.finished_at),
            "pausedMs": snapshot.paused_ms,
            "prepareMs": snapshot.prepare_ms,
            "durationMs": snapshot.duration_ms,
        },
    });
    if event_type != EventType::SnapshotFailed {
        data["manifestDigest"] = json!(snapshot.manifest_digest);
        data["configDigest"] = json!(snapshot.config_digest);
        data["layerDigest"] = json!(snapshot.layer_digest);
        data["size"] = json!(snapshot.layer_size);
        data["uncompressedSize"] = json!(snapshot.uncompressed_size);
        // The image is its lineage base's layers plus one.
        data["flattened"] = json!(snapshot.flattened);
    }
    if event_type == EventType::SnapshotDeleted {
        data["deleted"] = json!({
            "at": time(snapshot.deleted_at),
            "by": snapshot.deleted_by,
            "manifest": snapshot.manifest_deletion.map(|m| m.to_value()),
        });
    } else if event_type == EventType::SnapshotFailed {
        // A refusal's sentence names the files that hold secrets: the
        // webhook says how many instead (the snapshot lists them).
        let reason = match (
            snapshot.failure_code.as_deref(),
            snapshot.secret_finding_count,
        ) {
            (Some(SECRETS_FOUND), Some(count)) => Some(format!(
                "{count} secret finding(s) neither acknowledged nor excluded; the snapshot's \
                 findings name them"
            )),
            (Some(SECRETS_FOUND), None) => Some(
                "secrets found and neither acknowledged nor excluded; the snapshot's findings \
                 name them"
                    .to_string(),
            ),
            _ => snapshot.failure_reason.clone(),
        };
        data["failure"] = json!({
            "code": snapshot.failure_code,
            "reason": text(&reason),
        });
    }
    Some((event_type, envelope(event_type, crate::clock::now(), data)))
}

/// The body of a test delivery.
pub fn ping(endpoint_id: uuid::Uuid, requested_by: &str) -> String {
    envelope(
        EventType::Ping,
        crate::clock::now(),
        json!({"endpointId": endpoint_id, "requestedBy": requested_by}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_stay_small_even_with_long_reasons() {
        let now = crate::clock::now();
        let model = snapshot::Model {
            pod_namespace: Some("ws".into()),
            pod_name: Some("p".into()),
            container_name: Some("d".into()),
            base_image: Some("b".into()),
            message: Some("m".repeat(50_000)),
            status: entity::SnapshotStatus::Failed,
            failure_code: Some("REGISTRY".into()),
            failure_reason: Some("x".repeat(100_000)),
            finished_at: Some(now),
            owner: Some("alice".into()),
            finding_count: Some(3),
            secret_finding_count: Some(2),
            ..crate::fixtures::snapshot()
        };
        let (kind, body) = snapshot_event(&model, None).unwrap();
        assert_eq!(kind, EventType::SnapshotFailed);
        assert!(body.len() < 20_000, "{}", body.len());
        let value: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(value["version"], 1);
        assert_eq!(value["data"]["failure"]["code"], "REGISTRY");
        assert_eq!(value["data"]["findingCount"], 3);
        assert_eq!(value["data"]["secretFindingCount"], 2);
        assert!(value["data"]["flattened"].is_null(), "{body}");

        // A refusal's reason names files; the webhook gives the count.
        let refused = snapshot::Model {
            failure_code: Some(SECRETS_FOUND.into()),
            failure_reason: Some(
                "2 secrets found and neither acknowledged nor excluded: \
                 /root/.aws/credentials: aws-credentials-file, /srv/.env:3: env-file-secret"
                    .into(),
            ),
            message: None,
            ..model
        };
        let (_, body) = snapshot_event(&refused, None).unwrap();
        assert!(!body.contains("/root") && !body.contains("/srv"), "{body}");
        let value: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(value["data"]["failure"]["code"], SECRETS_FOUND);
        assert!(
            value["data"]["failure"]["reason"]
                .as_str()
                .unwrap()
                .starts_with("2 secret finding(s)"),
            "{body}"
        );

        // A deletion says who, when and what became of the manifest, with
        // the digests of what was deleted.
        let deleted = snapshot::Model {
            status: entity::SnapshotStatus::Deleted,
            manifest_digest: Some("sha256:m".into()),
            deleted_at: Some(now),
            deleted_by: Some("retention".into()),
            manifest_deletion: Some(entity::ManifestDeletion::KeptShared),
            ..refused
        };
        let (kind, body) = snapshot_event(&deleted, None).unwrap();
        assert_eq!(kind, EventType::SnapshotDeleted);
        let value: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(value["type"], "snapshot.deleted");
        assert_eq!(value["data"]["manifestDigest"], "sha256:m");
        assert_eq!(value["data"]["deleted"]["by"], "retention");
        assert_eq!(value["data"]["deleted"]["manifest"], "KEPT_SHARED");
        assert!(value["data"]["failure"].is_null(), "{body}");
        assert_eq!(value["data"]["flattened"], false);

        // A pushed snapshot says whether its image was flattened.
        let pushed = snapshot::Model {
            status: entity::SnapshotStatus::Pushed,
            flattened: true,
            ..deleted
        };
        let (kind, body) = snapshot_event(&pushed, None).unwrap();
        assert_eq!(kind, EventType::SnapshotPushed);
        let value: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(value["data"]["flattened"], true, "{body}");
    }
}
