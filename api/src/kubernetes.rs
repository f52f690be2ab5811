//! What the API asks the Kubernetes API server: where a pod runs and which
//! containerd container is its container (pod-name targeting), and who
//! presents a service-account token (TokenReview, for agents).

use dcs_support::token_review::{self, TokenReviewer};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;

use crate::errors::{ApiError, ApiResult};

/// The pod label naming the speaker a pod belongs to.
pub const OWNER_LABEL: &str = dcs_protocol::labels::OWNER;
const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";
const NODE_NAME_EXTRA: &str = "authentication.kubernetes.io/node-name";

/// A pod's container, resolved to what the agents know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedContainer {
    pub node: String,
    /// The containerd container id (`containerd://<id>` in the pod status).
    pub container_id: String,
    pub container_name: String,
    pub owner: Option<String>,
}

pub struct Kubernetes {
    client: kube::Client,
    /// Reviews the agents' projected tokens (their audience, their service
    /// account); remembers the node of each reviewed token.
    agents: TokenReviewer<String>,
}

impl std::fmt::Debug for Kubernetes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `kube::Client` has no Debug.
        f.debug_struct("Kubernetes")
            .field("agents", &self.agents)
            .finish_non_exhaustive()
    }
}

impl Kubernetes {
    /// In a cluster: the pod's service account. `api_url`: a plain HTTP
    /// API server without authentication (tests' fake).
    pub async fn connect(
        api_url: Option<&str>,
        agent_audience: &str,
        agent_service_account: &str,
    ) -> anyhow::Result<Self> {
        let client = token_review::client(api_url).await?;
        let agents = TokenReviewer::new(client.clone(), agent_audience, agent_service_account)
            .ok_or_else(|| anyhow::anyhow!("--agent-service-account must be <namespace>:<name>"))?;
        Ok(Self { client, agents })
    }

    /// A pod by namespace and name; `None` when there is no such pod.
    /// Callers authorise with [`pod_owner`] before [`resolve_pod`] says
    /// anything about the pod's state, so that a pod that is not the
    /// caller's reads exactly like one that does not exist.
    pub async fn pod(&self, namespace: &str, pod_name: &str) -> ApiResult<Option<Pod>> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        pods.get_opt(pod_name).await.map_err(unavailable)
    }

    /// The node of the agent presenting `token`, a projected
    /// service-account token for the agents' audience; `None` when the
    /// token is not one.
    pub async fn agent_node(&self, token: &str) -> ApiResult<Option<String>> {
        if let Some(node) = self.agents.cached(token) {
            return Ok(Some(node));
        }
        let Some(user) = self.agents.review(token).await.map_err(unavailable)? else {
            return Ok(None);
        };
        let extra = user.extra.unwrap_or_default();
        let first = |key: &str| extra.get(key).and_then(|v| v.first()).cloned();
        // Newer clusters put the node in the token; otherwise ask the pod.
        let node = match (first(NODE_NAME_EXTRA), first(POD_NAME_EXTRA)) {
            (Some(node), _) => node,
            (None, Some(pod)) => {
                let pods: Api<Pod> = Api::namespaced(self.client.clone(), self.agents.namespace());
                match pods.get_opt(&pod).await.map_err(unavailable)? {
                    Some(p) => match p.spec.and_then(|s| s.node_name) {
                        Some(node) => node,
                        None => return Ok(None),
                    },
                    None => return Ok(None),
                }
            }
            (None, None) => return Ok(None),
        };
        self.agents.remember(token, node.clone());
        Ok(Some(node))
    }
}

fn unavailable(error: kube::Error) -> ApiError {
    tracing::warn!(error = %error, "Kubernetes API call failed");
    ApiError::unavailable("the Kubernetes API server did not answer")
}

/// The speaker a pod belongs to: its `dcs.io/owner` label.
pub fn pod_owner(pod: &Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(OWNER_LABEL))
        .map(String::as_str)
}

/// The node and containerd id of a pod's container; the pod must be
/// running and the container started. `container` may be omitted when the
/// pod has one container.
pub fn resolve_pod(pod: &Pod, container: Option<&str>) -> ApiResult<ResolvedContainer> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let spec = pod
        .spec
        .as_ref()
        .ok_or_else(|| ApiError::conflict(format!("pod {name} has no spec")))?;
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.clone()).unwrap_or_default();
    if phase != "Running" {
        return Err(ApiError::conflict(format!(
            "pod {name} is not running (phase {})",
            if phase.is_empty() { "unknown" } else { &phase }
        )));
    }
    let container_name = match container {
        Some(c) => {
            if !spec.containers.iter().any(|x| x.name == c) {
                return Err(ApiError::not_found(format!(
                    "pod {name} has no container {c}"
                )));
            }
            c.to_string()
        }
        None => match spec.containers.as_slice() {
            [only] => only.name.clone(),
            _ => {
                return Err(ApiError::bad_input(format!(
                    "pod {name} has several containers; name one with containerName"
                )));
            }
        },
    };
    let node = spec
        .node_name
        .clone()
        .ok_or_else(|| ApiError::conflict(format!("pod {name} is not scheduled on a node")))?;
    let container_status = status
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|list| list.iter().find(|s| s.name == container_name));
    let container_id = container_status
        .and_then(|s| s.container_id.as_deref())
        .and_then(|id| id.strip_prefix("containerd://"))
        .ok_or_else(|| {
            ApiError::conflict(format!(
                "container {container_name} of pod {name} has not started (or does not run on containerd)"
            ))
        })?;
    Ok(ResolvedContainer {
        node,
        container_id: container_id.to_string(),
        container_name,
        owner: pod_owner(pod).map(String::from),
    })
}
