//! Message bodies. Field names are camelCase on the wire.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// An agent introduces itself; sent at start-up and again whenever the API
/// does not know it (after an API restart, say).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Registration {
    pub node: String,
    /// New at every agent start: lets the API tell a restarted agent from
    /// one that only missed heartbeats.
    pub instance_id: Uuid,
    /// Where the API reaches this agent, e.g. `http://10.0.3.7:9443`.
    pub url: String,
    pub version: String,
    pub containerd_version: String,
    pub max_concurrent_jobs: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Heartbeat {
    pub node: String,
    pub instance_id: Uuid,
    /// Snapshots this agent is working on or still reporting.
    pub running_jobs: Vec<Uuid>,
}

/// The answer to a heartbeat or an inventory: `known: false` asks the agent
/// to register again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ack {
    pub known: bool,
}

/// The node's whole container list, sent when containerd reports a change
/// and periodically.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Inventory {
    pub node: String,
    pub instance_id: Uuid,
    pub containers: Vec<ContainerSummary>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerSummary {
    pub id: String,
    /// The image reference the container was created from.
    pub image: String,
    /// The digest the image record points at (manifest or index): how the
    /// API recognises a container running a snapshot's image.
    pub image_digest: Option<String>,
    /// `running`, `paused`, `stopped`, `created`, `none`, ...
    pub state: String,
    pub snapshotter: String,
    pub pod_name: Option<String>,
    pub pod_namespace: Option<String>,
    pub container_name: Option<String>,
    /// The speaker the container's pod belongs to: the `dcs.io/owner` label
    /// of the pod's sandbox as CRI records it, never the container's own
    /// labels (containerd copies image labels into those).
    #[serde(default)]
    pub owner: Option<String>,
}

/// A commit job, sent by the API to the agent of the container's node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobRequest {
    pub snapshot_id: Uuid,
    pub container_id: String,
    /// The target the API authorised, already parsed: the agent pushes
    /// exactly this.
    pub target: crate::reference::Target,
    pub compression: crate::Compression,
    pub pause: bool,
    pub excludes: Vec<String>,
    /// Dockerfile-style instructions (`CMD ["x"]`).
    pub changes: Vec<String>,
    pub message: Option<String>,
    /// The last event sequence number the API has for this snapshot: the
    /// agent numbers its events after it, so a job handed back and sent
    /// again continues the sequence instead of repeating it.
    #[serde(default)]
    pub last_event_seq: u64,
    /// Secret findings the speaker accepts for this snapshot (rule and
    /// path); any other secret the scan finds fails the job with
    /// `SECRETS_FOUND` before anything is pushed.
    #[serde(default)]
    pub acknowledged_findings: Vec<crate::findings::Acknowledgement>,
    /// The W3C `traceparent` of the API's dispatch, when the API exports
    /// traces: the agent's job span continues that trace. Absent from
    /// older APIs (and left out when there is none). Only tracing reads
    /// it, so it can never fail a job: a value that is not a string reads
    /// as absent, and one the agent cannot parse starts a new trace.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "text_or_absent"
    )]
    pub traceparent: Option<String>,
    /// Flatten onto this base: the new image is the base's layers plus one
    /// layer holding everything above them. Absent from older APIs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flatten: Option<FlattenBase>,
    /// Make exactly one new layer (no second layer for what changed while
    /// the bulk was read): the layer budget has room for one only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub single_layer: bool,
}

/// The image a flatten keeps the layers of: the first image of the
/// lineage that no snapshot made. The agent checks it against the image
/// the container runs (its layers must be that image's leading layers)
/// and never trusts it alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FlattenBase {
    /// The image reference, e.g. `registry.example/desktops/base:1`.
    pub image: String,
    /// Its manifest (or index) digest.
    pub digest: String,
}

/// A string, or `None` for any other JSON value.
fn text_or_absent<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum TextOrOther {
        Text(String),
        Other(serde::de::IgnoredAny),
    }
    Ok(match TextOrOther::deserialize(deserializer)? {
        TextOrOther::Text(text) => Some(text),
        TextOrOther::Other(_) => None,
    })
}

/// The agent's answer to a job request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobAccepted {
    pub snapshot_id: Uuid,
    /// `true` when it waits for a free slot.
    pub queued: bool,
    /// The agent instance that took the job: the API records this one, not
    /// the instance it believed it was calling (which may have restarted at
    /// the same address meanwhile).
    #[serde(default)]
    pub instance_id: Option<Uuid>,
}

