//! GraphQL types of webhooks (admins only).

use async_graphql::{Context, Enum, ID, Object, Result, SimpleObject};
use chrono::{DateTime, Utc};
use entity::{webhook_attempt, webhook_delivery, webhook_endpoint};

use super::context::loader;
use super::int64::Int64;
use super::loaders::AttemptsByDelivery;
use crate::webhooks::EventType;

/// Events an endpoint can subscribe to.
#[derive(Enum, Copy, Clone, PartialEq, Eq, Debug)]
pub enum WebhookEventType {
    /// `snapshot.pushed`: an image is in the registry.
    SnapshotPushed,
    /// `snapshot.failed`: a snapshot failed, with the reason.
    SnapshotFailed,
    /// `snapshot.deleted`: a pushed snapshot was deleted, by a person or by
    /// retention, and what became of its manifest.
    SnapshotDeleted,
}

impl From<WebhookEventType> for EventType {
    fn from(t: WebhookEventType) -> Self {
        match t {
            WebhookEventType::SnapshotPushed => Self::SnapshotPushed,
            WebhookEventType::SnapshotFailed => Self::SnapshotFailed,
            WebhookEventType::SnapshotDeleted => Self::SnapshotDeleted,
        }
    }
}

/// Where a delivery is.
#[derive(Enum, Copy, Clone, PartialEq, Eq, Debug)]
pub enum WebhookDeliveryStatus {
    /// Waiting for its first or next attempt.
    Pending,
    /// The receiver answered 2xx.
    Succeeded,
    /// Out of attempts, or its endpoint was disabled.
    Failed,
}

impl From<entity::DeliveryStatus> for WebhookDeliveryStatus {
    fn from(s: entity::DeliveryStatus) -> Self {
        match s {
            entity::DeliveryStatus::Pending => Self::Pending,
            entity::DeliveryStatus::Succeeded => Self::Succeeded,
            entity::DeliveryStatus::Failed => Self::Failed,
        }
    }
}

impl From<WebhookDeliveryStatus> for entity::DeliveryStatus {
    fn from(s: WebhookDeliveryStatus) -> Self {
        match s {
            WebhookDeliveryStatus::Pending => Self::Pending,
            WebhookDeliveryStatus::Succeeded => Self::Succeeded,
            WebhookDeliveryStatus::Failed => Self::Failed,
        }
    }
}

pub struct WebhookEndpoint(pub webhook_endpoint::Model);

impl std::fmt::Debug for WebhookEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the model's Debug: it holds the signing secrets.
        f.debug_struct("WebhookEndpoint")
            .field("id", &self.0.id)
            .field("url", &self.0.url)
            .finish_non_exhaustive()
    }
}

/// Where webhooks go. The secret is never shown again after creation or
/// rotation.
#[Object]
impl WebhookEndpoint {
    /// The endpoint's id (a UUID).
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// The HTTPS URL of the receiver.
    async fn url(&self) -> &str {
        &self.0.url
    }
    /// What it is for, in the words of who created it.
    async fn description(&self) -> Option<&str> {
        self.0.description.as_deref()
    }
    /// `snapshot.pushed`, `snapshot.failed`.
    async fn event_types(&self) -> Vec<String> {
        self.0
            .event_types
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }
    /// Whether deliveries are sent to it.
    async fn enabled(&self) -> bool {
        self.0.enabled
    }
    /// Why it was disabled automatically (410 Gone, failing for days).
    async fn disabled_reason(&self) -> Option<&str> {
        self.0.disabled_reason.as_deref()
    }
    /// Since when every delivery has failed.
    async fn failing_since(&self) -> Option<DateTime<Utc>> {
        self.0.failing_since
    }
    /// Until when the previous secret also signs (after a rotation).
    async fn previous_secret_expires_at(&self) -> Option<DateTime<Utc>> {
        self.0.previous_secret_expires_at
    }
    /// The `sub` of the admin who created it.
    async fn created_by(&self) -> &str {
        &self.0.created_by
    }
    /// When it was created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// When it last changed.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
}

/// An endpoint with its secret: returned once, by creation and rotation.
#[derive(SimpleObject)]
pub struct WebhookEndpointWithSecret {
    /// The endpoint.
    pub endpoint: WebhookEndpoint,
    /// `whsec_...`: verify `webhook-signature` with it (Standard Webhooks).
    pub secret: String,
}

impl std::fmt::Debug for WebhookEndpointWithSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookEndpointWithSecret")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
pub struct WebhookDelivery(pub webhook_delivery::Model);

/// One event for one endpoint, and its attempts.
#[Object]
impl WebhookDelivery {
    /// The delivery's id (a UUID).
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// The endpoint it goes to.
    async fn endpoint_id(&self) -> ID {
        ID(self.0.endpoint_id.to_string())
    }
    /// The `webhook-id` header, the same on every attempt.
    async fn message_id(&self) -> &str {
        &self.0.message_id
    }
    /// `snapshot.pushed`, `snapshot.failed` or `ping`.
    async fn event_type(&self) -> &str {
        &self.0.event_type
    }
    /// The JSON body sent.
    async fn payload(&self) -> &str {
        &self.0.payload
    }
    /// Where the delivery is.
    async fn status(&self) -> WebhookDeliveryStatus {
        self.0.status.into()
    }
    /// How many attempts were made.
    async fn attempt_count(&self) -> i32 {
        self.0.attempts
    }
    /// When the next attempt is due; null unless `PENDING`.
    async fn next_attempt_at(&self) -> Option<DateTime<Utc>> {
        match self.0.status {
            entity::DeliveryStatus::Pending => self.0.next_attempt_at,
            _ => None,
        }
    }
    /// The HTTP status of the last answer; null when none came.
    async fn last_status_code(&self) -> Option<i32> {
        self.0.last_status_code
    }
    /// When the event was written to the outbox.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// When it succeeded or finally failed.
    async fn completed_at(&self) -> Option<DateTime<Utc>> {
        self.0.completed_at
    }
    /// Every attempt, oldest first.
    async fn attempts(&self, ctx: &Context<'_>) -> Result<Vec<WebhookAttempt>> {
        // Admins only, like the delivery itself: reaching a delivery
        // already checked that.
        let attempts = loader::<AttemptsByDelivery>(ctx)?
            .load_one(self.0.id)
            .await?
            .unwrap_or_default();
        Ok(attempts.into_iter().map(WebhookAttempt).collect())
    }
}

#[derive(Debug)]
pub struct WebhookAttempt(pub webhook_attempt::Model);

/// One attempt to deliver a webhook.
#[Object]
impl WebhookAttempt {
    /// When it was made.
    async fn at(&self) -> DateTime<Utc> {
        self.0.attempted_at
    }
    /// `null` when no response came.
    async fn status_code(&self) -> Option<i32> {
        self.0.status_code
    }
    /// How long the receiver took to answer (or to fail), in milliseconds.
    async fn latency_ms(&self) -> Int64 {
        Int64(self.0.latency_ms)
    }
    /// The first KiB of the response.
    async fn response_excerpt(&self) -> Option<&str> {
        self.0.response_excerpt.as_deref()
    }
    /// Why no answer came (connection refused, timeout, ...).
    async fn error(&self) -> Option<&str> {
        self.0.error.as_deref()
    }
}
