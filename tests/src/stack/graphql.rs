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

    /// Posts this exact JSON body (with `extensions`, say); the HTTP status
    /// and the answer.
    pub async fn post_graphql(&self, token: Option<&str>, body: &Value) -> (u16, Value) {
        let mut request = self.http.post(format!("{}/graphql", self.url)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        answer(request.send().await.expect("POST /graphql")).await
    }

    /// `GET /graphql?<params>` (GraphQL over GET, as Apollo clients send
    /// hashed queries); the HTTP status and the answer.
    pub async fn get_graphql(
        &self,
        token: Option<&str>,
        params: &[(&str, String)],
    ) -> (u16, Value) {
        let mut url = reqwest::Url::parse(&format!("{}/graphql", self.url)).expect("URL");
        url.query_pairs_mut().extend_pairs(params);
        let mut request = self.http.get(url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        answer(request.send().await.expect("GET /graphql")).await
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

    /// Registers a webhook endpoint for `event_types` (`SNAPSHOT_PUSHED`,
    /// ...) as `admin`; returns `createWebhookEndpoint` (`secret`,
    /// `endpoint { id enabled }`).
    pub async fn create_webhook_endpoint(
        &self,
        admin: &str,
        url: &str,
        event_types: &[&str],
    ) -> Value {
        let input = json!({"input": {"url": url, "eventTypes": event_types}});
        self.data(admin, documents::CREATE_WEBHOOK_ENDPOINT, input)
            .await["createWebhookEndpoint"]
            .clone()
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

/// The status and the JSON body of a response (a body that is not JSON is
/// a test failure, with the body).
async fn answer(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("response body");
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("not JSON ({e}), status {status}: {text:.300}"));
    (status, body)
}

fn snapshot_id(created: &Value) -> String {
    created["id"]
        .as_str()
        .unwrap_or_else(|| panic!("createSnapshot answered no id: {created}"))
        .to_string()
}
