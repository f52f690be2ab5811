//! The deployment policy for the Kubernetes manifests in `deploy/`, checked
//! on the typed objects `kubectl kustomize` renders (`k8s-openapi` types;
//! an unknown kind, or a field its type does not have, is a problem):
//!
//! - no hostNetwork, hostPID or hostIPC anywhere; hostPath only for the
//!   containerd socket and root, mounted read-only, and only in the agent
//!   ([`host`]);
//! - no secret in an environment variable (`secretKeyRef`, `envFrom`
//!   secrets, or a literal value under a secret-looking name): secrets are
//!   files mounted from Secrets that `deploy/examples/secrets.yaml` shows
//!   ([`secrets`]);
//! - every container has requests and limits ([`resources`]), liveness and
//!   readiness probes, Jobs excepted ([`probes`]), drops ALL capabilities
//!   and adds back only what its workload is allowed, no privilege
//!   escalation, a read-only root file system, RuntimeDefault seccomp, and
//!   everything but the agent runs as non-root ([`security_context`]);
//!   images name a release ([`images`]);
//! - RBAC without wildcards, granting the API exactly pods get/list/watch
//!   and TokenReview create, and the agent exactly TokenReview create when
//!   it checks the API's tokens, nothing otherwise ([`rbac`]);
//! - in-cluster identity: the agents present a projected service-account
//!   token with audience `dcs-api` and the API one with audience
//!   `dcs-agent` (a dedicated audience per direction, never the API
//!   server's), each a read-only mounted `serviceAccountToken` projection
//!   with a short `expirationSeconds` ([`tokens`]); each side checks the
//!   other's tokens for that audience and service account; the agent gets
//!   no automounted token, only a projected one for the API server (its
//!   TokenReviews); the shared secret stays mounted in both as the fallback
//!   ([`identity`]); `deploy/overlays/shared-secret` is held to the
//!   shared-secret identity instead: no projected tokens, no RBAC for the
//!   agents;
//! - a NetworkPolicy lets only API pods reach the agents, on the agent
//!   port, and the paths the service needs stay open ([`network`]); only
//!   the monitoring namespace reaches the API's metrics port ([`metrics`]);
//! - the agent's and the API's own workload rules ([`agent`], [`api`]), and
//!   what the base must contain ([`inventory`]).
//!
//! Each check's module breaks the rendered manifests in the ways it must
//! catch and checks that each break is reported (its unit tests, through
//! [`violations`]), so the checks cannot rot into passing everything.
//! `tests/deploy_manifests.rs` runs the policy on `deploy/` itself.

mod agent;
mod api;
mod bundle;
mod host;
mod identity;
mod images;
mod inventory;
mod metrics;
mod mounts;
mod network;
mod parse;
mod probes;
mod rbac;
mod reachability;
pub mod render;
mod resources;
mod secrets;
mod security_context;
mod settings;
mod tokens;
#[cfg(test)]
mod violations;
mod workload;

use serde_json::Value;

pub use bundle::{Bundle, Workload, load};
pub use images::image_name;
pub use parse::Object;

pub const NAMESPACE: &str = "dcs-system";
/// The agent's DaemonSet and the API's Deployment, by name.
pub const AGENT: &str = "dcs-agent";
pub const API: &str = "dcs-api";
pub const AGENT_PORT: i32 = 9443;
pub const API_PORT: i32 = 8080;
pub const POSTGRES_PORT: i32 = 5432;
pub const CONTAINERD_SOCKET: &str = "/run/containerd/containerd.sock";
pub const CONTAINERD_ROOT: &str = "/var/lib/containerd";
/// Capabilities a workload may add back after dropping ALL, by workload
/// name: the agent reads files of any owner and mode (DAC_READ_SEARCH) and
/// the `trusted.overlay.*` xattrs that mark opaque directories (SYS_ADMIN).
/// Everything else adds nothing.
pub const ADDED_CAPABILITIES: &[(&str, &[&str])] = &[(AGENT, &["DAC_READ_SEARCH", "SYS_ADMIN"])];
/// What the API's service account may do (apiGroup, resource, verb): read
/// pods for pod-name targeting, review agents' service-account tokens.
pub const API_PERMISSIONS: &[(&str, &str, &str)] = &[
    ("", "pods", "get"),
    ("", "pods", "list"),
    ("", "pods", "watch"),
    ("authentication.k8s.io", "tokenreviews", "create"),
];
/// What the agent's service account may do when it checks the API's tokens
/// (in-cluster identity): TokenReviews, nothing else. Without in-cluster
/// identity it may do nothing.
pub const AGENT_PERMISSIONS: &[(&str, &str, &str)] =
    &[("authentication.k8s.io", "tokenreviews", "create")];
