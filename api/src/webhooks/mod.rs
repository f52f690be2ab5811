//! Outbound webhooks to event platforms: signed (Standard Webhooks 1.0),
//! enqueued in the same transaction as the status they announce
//! (transactional outbox), delivered at least once by a worker that any
//! number of API replicas can run, retried on a schedule, and sent only
//! where the egress policy allows (no loopback, private or metadata
//! addresses unless the operator says so).

pub mod endpoints;
pub mod events;
pub mod outbox;
mod record;
pub mod schedule;
pub mod settings;
pub mod signing;
pub mod ssrf;
pub mod wakeup;
pub mod worker;

/// The `type` of a webhook event. Text (`snapshot.pushed`) only at the
/// edges: the event body, the stored rows (an endpoint's `event_types`, a
/// delivery's `event_type`) and the GraphQL fields that say `String`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// An endpoint can subscribe to this one.
    SnapshotPushed,
    /// An endpoint can subscribe to this one.
    SnapshotFailed,
    /// An endpoint can subscribe to this one.
    SnapshotDeleted,
    /// Sent by `sendTestWebhook`, whatever the endpoint subscribes to.
    Ping,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SnapshotPushed => "snapshot.pushed",
            Self::SnapshotFailed => "snapshot.failed",
            Self::SnapshotDeleted => "snapshot.deleted",
            Self::Ping => "ping",
        }
    }

    /// Whether an endpoint may name it in its `event_types`.
    pub fn is_subscribable(self) -> bool {
        self != Self::Ping
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
