//! Managing endpoints and deliveries: admins only.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use entity::prelude::*;
use entity::{DeliveryStatus, webhook_attempt, webhook_delivery, webhook_endpoint};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, EntityTrait, ModelTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::signing::generate_secret;
use super::{EventType, events, outbox};
use crate::auth::Principal;
use crate::errors::{ApiError, ApiResult};
use crate::service::audit;
use crate::service::page::{self, Page};
use crate::state::AppState;

/// How long a rotated-out secret keeps signing alongside the new one.
pub const ROTATION_OVERLAP: chrono::Duration = chrono::Duration::hours(24);
const MAX_DESCRIPTION: usize = 500;

fn admin(who: &Principal) -> ApiResult<()> {
    if who.is_admin() {
        Ok(())
    } else {
        Err(ApiError::forbidden("only admins manage webhooks"))
    }
}

fn check_event_types(types: &[EventType]) -> ApiResult<()> {
    if types.is_empty() {
        return Err(ApiError::bad_input("name at least one event type"));
    }
    for t in types {
        if !t.is_subscribable() {
            return Err(ApiError::bad_input(format!(
                "unknown event type \"{t}\" (use {}, {} or {})",
                EventType::SnapshotPushed,
                EventType::SnapshotFailed,
                EventType::SnapshotDeleted
            )));
        }
    }
    Ok(())
}

/// How an endpoint's event types are stored: a JSON list of their names.
fn stored(types: &[EventType]) -> serde_json::Value {
    json!(types.iter().map(|t| t.as_str()).collect::<Vec<_>>())
}

/// Checks a target URL against the egress policy, resolving its host.
async fn check_url(state: &AppState, url: &str) -> ApiResult<String> {
    state
        .webhooks
        .policy
        .check_url_resolving(url)
        .await
        .map(|u| u.to_string())
        .map_err(|e| ApiError::bad_input(e.to_string()))
}

#[derive(Debug)]
pub struct NewEndpoint {
    pub url: String,
    pub event_types: Vec<EventType>,
    pub description: Option<String>,
}

