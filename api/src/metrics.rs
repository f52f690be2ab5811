//! Prometheus metrics of the API.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Snapshots reaching each status.
    pub snapshots: Family<StatusLabel, Counter>,
    pub dispatch_attempts: Counter,
    pub agent_events: Counter,
    /// Webhook delivery attempts by outcome.
    pub webhook_attempts: Family<StatusLabel, Counter>,
    /// Looks of the webhook worker for due deliveries (claims).
    pub webhook_looks: Counter,
    /// Notifications heard on the webhook outbox channel (Postgres).
    pub webhook_notifications: Counter,
    /// GraphQL requests through the persisted query gate, by outcome
    /// (`plain`, `hit`, `miss`, `sent_in_full`, `stored`, `not_allowed`,
    /// `invalid`, `unavailable`).
    pub persisted_queries: Family<OutcomeLabel, Counter>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("dcs_api");
        let snapshots = Family::<StatusLabel, Counter>::default();
        let dispatch_attempts = Counter::default();
        let agent_events = Counter::default();
        let webhook_attempts = Family::<StatusLabel, Counter>::default();
        let persisted_queries = Family::<OutcomeLabel, Counter>::default();
        let webhook_looks = Counter::default();
        let webhook_notifications = Counter::default();
        registry.register(
            "webhook_looks",
            "Looks of the webhook worker for due deliveries",
            webhook_looks.clone(),
        );
        registry.register(
            "webhook_notifications",
            "Notifications heard on the webhook outbox channel",
            webhook_notifications.clone(),
        );
        registry.register(
            "persisted_queries",
            "GraphQL requests through the persisted query gate, by outcome",
            persisted_queries.clone(),
        );
        registry.register(
            "webhook_attempts",
            "Webhook delivery attempts by outcome",
            webhook_attempts.clone(),
        );
        registry.register(
            "snapshots",
            "Snapshots by status reached",
            snapshots.clone(),
        );
        registry.register(
            "dispatch_attempts",
            "Attempts to hand a job to an agent",
            dispatch_attempts.clone(),
        );
        registry.register(
            "agent_events",
            "Job events received from agents",
            agent_events.clone(),
        );
        Self {
            registry,
            snapshots,
            dispatch_attempts,
            agent_events,
            webhook_attempts,
            webhook_looks,
            webhook_notifications,
            persisted_queries,
        }
    }

    pub fn count_status(&self, status: entity::SnapshotStatus) {
        self.snapshots
            .get_or_create(&StatusLabel {
                status: format!("{status:?}").to_uppercase(),
            })
            .inc();
    }

    pub fn count_webhook(&self, outcome: &str) {
        self.webhook_attempts
            .get_or_create(&StatusLabel {
                status: outcome.to_string(),
            })
            .inc();
    }

    pub fn encode(&self) -> String {
        let mut text = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
