//! Outbound webhooks to event platforms: signed (Standard Webhooks 1.0),
//! enqueued in the same transaction as the status they announce
//! (transactional outbox), delivered at least once by a worker that any
//! number of API replicas can run, retried on a schedule, and sent only
//! where the egress policy allows (no loopback, private or metadata
//! addresses unless the operator says so).

pub mod endpoints;
pub mod events;
pub mod outbox;
pub mod schedule;
pub mod settings;
pub mod signing;
pub mod ssrf;
pub mod worker;

/// Event types an endpoint can subscribe to.
pub const SNAPSHOT_PUSHED: &str = "snapshot.pushed";
pub const SNAPSHOT_FAILED: &str = "snapshot.failed";
/// Sent by `sendTestWebhook`, whatever the endpoint subscribes to.
pub const PING: &str = "ping";