/// Creates an endpoint; returns it and its secret, shown this once.
#[tracing::instrument(level = "debug", skip_all, fields(who = %who.sub))]
pub async fn create(
    state: &AppState,
    who: &Principal,
    input: NewEndpoint,
) -> ApiResult<(webhook_endpoint::Model, String)> {
    admin(who)?;
    check_event_types(&input.event_types)?;
    if input
        .description
        .as_ref()
        .is_some_and(|d| d.len() > MAX_DESCRIPTION)
    {
        return Err(ApiError::bad_input("the description is too long"));
    }
    let url = check_url(state, &input.url).await?;
    let secret = generate_secret();
    let now = crate::clock::now();
    let endpoint = webhook_endpoint::ActiveModel {
        id: Set(Uuid::new_v4()),
        url: Set(url),
        description: Set(input.description),
        event_types: Set(stored(&input.event_types)),
        enabled: Set(true),
        secret: Set(secret.clone().into()),
        previous_secret: Set(None),
        previous_secret_expires_at: Set(None),
        created_by: Set(who.sub.clone()),
        disabled_reason: Set(None),
        failing_since: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(&state.db)
    .await?;
    audit::record(
        &state.db,
        who,
        "createWebhookEndpoint",
        "webhook_endpoint",
        Some(endpoint.id.to_string()),
        "ok",
        json!({"url": endpoint.url}),
    )
    .await;
    Ok((endpoint, secret))
}

#[tracing::instrument(level = "debug", skip_all, fields(who = %who.sub))]
pub async fn list(state: &AppState, who: &Principal) -> ApiResult<Vec<webhook_endpoint::Model>> {
    admin(who)?;
    Ok(WebhookEndpoint::find()
        .order_by_asc(webhook_endpoint::Column::CreatedAt)
        .all(&state.db)
        .await?)
}

async fn get(state: &AppState, id: Uuid) -> ApiResult<webhook_endpoint::Model> {
    WebhookEndpoint::find_by_id(id)
        .one(&state.db)
        .await?
        .ok_or_else(|| ApiError::not_found("no such webhook endpoint"))
}

#[derive(Debug, Default)]
pub struct EndpointChanges {
    pub url: Option<String>,
    pub event_types: Option<Vec<EventType>>,
    pub enabled: Option<bool>,
    pub description: Option<String>,
}

#[tracing::instrument(level = "debug", skip_all, fields(who = %who.sub, endpoint_id = %id))]
pub async fn update(
    state: &AppState,
    who: &Principal,
    id: Uuid,
    changes: EndpointChanges,
) -> ApiResult<webhook_endpoint::Model> {
    admin(who)?;
    let current = get(state, id).await?;
    let mut row: webhook_endpoint::ActiveModel = current.into();
    if let Some(url) = changes.url {
        row.url = Set(check_url(state, &url).await?);
    }
    if let Some(types) = changes.event_types {
        check_event_types(&types)?;
        row.event_types = Set(stored(&types));
    }
    if let Some(enabled) = changes.enabled {
        row.enabled = Set(enabled);
        if enabled {
            // A fresh start: the reason and the failing streak are history.
            row.disabled_reason = Set(None);
            row.failing_since = Set(None);
        }
    }
    if let Some(description) = changes.description {
        row.description = Set(Some(description));
    }
    row.updated_at = Set(crate::clock::now());
    let updated = row.update(&state.db).await?;
    audit::record(
        &state.db,
        who,
        "updateWebhookEndpoint",
        "webhook_endpoint",
        Some(id.to_string()),
        "ok",
        json!({}),
    )
    .await;
    Ok(updated)
}

/// A new secret; the old one keeps signing for 24 hours alongside it.
#[tracing::instrument(level = "debug", skip_all, fields(who = %who.sub, endpoint_id = %id))]
pub async fn rotate(
    state: &AppState,
    who: &Principal,
    id: Uuid,
) -> ApiResult<(webhook_endpoint::Model, String)> {
    admin(who)?;
    let current = get(state, id).await?;
    let secret = generate_secret();
    let now = crate::clock::now();
    let mut row: webhook_endpoint::ActiveModel = current.clone().into();
    row.previous_secret = Set(Some(current.secret));
    row.previous_secret_expires_at = Set(Some(now + ROTATION_OVERLAP));
    row.secret = Set(secret.clone().into());
    row.updated_at = Set(now);
    let updated = row.update(&state.db).await?;
    audit::record(
        &state.db,
        who,
        "rotateWebhookSecret",
        "webhook_endpoint",
        Some(id.to_string()),
        "ok",
        json!({}),
    )
    .await;
    Ok((updated, secret))
}

#[tracing::instrument(level = "debug", skip_all, fields(who = %who.sub, endpoint_id = %id))]
pub async fn delete(state: &AppState, who: &Principal, id: Uuid) -> ApiResult<bool> {
    admin(who)?;
    let current = get(state, id).await?;
    current.delete(&state.db).await?;
    audit::record(
        &state.db,
        who,
        "deleteWebhookEndpoint",
        "webhook_endpoint",
        Some(id.to_string()),
        "ok",
        json!({}),
    )
    .await;
    Ok(true)
}

/// Queues a `ping` to the endpoint.
#[tracing::instrument(level = "debug", skip_all, fields(who = %who.sub, endpoint_id = %id))]
pub async fn send_test(
    state: &AppState,
    who: &Principal,
    id: Uuid,
) -> ApiResult<webhook_delivery::Model> {
    admin(who)?;
    let endpoint = get(state, id).await?;
    let body = events::ping(endpoint.id, &who.sub);
    let trace_parent = dcs_support::trace_context::current_traceparent();
    let delivery =
        outbox::insert(&state.db, endpoint.id, EventType::Ping, &body, trace_parent).await?;
    state.webhook_wakeup.notify_one();
    Ok(delivery)
}

/// Where a page of deliveries ended: newest first, by (created_at, id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryCursor {
    #[serde(rename = "at", with = "chrono::serde::ts_microseconds")]
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

impl page::Position for DeliveryCursor {
    const LIST: &'static str = "webhookDeliveries";
    fn is_plausible(&self) -> bool {
        page::plausible_time(&self.created_at)
    }
}

impl DeliveryCursor {
    pub fn of(delivery: &webhook_delivery::Model) -> Self {
        Self {
            created_at: delivery.created_at,
            id: delivery.id,
        }
    }
}

/// Filters of the `webhookDeliveries` query.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub endpoint: Option<Uuid>,
    pub status: Option<DeliveryStatus>,
}