/// One step of a job, reported by the agent. `seq` starts at 1 and grows by
/// one per event of the same snapshot, so the API applies each once and in
/// order, whatever the retries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobEvent {
    pub snapshot_id: Uuid,
    pub node: String,
    pub instance_id: Uuid,
    pub seq: u64,
    pub at: DateTime<Utc>,
    pub kind: JobEventKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobEventKind {
    /// The agent started reading the container's changes.
    Diffing,
    /// Bytes sent to the registry so far, of the bytes to send.
    #[serde(rename_all = "camelCase")]
    Pushing {
        bytes_done: u64,
        bytes_total: u64,
    },
    Pushed(Box<JobResult>),
    Failed {
        code: FailureCode,
        reason: String,
        /// With `SECRETS_FOUND`: the whole scan, acknowledged findings and
        /// warnings included. Absent from older agents.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        findings: Option<crate::findings::ScanReport>,
    },
    Cancelled {
        reason: String,
    },
    /// The agent is shutting down before it started the job; the API
    /// queues it again.
    HandedBack {
        reason: String,
    },
}

impl JobEventKind {
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Self::Pushed(_)
                | Self::Failed { .. }
                | Self::Cancelled { .. }
                | Self::HandedBack { .. }
        )
    }
}

/// Why a job failed, for clients that act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FailureCode {
    ContainerNotFound,
    BadRequest,
    Registry,
    RegistryAuth,
    DiskFull,
    Containerd,
    Busy,
    AgentLost,
    Internal,
    /// The scan found secrets that were neither acknowledged nor excluded;
    /// nothing was pushed.
    SecretsFound,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobResult {
    pub image: String,
    pub manifest_digest: String,
    pub config_digest: String,
    pub layer_digest: String,
    pub layer_diff_id: String,
    pub layer_size: u64,
    pub layer_media_type: String,
    pub uncompressed_size: u64,
    pub base_image: String,
    pub base_digest: String,
    /// How long the desktop was paused.
    pub paused_ms: u64,
    /// How long the change was read while the desktop ran, before the
    /// pause (0 when the commit did not pause). Absent from older agents.
    #[serde(default)]
    pub prepare_ms: u64,
    pub duration_ms: u64,
    pub method: CommitMethod,
    /// What the scan found in the pushed layer (acknowledged secrets and
    /// warnings). Empty from older agents.
    #[serde(default)]
    pub findings: crate::findings::ScanReport,
    /// Layers in the pushed image. Absent from older agents.
    #[serde(default)]
    pub layer_count: Option<u32>,
    /// Layers in the image the container ran (the leading layers of the
    /// pushed image, unless it was flattened). Absent from older agents.
    #[serde(default)]
    pub base_layer_count: Option<u32>,
    /// The image is its flatten base's layers plus one.
    #[serde(default)]
    pub flattened: bool,
}

/// How the agent read the container's changes. Lowercase with a dash on
/// the wire (`overlay`, `diff-service`), as the agent's CLI prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CommitMethod {
    /// The overlay snapshotter's upper directory, read directly.
    Overlay,
    /// containerd's Diff service (any other snapshotter, or an overlay
    /// feature the direct reader does not handle).
    DiffService,
    /// A method this version does not know (a newer agent during a rolling
    /// upgrade). The API decides nothing by the method, so a result naming
    /// one still counts: refusing it would lose a pushed snapshot.
    #[serde(other)]
    Unknown,
}