/// Audience of the tokens agents present to the API, and of those the API
/// presents to agents: one per direction, so that a token one side receives
/// is worth nothing against the other (nor against the API server).
pub const AGENT_TO_API_AUDIENCE: &str = "dcs-api";
pub const API_TO_AGENT_AUDIENCE: &str = "dcs-agent";
/// The binaries' defaults for the settings above and the service accounts.
pub const DEFAULT_AGENT_TOKEN_AUDIENCE: &str = "dcs-agent";
pub const DEFAULT_API_TOKEN_AUDIENCE: &str = "dcs-agent";
pub const DEFAULT_AGENT_SERVICE_ACCOUNT: &str = "dcs-system:dcs-agent";
pub const DEFAULT_API_SERVICE_ACCOUNT: &str = "dcs-system:dcs-api";
/// Where in-cluster Kubernetes clients look for the API server's token,
/// `ca.crt` and `namespace`.
pub const KUBE_API_ACCESS_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Projected service-account tokens live at most this long (the API
/// server's minimum is 600 s; the automounted token lives an hour or more).
pub const TOKEN_SECONDS: std::ops::RangeInclusive<i64> = 600..=3600;
/// Kubernetes ports of the API server: the `kubernetes` Service's, and the
/// usual one of the server itself (policies see it after the Service's
/// address is translated).
pub const KUBE_API_PORTS: [i32; 2] = [443, 6443];

/// How the agents and the API authenticate to each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    /// Projected service-account tokens, checked by TokenReview, in both
    /// directions (the base); the shared secret stays as the fallback.
    InCluster,
    /// Tokens signed with the shared secret only
    /// (`deploy/overlays/shared-secret`).
    SharedSecret,
}

/// The base's policy: in-cluster identity.
pub fn check(base: &[Value], examples: &[Value]) -> Vec<String> {
    check_as(base, examples, Identity::InCluster)
}

/// Every problem of the manifests `base` (with the example Secrets
/// `examples`) under the policy of `identity`.
pub fn check_as(base: &[Value], examples: &[Value], identity: Identity) -> Vec<String> {
    let mut problems = Vec::new();
    let bundle = load(base, examples, &mut problems);
    inventory::check_inventory(&bundle, &mut problems);
    for workload in &bundle.workloads {
        workload::check_workload(&bundle, workload, &mut problems);
    }
    agent::check_agent(&bundle, &mut problems);
    api::check_api(&bundle, &mut problems);
    tokens::check_projected_tokens(&bundle, &mut problems);
    identity::check_identity(&bundle, identity, &mut problems);
    rbac::check_rbac(&bundle, &mut problems);
    network::check_network(&bundle, &mut problems);
    metrics::check_metrics(&bundle, &mut problems);
    secrets::check_secrets(&bundle, &mut problems);
    problems
}

/// Fails the test with every problem, if there are any.
pub fn assert_no_problems(problems: &[String]) {
    assert!(
        problems.is_empty(),
        "the manifests in deploy/ break {} rule(s):\n  - {}",
        problems.len(),
        problems.join("\n  - ")
    );
}
