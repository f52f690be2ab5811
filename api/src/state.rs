//! What every request handler and background task shares.

use std::sync::Arc;
use std::time::Duration;

use dcs_protocol::token::SharedSecret;
use sea_orm::DatabaseConnection;
use tokio::sync::Notify;

use crate::auth::JwtVerifier;
use crate::auth::policy::Policy;
use crate::bus::Bus;
use crate::metrics::Metrics;

#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub db: DatabaseConnection,
    pub verifier: JwtVerifier,
    pub policy: Policy,
    /// Signs tokens to agents and checks theirs.
    pub agent_secret: SharedSecret,
    pub bus: Bus,
    pub metrics: Metrics,
    /// Wakes the dispatcher when a job is queued.
    pub dispatch_wakeup: Notify,
    /// An agent silent for this long is lost; its running jobs fail.
    pub agent_timeout: Duration,
    /// Client for calls to agents.
    pub agents: reqwest::Client,
    pub webhooks: crate::webhooks::worker::WebhookSettings,
    /// Pod-name targeting and agents' service-account tokens; `None` when
    /// the API runs outside Kubernetes.
    pub kubernetes: Option<crate::kubernetes::Kubernetes>,
    /// In a cluster: the API's projected service-account token for calls
    /// to agents (re-read at every call: kubelet rotates it).
    pub agent_call_token_file: Option<std::path::PathBuf>,
    /// Wakes the webhook worker when a delivery is queued.
    pub webhook_wakeup: Notify,
}

impl AppState {
    /// The bearer token for a call to the agent of `node`.
    pub fn agent_token(&self, node: &str) -> String {
        if let Some(path) = &self.agent_call_token_file {
            match std::fs::read_to_string(path) {
                Ok(token) => return token.trim().to_string(),
                Err(e) => tracing::warn!(path = %path.display(), error = %e,
                    "cannot read the service-account token; using the shared secret"),
            }
        }
        self.agent_secret.sign(
            crate::dispatch::API_ISSUER,
            dcs_protocol::token::AGENT_AUDIENCE,
            node,
        )
    }

    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl AppState {
    /// Tells everyone who follows snapshots about a committed change:
    /// subscribers, metrics, and the webhook worker (the change may have
    /// queued deliveries).
    pub fn announce(&self, change: crate::bus::SnapshotChange, status_changed: bool) {
        if status_changed {
            self.metrics.count_status(change.status);
        }
        if change.status.is_terminal() {
            self.webhook_wakeup.notify_one();
        }
        self.bus.publish(change);
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}