impl CommitMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Overlay => "overlay",
            Self::DiffService => "diff-service",
            Self::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for CommitMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_have_a_stable_wire_form() {
        let event = JobEvent {
            snapshot_id: Uuid::nil(),
            node: "n1".into(),
            instance_id: Uuid::nil(),
            seq: 2,
            at: DateTime::from_timestamp(0, 0).unwrap(),
            kind: JobEventKind::Pushing {
                bytes_done: 1,
                bytes_total: 2,
            },
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["kind"]["type"], "PUSHING");
        assert_eq!(json["kind"]["bytesDone"], 1);
        assert_eq!(json["seq"], 2);
        let back: JobEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
        let failed = JobEventKind::Failed {
            code: FailureCode::DiskFull,
            reason: "x".into(),
            findings: None,
        };
        let json = serde_json::to_value(&failed).unwrap();
        assert_eq!(json["code"], "DISK_FULL");
        assert!(json.get("findings").is_none());
    }

    #[test]
    fn a_refusal_carries_its_findings_and_older_peers_still_parse() {
        use crate::findings::{Finding, ScanReport, Severity};
        let report = ScanReport {
            findings: vec![Finding {
                path: "/root/.netrc".into(),
                rule: "netrc-file".into(),
                severity: Severity::Secret,
                line: None,
                size: None,
                suggested_exclude: None,
            }],
            truncated: false,
        };
        let failed = JobEventKind::Failed {
            code: FailureCode::SecretsFound,
            reason: "1 secret".into(),
            findings: Some(report.clone()),
        };
        let json = serde_json::to_value(&failed).unwrap();
        assert_eq!(json["code"], "SECRETS_FOUND");
        assert_eq!(json["findings"]["findings"][0]["rule"], "netrc-file");
        assert_eq!(
            serde_json::from_value::<JobEventKind>(json).unwrap(),
            failed
        );
        // An older agent's failure has no findings.
        let old: JobEventKind =
            serde_json::from_str(r#"{"type":"FAILED","code":"REGISTRY","reason":"x"}"#).unwrap();
        assert!(matches!(old, JobEventKind::Failed { findings: None, .. }));
        // An older API's job has no acknowledgements.
        let request: JobRequest = serde_json::from_value(serde_json::json!({
            "snapshotId": Uuid::nil(), "containerId": "c",
            "target": {"registry": "r.example", "repository": "a/b", "tag": "t"},
            "compression": "zstd", "pause": true, "excludes": [], "changes": [],
            "message": null
        }))
        .unwrap();
        assert!(request.acknowledged_findings.is_empty());
    }

    #[test]
    fn job_requests_of_older_apis_parse_and_a_missing_traceparent_is_left_out() {
        let older = serde_json::json!({
            "snapshotId": Uuid::nil(),
            "containerId": "desk",
            "target": {"registry": "r.example", "repository": "w/a", "tag": "v1"},
            "compression": "gzip",
            "pause": true,
            "excludes": [],
            "changes": [],
            "message": null,
            "lastEventSeq": 3,
        });
        let request: JobRequest = serde_json::from_value(older).unwrap();
        assert_eq!(request.traceparent, None);
        let json = serde_json::to_value(&request).unwrap();
        assert!(json.get("traceparent").is_none(), "{json}");

        let traced = JobRequest {
            traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
            ..request
        };
        let json = serde_json::to_value(&traced).unwrap();
        assert_eq!(json["traceparent"], traced.traceparent.as_deref().unwrap());
        assert_eq!(serde_json::from_value::<JobRequest>(json).unwrap(), traced);
    }

    #[test]
    fn a_traceparent_that_is_not_a_string_never_fails_a_job_request() {
        for odd in [
            serde_json::json!(null),
            serde_json::json!(42),
            serde_json::json!(["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"]),
            serde_json::json!({"traceparent": {"nested": [1, 2, {"deeper": true}]}}),
        ] {
            let body = serde_json::json!({
                "snapshotId": Uuid::nil(),
                "containerId": "desk",
                "target": {"registry": "r.example", "repository": "w/a", "tag": "v1"},
                "compression": "zstd",
                "pause": false,
                "excludes": [],
                "changes": [],
                "message": null,
                "traceparent": odd,
            });
            let request: JobRequest = serde_json::from_value(body).expect("parses");
            assert_eq!(request.traceparent, None, "{odd}");
        }
    }

    #[test]
    fn commit_methods_keep_their_wire_names() {
        for (method, text) in [
            (CommitMethod::Overlay, "overlay"),
            (CommitMethod::DiffService, "diff-service"),
        ] {
            assert_eq!(serde_json::to_value(method).unwrap(), text);
            assert_eq!(method.to_string(), text);
            assert_eq!(
                serde_json::from_value::<CommitMethod>(text.into()).unwrap(),
                method
            );
        }
    }

    #[test]
    fn an_unknown_commit_method_still_parses() {
        let method: CommitMethod = serde_json::from_value("overlayfs-v2".into()).unwrap();
        assert_eq!(method, CommitMethod::Unknown);
    }
}
