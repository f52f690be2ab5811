//! Nodes whose "agent" is the test: registered with the API and reporting a
//! container list through the agent endpoints, with the shared-secret token
//! a real agent would present.

use serde_json::{Value, json};

use crate::stack::{Api, free_port, http_client};

/// The body of an agent's registration: `node`, this run of its agent
/// (`instance`), where the API reaches it (`url`).
pub fn registration(node: &str, instance: uuid::Uuid, url: &str) -> Value {
    json!({"node": node, "instanceId": instance, "url": url, "version": "0",
           "containerdVersion": "0", "maxConcurrentJobs": 1})
}

/// Registers `node`, reachable at `url`, and reports `containers` (protocol
/// `ContainerSummary` objects).
pub async fn register_node(api: &Api, node: &str, url: &str, containers: Value) {
    let http = http_client();
    let instance = uuid::Uuid::new_v4();
    let token = api.agent_token(node);
    for (path, body) in [
        ("/agent/v1/register", registration(node, instance, url)),
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

/// Registers a node whose agent is nowhere (its URL refuses connections)
/// and reports its containers, as an agent would: for policy checks that
/// must refuse before anything is dispatched.
pub async fn register_unreachable_node(api: &Api, node: &str, containers: Value) {
    let dead = format!("http://127.0.0.1:{}", free_port());
    register_node(api, node, &dead, containers).await;
}

/// A container of pod `<namespace>/<pod>` owned by `owner`, as an agent
/// reports it.
pub fn summary(id: &str, namespace: &str, pod: &str, owner: Option<&str>) -> Value {
    json!({"id": id, "image": crate::BUSYBOX_IMAGE, "imageDigest": null,
           "state": "running", "snapshotter": "overlayfs", "podName": pod,
           "podNamespace": namespace, "containerName": "desktop", "owner": owner})
}
