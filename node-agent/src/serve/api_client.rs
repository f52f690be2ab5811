//! Calls from the agent to the API, each with a fresh signed token.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use dcs_protocol::token::{AGENT_ISSUER, API_AUDIENCE, SharedSecret};
use dcs_protocol::{
    Ack, ContainerSummary, Heartbeat, Inventory, JobEvent, Registration, api_paths,
};
use dcs_support::trace_context;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::inventory;
use super::jobs::Jobs;

/// (Debug: the shared secret prints redacted.)
#[derive(Clone, Debug)]
pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    secret: SharedSecret,
    node: String,
    instance_id: Uuid,
    service_account_token_file: Option<std::path::PathBuf>,
    /// The API's clock minus ours, in seconds, from its `Date` headers:
    /// tokens are signed in the API's time, so a node whose clock is off
    /// by minutes still gets its results through.
    clock_offset: Arc<AtomicI64>,
}

/// How the API answered a report.
#[derive(Debug)]
pub enum Delivery {
    Delivered,
    /// The API refused it for good (4xx): retrying would not help.
    Refused(String),
    /// Not delivered now (network, 5xx): try again.
    Retry(String),
}

impl ApiClient {
    pub fn new(
        base: &str,
        secret: SharedSecret,
        node: &str,
        instance_id: Uuid,
        service_account_token_file: Option<std::path::PathBuf>,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            secret,
            node: node.to_string(),
            instance_id,
            service_account_token_file,
            clock_offset: Arc::new(AtomicI64::new(0)),
        })
    }

    /// The bearer token of a call: the projected service-account token in
    /// a cluster, else one signed with the shared secret.
    fn token(&self) -> String {
        if let Some(path) = &self.service_account_token_file {
            match std::fs::read_to_string(path) {
                Ok(token) => return token.trim().to_string(),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot read the service-account token; using the shared secret");
                }
            }
        }
        let now = chrono::Utc::now().timestamp() + self.clock_offset.load(Ordering::Relaxed);
        self.secret
            .sign_at(AGENT_ISSUER, API_AUDIENCE, &self.node, now)
    }

    /// Learns the API's clock from a response's `Date` header. Offsets of a
    /// second or two are noise of the header's resolution and are ignored.
    fn learn_clock(&self, response: &reqwest::Response) {
        let Some(date) = response
            .headers()
            .get(reqwest::header::DATE)
            .and_then(|d| d.to_str().ok())
            .and_then(|d| chrono::DateTime::parse_from_rfc2822(d).ok())
        else {
            return;
        };
        let offset = date.timestamp() - chrono::Utc::now().timestamp();
        let previous = self.clock_offset.load(Ordering::Relaxed);
        if (offset - previous).abs() > 2 {
            tracing::warn!(
                offset_seconds = offset,
                "this node's clock differs from the API's; signing tokens in the API's time"
            );
            self.clock_offset.store(offset, Ordering::Relaxed);
        }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn instance_id(&self) -> Uuid {
        self.instance_id
    }

    /// Posts `body`; with the caller's span's `traceparent` when traces are
    /// exported, so the API's span for it continues the trace.
    async fn post<T: serde::Serialize>(&self, path: &str, body: &T) -> Delivery {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(self.token())
            .json(body);
        if let Some(traceparent) = trace_context::current_traceparent() {
            request = request.header(trace_context::TRACEPARENT, traceparent);
        }
        let response = request.send().await;
        if let Ok(r) = &response {
            self.learn_clock(r);
        }
        match response {
            Ok(r) if r.status().is_success() => Delivery::Delivered,
            // Not a verdict on the message: the token was refused (clock
            // skew, a secret being rotated); it is signed again next time.
            Ok(r) if r.status() == reqwest::StatusCode::UNAUTHORIZED => {
                Delivery::Retry("HTTP 401 (token refused)".to_string())
            }
            Ok(r) if r.status().is_client_error() && r.status().as_u16() != 429 => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                Delivery::Refused(format!("{status}: {}", truncate(&text)))
            }
            Ok(r) => Delivery::Retry(format!("HTTP {}", r.status())),
            Err(e) => Delivery::Retry(dcs_support::describe_chain(&e)),
        }
    }

    async fn post_for_ack<T: serde::Serialize>(&self, path: &str, body: &T) -> Result<Ack, String> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(self.token())
            .json(body)
            .send()
            .await
            .map_err(|e| dcs_support::describe_chain(&e))?;
        self.learn_clock(&response);
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()));
        }
        response
            .json::<Ack>()
            .await
            .map_err(|e| format!("bad answer: {e}"))
    }

    pub async fn register(&self, registration: &Registration) -> Result<(), String> {
        match self.post(api_paths::REGISTER, registration).await {
            Delivery::Delivered => Ok(()),
            Delivery::Refused(e) | Delivery::Retry(e) => Err(e),
        }
    }

    pub async fn heartbeat(&self, running_jobs: Vec<Uuid>) -> Result<Ack, String> {
        let body = Heartbeat {
            node: self.node.clone(),
            instance_id: self.instance_id,
            running_jobs,
        };
        self.post_for_ack(api_paths::HEARTBEAT, &body).await
    }

    pub async fn inventory(&self, containers: Vec<ContainerSummary>) -> Result<Ack, String> {
        let body = Inventory {
            node: self.node.clone(),
            instance_id: self.instance_id,
            containers,
        };
        self.post_for_ack(api_paths::INVENTORY, &body).await
    }

    pub async fn send_event(&self, event: &JobEvent) -> Delivery {
        self.post(api_paths::EVENTS, event).await
    }
}

fn truncate(text: &str) -> String {
    text.chars().take(300).collect()
}

/// Registers, then heartbeats; registers again whenever the API has
/// forgotten this agent (a restarted API, or one that declared it lost).
pub(super) async fn keep_registered(
    api: ApiClient,
    registration: Registration,
    inventory: inventory::Inventory,
    jobs: Jobs,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut registered = false;
    let mut backoff = Duration::from_millis(200);
    loop {
        if !registered {
            match api.register(&registration).await {
                Ok(()) => {
                    tracing::info!("registered with the API");
                    registered = true;
                    backoff = Duration::from_millis(200);
                    inventory.push_now().await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot register with the API; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.cancelled() => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.cancelled() => {}
        }
        match api.heartbeat(jobs.ids()).await {
            Ok(ack) if !ack.known => registered = false,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
        }
    }
}
