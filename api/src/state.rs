//! What every request handler and background task shares. Built by
//! [`crate::startup`]; depends only on leaf modules, so that anything may
//! depend on it.

use std::sync::Arc;
use std::time::Duration;

use dcs_protocol::token::SharedSecret;
use sea_orm::DatabaseConnection;
use tokio::sync::Notify;

use crate::agents::AgentClient;
use crate::auth::JwtVerifier;
use crate::auth::policy::Policy;
use crate::bus::{Bus, SnapshotChange};
use crate::kubernetes::Kubernetes;
use crate::metrics::Metrics;
use crate::persisted::PersistedQueries;
use crate::registry::Registries;
use crate::webhooks::settings::WebhookSettings;

#[derive(Clone, Debug)]
pub struct AppState(Arc<Shared>);

#[derive(Debug)]
pub struct Shared {
    pub db: DatabaseConnection,
    pub verifier: JwtVerifier,
    pub policy: Policy,
    /// Checks agents' tokens (the agent client signs the API's own).
    pub agent_secret: SharedSecret,
    pub bus: Bus,
    pub metrics: Metrics,
    /// Wakes the dispatcher when a job is queued.
    pub dispatch_wakeup: Notify,
    /// An agent silent for this long is lost; its running jobs fail.
    pub agent_timeout: Duration,
    /// Calls to agents.
    pub agents: AgentClient,
    pub webhooks: WebhookSettings,
    /// Pod-name targeting and agents' service-account tokens; `None` when
    /// the API runs outside Kubernetes.
    pub kubernetes: Option<Kubernetes>,
    /// Wakes the webhook worker when a delivery is queued.
    pub webhook_wakeup: Notify,
    /// Queries known by their hash, and which ones may run.
    pub persisted: PersistedQueries,
    /// Manifest deletes (`deleteSnapshot`, retention).
    pub registries: Registries,
    /// Layers allowed above a lineage's base before a snapshot is
    /// flattened (`service::layers`); 0: never automatically.
    pub layer_budget: u32,
}

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }

    /// Tells everyone who follows snapshots about a committed change:
    /// subscribers, metrics, and the webhook worker (the change may have
    /// queued deliveries).
    pub fn announce(&self, change: SnapshotChange, status_changed: bool) {
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
