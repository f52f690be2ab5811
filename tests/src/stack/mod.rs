//! The whole service as real processes: `dcs-api` on Postgres (a fresh
//! database per test) or on its SQLite default, and `dcs-agent serve`
//! against the test containerd. One way to start each part, a builder:
//! `Api::builder(options)`, `Agent::builder(env, api, node, namespace)`
//! (`Api::start`, `Agent::start` when the defaults do), and the whole of it
//! for one speaker, `Workshop::builder(name)`.

mod agent;
mod answers;
mod api;
mod database;
pub mod documents;
mod graphql;
pub mod jwt;
mod observe;
pub mod persisted;
mod process;
mod registry;
pub mod rows;
mod websocket;
mod workshop;

pub use agent::{Agent, AgentBuilder};
pub use answers::{error_code, int64, page_list, page_nodes, sorted_ids};
pub use api::{Api, ApiBuilder, ApiOptions};
pub use database::Database;
pub use observe::{
    assert_nothing_pushed, metric_value, registry_digest, repository_dir, skopeo_inspect,
    task_status,
};
pub use registry::{Registry, manifest_status};
pub use websocket::{Subscription, WsOutcome};
pub use workshop::{Workshop, WorkshopBuilder};

/// An HTTP client; ring is the one TLS provider of the workspace.
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// A free loopback port (bound, then released for the child to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// `GET <url>/metrics` (Prometheus text), with a bearer token if the
/// endpoint wants one; fails the test unless it answers 2xx.
async fn fetch_metrics(http: &reqwest::Client, url: &str, token: Option<&str>) -> String {
    let mut request = http.get(format!("{url}/metrics"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("GET /metrics");
    assert!(
        response.status().is_success(),
        "GET {url}/metrics: {}",
        response.status()
    );
    response.text().await.expect("metrics text")
}