/// One page of deliveries after `after`, newest first (admins).
#[tracing::instrument(level = "debug", skip_all, fields(who = %who.sub, first = first))]
pub async fn deliveries(
    state: &AppState,
    who: &Principal,
    filter: DeliveryFilter,
    first: usize,
    after: Option<DeliveryCursor>,
) -> ApiResult<Page<webhook_delivery::Model>> {
    admin(who)?;
    let mut query = WebhookDelivery::find();
    if let Some(endpoint) = filter.endpoint {
        query = query.filter(webhook_delivery::Column::EndpointId.eq(endpoint));
    }
    if let Some(status) = filter.status {
        query = query.filter(webhook_delivery::Column::Status.eq(status));
    }
    if let Some(after) = after {
        query = query.filter(
            Condition::any()
                .add(webhook_delivery::Column::CreatedAt.lt(after.created_at))
                .add(
                    Condition::all()
                        .add(webhook_delivery::Column::CreatedAt.eq(after.created_at))
                        .add(webhook_delivery::Column::Id.lt(after.id)),
                ),
        );
    }
    let rows = query
        .order_by_desc(webhook_delivery::Column::CreatedAt)
        .order_by_desc(webhook_delivery::Column::Id)
        .limit(page::limit_with_one_more(first))
        .all(&state.db)
        .await?;
    Ok(Page::from_one_more(rows, first))
}

/// The attempts of each delivery, oldest first, for DataLoaders: one
/// query for a whole page of deliveries.
#[tracing::instrument(level = "debug", skip_all, fields(deliveries = deliveries.len()))]
pub async fn attempts_of(
    state: &AppState,
    deliveries: &[Uuid],
) -> ApiResult<HashMap<Uuid, Vec<webhook_attempt::Model>>> {
    let mut map: HashMap<Uuid, Vec<webhook_attempt::Model>> = HashMap::new();
    if deliveries.is_empty() {
        return Ok(map);
    }
    let rows = WebhookAttempt::find()
        .filter(webhook_attempt::Column::DeliveryId.is_in(deliveries.to_vec()))
        .order_by_asc(webhook_attempt::Column::Id)
        .all(&state.db)
        .await?;
    for row in rows {
        map.entry(row.delivery_id).or_default().push(row);
    }
    Ok(map)
}

/// Sends a delivery again, with the same `webhook-id`, on a fresh schedule.
#[tracing::instrument(level = "debug", skip_all, fields(who = %who.sub, delivery_id = %id))]
pub async fn redeliver(
    state: &AppState,
    who: &Principal,
    id: Uuid,
) -> ApiResult<webhook_delivery::Model> {
    admin(who)?;
    let current = WebhookDelivery::find_by_id(id)
        .one(&state.db)
        .await?
        .ok_or_else(|| ApiError::not_found("no such webhook delivery"))?;
    if current.status == DeliveryStatus::Pending {
        return Err(ApiError::conflict("the delivery is still pending"));
    }
    let mut row: webhook_delivery::ActiveModel = current.into();
    row.status = Set(DeliveryStatus::Pending);
    row.attempts = Set(0);
    row.next_attempt_at = Set(Some(crate::clock::now()));
    row.completed_at = Set(None);
    let updated = row.update(&state.db).await?;
    state.webhook_wakeup.notify_one();
    audit::record(
        &state.db,
        who,
        "redeliverWebhook",
        "webhook_delivery",
        Some(id.to_string()),
        "ok",
        json!({}),
    )
    .await;
    Ok(updated)
}
