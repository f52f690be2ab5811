//! What the API server and the node agents say to each other.
//!
//! Both directions are authenticated with short-lived tokens signed with a
//! shared secret (`token`); the bodies are the JSON types below (`messages`).

pub mod changes;
pub mod compression;
pub mod excludes;
pub mod findings;
pub mod messages;
pub mod reference;
pub mod token;

pub use compression::Compression;
pub use findings::{
    Acknowledgement, ExcludedBy, Finding, PathSize, Preview, PreviewRequest, ScanReport, Severity,
};
pub use messages::*;

/// Labels the API and the agents agree on.
pub mod labels {
    /// On a pod (its sandbox container, outside Kubernetes): the `sub` of
    /// the speaker the pod belongs to.
    pub const OWNER: &str = "dcs.io/owner";
    /// CRI labels kubelet sets on every container and sandbox.
    pub const POD_NAME: &str = "io.kubernetes.pod.name";
    pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
    pub const POD_UID: &str = "io.kubernetes.pod.uid";
    pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
    /// CRI's `sandbox` or `container`; CRI sets it last, so an image label
    /// cannot forge it.
    pub const CRI_KIND: &str = "io.cri-containerd.kind";
    pub const CRI_KIND_SANDBOX: &str = "sandbox";
}

/// HTTP paths of the API that agents call.
pub mod api_paths {
    pub const REGISTER: &str = "/agent/v1/register";
    pub const HEARTBEAT: &str = "/agent/v1/heartbeat";
    pub const INVENTORY: &str = "/agent/v1/inventory";
    /// `JobEvent` posts; each may carry the W3C `traceparent` header of
    /// the agent's span that sent it, which the API's span continues.
    pub const EVENTS: &str = "/agent/v1/events";
}

/// HTTP paths of an agent that the API calls.
pub mod agent_paths {
    pub const JOBS: &str = "/v1/jobs";
    /// `POST` a `PreviewRequest`, answered with a `Preview`; refusals are
    /// JSON `{code, message}`: 400 `BAD_USER_INPUT`, 404 `NOT_FOUND`, 413
    /// `PAYLOAD_TOO_LARGE`, 422 `UNSUPPORTED_SNAPSHOTTER` (not on the
    /// overlay snapshotter), 429 `RATE_LIMITED` (two already run), 503
    /// `UNAVAILABLE` (shutting down).
    pub const PREVIEW: &str = "/v1/preview";
    pub const HEALTHZ: &str = "/healthz";
    pub const READYZ: &str = "/readyz";
    pub const METRICS: &str = "/metrics";
}
