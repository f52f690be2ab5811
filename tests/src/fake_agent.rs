//! Nodes whose "agent" is the test: registered with the API and reporting a
//! container list through the agent endpoints, with the shared-secret token
//! a real agent would present.

use serde_json::{Value, json};

use crate::stack::{Api, http_client};

/// Registers `node`, reachable at `url`, and reports `containers` (protocol
/// `ContainerSummary` objects).
pub async fn register_node(api: &Api, node: &str, url: &str, containers: Value) {
    let http = http_client();
    let instance = uuid::Uuid::new_v4();
    let token = api.agent_token(node);
    for (path, body) in [
        (
            "/agent/v1/register",
            json!({"node": node, "instanceId": instance, "url": url, "version": "0",
                   "containerdVersion": "0", "maxConcurrentJobs": 1}),
        ),
        (
            "/agent/v1/inventory",
            json!({"node": node, "instanceId": instance, "containers": containers}),
        ),
    ] {
        let response = http
            .post(format!("{}{path}", api.url))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .expect("POST");
        assert_eq!(response.status().as_u16(), 200, "{path}");
    }
}

/// A container of pod `<namespace>/<pod>` owned by `owner`, as an agent
/// reports it.
pub fn summary(id: &str, namespace: &str, pod: &str, owner: Option<&str>) -> Value {
    json!({"id": id, "image": crate::BUSYBOX_IMAGE, "imageDigest": null,
           "state": "running", "snapshotter": "overlayfs", "podName": pod,
           "podNamespace": namespace, "containerName": "desktop", "owner": owner})
}
