//! Enqueuing deliveries, inside the caller's transaction: the delivery
//! exists if and only if the status change it announces was committed.

use dcs_support::trace_context;
use entity::prelude::*;
use entity::{DeliveryStatus, snapshot, webhook_delivery, webhook_endpoint};
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set};
use uuid::Uuid;

use super::{EventType, events};
use crate::errors::ApiResult;

/// Whether an endpoint subscribes to an event type (stored as the list of
/// their names).
pub fn subscribes(endpoint: &webhook_endpoint::Model, event_type: EventType) -> bool {
    endpoint.event_types.as_array().is_some_and(|types| {
        types
            .iter()
            .any(|t| t.as_str() == Some(event_type.as_str()))
    })
}

/// Enqueues the event of a finished snapshot for every enabled endpoint
/// that wants it; returns how many deliveries were written.
pub async fn enqueue_for_snapshot<C: ConnectionTrait>(
    db: &C,
    snapshot: &snapshot::Model,
) -> ApiResult<usize> {
    let parent_image = match snapshot.parent_id {
        Some(id) => Snapshot::find_by_id(id).one(db).await?.map(|p| p.target),
        None => None,
    };
    let Some((event_type, body)) = events::snapshot_event(snapshot, parent_image.as_deref()) else {
        return Ok(0);
    };
    let endpoints = WebhookEndpoint::find()
        .filter(webhook_endpoint::Column::Enabled.eq(true))
        .all(db)
        .await?;
    // The deliveries belong to the snapshot's trace, under the span that
    // ended it when that span is part of it (the agent's result), else
    // under the request that created it (a cancel, the lost-agent check).
    let trace_parent = trace_context::current_traceparent_within(snapshot.trace_parent.as_deref());
    let mut count = 0;
    for endpoint in endpoints.iter().filter(|e| subscribes(e, event_type)) {
        insert(db, endpoint.id, event_type, &body, trace_parent.clone()).await?;
        count += 1;
    }
    Ok(count)
}

/// Writes one pending delivery, due now; its attempts' spans continue the
/// trace of `trace_parent`.
pub async fn insert<C: ConnectionTrait>(
    db: &C,
    endpoint_id: Uuid,
    event_type: EventType,
    body: &str,
    trace_parent: Option<String>,
) -> ApiResult<webhook_delivery::Model> {
    let id = Uuid::new_v4();
    let now = crate::clock::now();
    Ok(webhook_delivery::ActiveModel {
        id: Set(id),
        endpoint_id: Set(endpoint_id),
        message_id: Set(format!("msg_{}", id.simple())),
        event_type: Set(event_type.as_str().to_string()),
        payload: Set(body.to_string()),
        status: Set(DeliveryStatus::Pending),
        attempts: Set(0),
        next_attempt_at: Set(Some(now)),
        created_at: Set(now),
        trace_parent: Set(trace_parent),
        ..Default::default()
    }
    .insert(db)
    .await?)
}
