//! An agent that refuses a job (any 4xx) has read it and will refuse it
//! again: the snapshot fails at once with the agent's reason, and the job is
//! sent exactly once. The "agent" is an HTTP server in the test answering
//! each container's job with its own status; the API is the real one on
//! Postgres.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use e2e_tests::fake_agent::{register_node, summary};
use e2e_tests::stack::{Api, ApiOptions, Database};
use serde_json::{Value, json};

const REGISTRY: &str = "127.0.0.1:5999";

/// `c-<status>` is answered with that status; the body names the status.
async fn refuse(State(sent): State<Arc<Mutex<Vec<String>>>>, body: Bytes) -> Response {
    let job: Value = serde_json::from_slice(&body).unwrap_or_default();
    let container = job["containerId"].as_str().unwrap_or_default().to_string();
    sent.lock().unwrap().push(container.clone());
    let status = container
        .strip_prefix("c-")
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status == StatusCode::GONE {
        // Not JSON: the reason falls back to the body's text.
        return (status, "plain words\u{7}").into_response();
    }
    let message = format!("refused with {}", status.as_u16());
    (
        status,
        axum::Json(json!({"code": "BAD_USER_INPUT", "message": message})),
    )
        .into_response()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_4xx_from_the_agent_fails_the_snapshot_with_its_reason() {
    let db = Database::fresh();
    let api = Api::start(ApiOptions::postgres(&db, REGISTRY, 60)).await;
    let sent = Arc::new(Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let router = Router::new().fallback(refuse).with_state(sent.clone());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });

    let statuses = [400u16, 404, 409, 410, 413, 422];
    let containers: Vec<Value> = statuses
        .iter()
        .map(|s| {
            summary(
                &format!("c-{s}"),
                "workshop",
                &format!("p-{s}"),
                Some("alice"),
            )
        })
        .collect();
    register_node(&api, "node-refusing", &url, json!(containers)).await;
    let alice = api.token("alice", "speaker", &["workshop"]);

    for status in statuses {
        let container = format!("c-{status}");
        let target = format!("{REGISTRY}/workshops/alice/r{status}:v1");
        let id = api
            .create_snapshot_with(&alice, json!({"containerId": container, "target": target}))
            .await;
        let snapshot = api
            .wait_for_status(&alice, &id, &["FAILED"], Duration::from_secs(30))
            .await;
        assert_eq!(
            snapshot["failureCode"], "BAD_REQUEST",
            "{status}: {snapshot}"
        );
        let reason = snapshot["failureReason"].as_str().unwrap_or_default();
        let expected = if status == 410 {
            "the agent refused the job: plain words".to_string()
        } else {
            format!("the agent refused the job: refused with {status}")
        };
        assert_eq!(reason, expected, "{status}: {snapshot}");
    }
    // Each job went out once: a refusal is not retried.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut sent = sent.lock().unwrap().clone();
    sent.sort();
    let mut expected: Vec<String> = statuses.iter().map(|s| format!("c-{s}")).collect();
    expected.sort();
    assert_eq!(sent, expected);
    server.abort();
}
