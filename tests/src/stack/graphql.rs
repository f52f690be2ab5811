//! GraphQL over HTTP against an [`Api`]: queries, the snapshot operations
//! the tests share, and waiting for a state (polling, bounded by a timeout).

use std::time::Duration;

use serde_json::{Value, json};

use super::Api;
use super::documents;
use super::page_nodes;

impl Api {
    /// Posts a GraphQL request; returns the whole response body.
    pub async fn graphql(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let mut request = self
            .http
            .post(format!("{}/graphql", self.url))
            .json(&json!({"query": query, "variables": variables}));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("POST /graphql");
        response.json().await.expect("GraphQL JSON")
    }

    /// Like `graphql`, failing the test on any GraphQL error; returns `data`.
    pub async fn data(&self, token: &str, query: &str, variables: Value) -> Value {
        let body = self.graphql(Some(token), query, variables).await;
        assert!(
            body["errors"].is_null(),
            "GraphQL errors: {body}\nAPI log:\n{}",
            self.log_tail()
        );
        body["data"].clone()
    }

    /// `createSnapshot` of `container` to `target` (gzip); the new id. The
    /// snapshot must be accepted (`QUEUED`).
    pub async fn create_snapshot(&self, token: &str, container: &str, target: &str) -> String {
        let input = json!({"containerId": container, "target": target, "compression": "GZIP"});
        let created = self.create_snapshot_answer(token, input).await;
        assert_eq!(created["status"], "QUEUED", "{created}");
        snapshot_id(&created)
    }

    /// `createSnapshot` with this whole input (by pod, with changes, ...),
    /// failing the test on a GraphQL error; the new id.
    pub async fn create_snapshot_with(&self, token: &str, input: Value) -> String {
        snapshot_id(&self.create_snapshot_answer(token, input).await)
    }

    /// `createSnapshot`'s answer (`id`, `status`).
    async fn create_snapshot_answer(&self, token: &str, input: Value) -> Value {
        self.data(token, documents::CREATE, json!({ "input": input }))
            .await["createSnapshot"]
            .clone()
    }

    /// The snapshot as `documents::SNAPSHOT` shows it to `token`'s caller.
    pub async fn snapshot(&self, token: &str, id: &str) -> Value {
        self.data(token, documents::SNAPSHOT, json!({"id": id}))
            .await["snapshot"]
            .clone()
    }

    /// Waits until the snapshot's status is one of `statuses`; returns it.
    pub async fn wait_for_status(
        &self,
        token: &str,
        id: &str,
        statuses: &[&str],
        timeout: Duration,
    ) -> Value {
        let statuses: Vec<String> = statuses.iter().map(|s| s.to_string()).collect();
        self.wait_for(
            token,
            documents::SNAPSHOT,
            json!({"id": id}),
            timeout,
            move |d| {
                d["snapshot"]["status"]
                    .as_str()
                    .is_some_and(|s| statuses.iter().any(|w| w == s))
            },
        )
        .await["snapshot"]
            .clone()
    }

    /// Waits until the snapshot has ended (`PUSHED`, `FAILED` or
    /// `CANCELLED`); returns it.
    pub async fn wait_for_end(&self, token: &str, id: &str, timeout: Duration) -> Value {
        self.wait_for_status(token, id, &["PUSHED", "FAILED", "CANCELLED"], timeout)
            .await
    }

    /// Waits until `token`'s caller sees container `id` running; returns it
    /// as the `containers` query shows it.
    pub async fn wait_for_running_container(&self, token: &str, id: &str) -> Value {
        let wait = Duration::from_secs(90);
        let data = self
            .wait_for(token, documents::CONTAINERS, json!({}), wait, |d| {
                page_nodes(&d["containers"])
                    .iter()
                    .any(|c| c["id"] == id && c["state"] == "running")
            })
            .await;
        page_nodes(&data["containers"])
            .into_iter()
            .find(|c| c["id"] == id)
            .unwrap_or_default()
    }

    /// Waits until `check` holds on a query's data, or fails the test.
    pub async fn wait_for(
        &self,
        token: &str,
        query: &str,
        variables: Value,
        timeout: Duration,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        crate::poll(
            timeout,
            Duration::from_millis(200),
            async || {
                let data = self.data(token, query, variables.clone()).await;
                if check(&data) { Ok(data) } else { Err(data) }
            },
            |data| format!("last data: {data}\nAPI log:\n{}", self.log_tail()),
        )
        .await
    }
}

fn snapshot_id(created: &Value) -> String {
    created["id"]
        .as_str()
        .unwrap_or_else(|| panic!("createSnapshot answered no id: {created}"))
        .to_string()
}
