//! The delivery worker. Any number of API replicas run one: due deliveries
//! are claimed with `FOR UPDATE SKIP LOCKED` (on Postgres) by pushing their
//! `next_attempt_at` forward by a claim period, then sent outside the
//! transaction. A replica that dies mid-delivery leaves the claim to expire,
//! and another sends the event again with the same `webhook-id`: at least
//! once, never lost.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dcs_support::trace_context;
use entity::prelude::*;
use entity::{DeliveryStatus, webhook_attempt, webhook_delivery, webhook_endpoint};
use sea_orm::sea_query::{Expr, LockBehavior, LockType};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DbBackend, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    Set, TransactionTrait,
};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::schedule;
use super::signing::signature_header;
use crate::state::AppState;

/// Deliveries claimed at once.
const BATCH: u64 = 256;
/// Attempts in flight at once, per replica.
const CONCURRENCY: usize = 128;
/// Longest sleep between looks for due deliveries.
const POLL: Duration = Duration::from_millis(250);
/// Bytes of a response kept in the attempt log.
const EXCERPT: usize = 1024;

/// Runs until `stop`.
pub async fn run(state: AppState, stop: CancellationToken) {
    let slots = Arc::new(Semaphore::new(CONCURRENCY));
    loop {
        // Claim only what can be sent now: a claimed delivery waiting for a
        // slot would see its claim expire and be sent twice.
        let free = slots.available_permits() as u64;
        let claimed = match claim(&state, free.min(BATCH)).await {
            Ok(claimed) => claimed,
            Err(e) => {
                tracing::warn!(error = %e, "claiming webhook deliveries failed");
                Vec::new()
            }
        };
        let full = free > 0 && claimed.len() as u64 == free.min(BATCH);
        for (delivery, endpoint) in claimed {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let state = state.clone();
            tokio::spawn(async move {
                attempt(&state, delivery, endpoint).await;
                drop(permit);
            });
        }
        if full {
            continue;
        }
        // Sleep until the next delivery is due (a retry, or a row another
        // replica enqueued), a wake-up, or at most the poll interval.
        let wait = match next_due(&state).await {
            Some(due) => (due - crate::clock::now())
                .to_std()
                .unwrap_or_default()
                .min(POLL),
            None => POLL,
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = state.webhook_wakeup.notified() => {}
            _ = tokio::time::sleep(wait.max(Duration::from_millis(1))) => {}
        }
    }
}

type Claimed = Vec<(webhook_delivery::Model, Option<webhook_endpoint::Model>)>;

/// When the earliest pending delivery is due.
async fn next_due(state: &AppState) -> Option<chrono::DateTime<chrono::Utc>> {
    WebhookDelivery::find()
        .filter(webhook_delivery::Column::Status.eq(DeliveryStatus::Pending))
        .order_by_asc(webhook_delivery::Column::NextAttemptAt)
        .one(&state.db)
        .await
        .ok()
        .flatten()
        .and_then(|d| d.next_attempt_at)
}

async fn claim(state: &AppState, limit: u64) -> Result<Claimed, sea_orm::DbErr> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let now = crate::clock::now();
    let txn = state.db.begin().await?;
    let mut query = WebhookDelivery::find()
        .filter(webhook_delivery::Column::Status.eq(DeliveryStatus::Pending))
        .filter(webhook_delivery::Column::NextAttemptAt.lte(now))
        .order_by_asc(webhook_delivery::Column::NextAttemptAt)
        .limit(limit);
    if state.db.get_database_backend() == DbBackend::Postgres {
        query = query.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
    }
    let due = query.all(&txn).await?;
    if due.is_empty() {
        txn.commit().await?;
        return Ok(Vec::new());
    }
    let until = now
        + chrono::Duration::from_std(state.webhooks.claim).unwrap_or(chrono::Duration::seconds(30));
    let ids: Vec<uuid::Uuid> = due.iter().map(|d| d.id).collect();
    WebhookDelivery::update_many()
        .col_expr(webhook_delivery::Column::NextAttemptAt, Expr::value(until))
        .filter(webhook_delivery::Column::Id.is_in(ids))
        .exec(&txn)
        .await?;
    let endpoint_ids: Vec<uuid::Uuid> = due.iter().map(|d| d.endpoint_id).collect();
    let endpoints = WebhookEndpoint::find()
        .filter(webhook_endpoint::Column::Id.is_in(endpoint_ids))
        .all(&txn)
        .await?;
    txn.commit().await?;
    Ok(due
        .into_iter()
        .map(|d| {
            let endpoint = endpoints.iter().find(|e| e.id == d.endpoint_id).cloned();
            (d, endpoint)
        })
        .collect())
}

/// What one attempt came to.
struct Outcome {
    status_code: Option<u16>,
    latency: Duration,
    excerpt: Option<String>,
    error: Option<String>,
    retry_after: Option<Duration>,
}

/// One attempt, in a span that continues the trace the delivery was
/// enqueued in (for a snapshot's event, the snapshot's trace, from its
/// `createSnapshot`). The receiver gets no `traceparent`: it is outside,
/// and our trace ids are none of its business.
async fn attempt(
    state: &AppState,
    delivery: webhook_delivery::Model,
    endpoint: Option<webhook_endpoint::Model>,
) {
    let span = tracing::debug_span!(
        "webhook.deliver",
        delivery_id = %delivery.id,
        message_id = %delivery.message_id,
        event_type = %delivery.event_type,
        attempt = delivery.attempts + 1,
        status_code = tracing::field::Empty,
    );
    trace_context::set_remote_parent(&span, delivery.trace_parent.as_deref());
    attempt_in_span(state, delivery, endpoint)
        .instrument(span)
        .await;
}

async fn attempt_in_span(
    state: &AppState,
    delivery: webhook_delivery::Model,
    endpoint: Option<webhook_endpoint::Model>,
) {
    let Some(endpoint) = endpoint.filter(|e| e.enabled) else {
        let reason = "the endpoint is disabled or deleted";
        if let Err(e) = give_up(state, &delivery, reason).await {
            tracing::warn!(error = %e, "recording a dropped delivery failed");
        }
        return;
    };
    let outcome = send(state, &delivery, &endpoint).await;
    if let Some(code) = outcome.status_code {
        tracing::Span::current().record("status_code", code);
    }
    if let Err(e) = record(state, delivery, endpoint, outcome).await {
        tracing::warn!(error = %e, "recording a webhook attempt failed");
    }
}

async fn send(
    state: &AppState,
    delivery: &webhook_delivery::Model,
    endpoint: &webhook_endpoint::Model,
) -> Outcome {
    let started = Instant::now();
    let refused = |error: String| Outcome {
        status_code: None,
        latency: started.elapsed(),
        excerpt: None,
        error: Some(error),
        retry_after: None,
    };
    let url = match state.webhooks.policy.check_url(&endpoint.url) {
        Ok(url) => url,
        Err(e) => return refused(e.to_string()),
    };
    if let Err(e) = state.webhooks.policy.check_before_send(&url) {
        return refused(e.to_string());
    }
    let now = crate::clock::now();
    let mut secrets = vec![endpoint.secret.as_str()];
    if let (Some(previous), Some(until)) = (
        endpoint.previous_secret.as_deref(),
        endpoint.previous_secret_expires_at,
    ) && until > now
    {
        secrets.push(previous);
    }
    let timestamp = now.timestamp();
    let signature = signature_header(
        &secrets,
        &delivery.message_id,
        timestamp,
        delivery.payload.as_bytes(),
    );
    let response = state
        .webhooks
        .client
        .post(url)
        .header("content-type", "application/json")
        .header(
            "user-agent",
            concat!("dcs-webhooks/", env!("CARGO_PKG_VERSION")),
        )
        .header("webhook-id", &delivery.message_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(delivery.payload.clone())
        .send()
        .await;
    let mut response = match response {
        Ok(r) => r,
        Err(e) => return refused(describe(&e)),
    };
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| schedule::parse_retry_after(v, now));
    let mut excerpt = Vec::new();
    while excerpt.len() < EXCERPT {
        match response.chunk().await {
            Ok(Some(chunk)) => excerpt.extend_from_slice(&chunk),
            _ => break,
        }
    }
    excerpt.truncate(EXCERPT);
    Outcome {
        status_code: Some(status),
        latency: started.elapsed(),
        excerpt: Some(String::from_utf8_lossy(&excerpt).into_owned()),
        error: None,
        retry_after,
    }
}

fn describe(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return "the receiver did not answer in time".into();
    }
    dcs_support::describe_chain(error)
}

async fn record(
    state: &AppState,
    delivery: webhook_delivery::Model,
    endpoint: webhook_endpoint::Model,
    outcome: Outcome,
) -> Result<(), sea_orm::DbErr> {
    let now = crate::clock::now();
    let code = outcome.status_code;
    let succeeded = code.is_some_and(|c| (200..300).contains(&c));
    let gone = code == Some(410);
    let attempts = delivery.attempts + 1;

    let txn = state.db.begin().await?;
    webhook_attempt::ActiveModel {
        delivery_id: Set(delivery.id),
        attempted_at: Set(now),
        status_code: Set(code.map(i32::from)),
        // An attempt is bounded by its timeout (15 s); saturate, never wrap.
        latency_ms: Set(i64::try_from(outcome.latency.as_millis()).unwrap_or(i64::MAX)),
        response_excerpt: Set(outcome.excerpt),
        error: Set(outcome.error),
        ..Default::default()
    }
    .insert(&txn)
    .await?;

    let mut row: webhook_delivery::ActiveModel = delivery.clone().into();
    row.attempts = Set(attempts);
    row.last_attempt_at = Set(Some(now));
    row.last_status_code = Set(code.map(i32::from));
    if delivery.first_attempt_at.is_none() {
        row.first_attempt_at = Set(Some(now));
    }
    let retry = || {
        schedule::next_attempt(
            attempts,
            now,
            outcome
                .retry_after
                .filter(|_| matches!(code, Some(429 | 503))),
            schedule::random_jitter(),
            state.webhooks.schedule_scale,
        )
    };
    let next = if succeeded || gone { None } else { retry() };
    match next {
        _ if succeeded => {
            row.status = Set(DeliveryStatus::Succeeded);
            row.next_attempt_at = Set(None);
            row.completed_at = Set(Some(now));
        }
        Some(at) => row.next_attempt_at = Set(Some(at)),
        None => {
            row.status = Set(DeliveryStatus::Failed);
            row.next_attempt_at = Set(None);
            row.completed_at = Set(Some(now));
        }
    }
    row.update(&txn).await?;

    // The endpoint's health, decided on the row as it is now (other
    // attempts may have changed it since this one was claimed): a success
    // clears the failing streak; a 410 or days of failures disable it,
    // with the reason for admins.
    let id = webhook_endpoint::Column::Id.eq(endpoint.id);
    if succeeded {
        WebhookEndpoint::update_many()
            .col_expr(
                webhook_endpoint::Column::FailingSince,
                Expr::value(Option::<chrono::DateTime<chrono::Utc>>::None),
            )
            .filter(id)
            .filter(webhook_endpoint::Column::FailingSince.is_not_null())
            .exec(&txn)
            .await?;
    } else if gone {
        WebhookEndpoint::update_many()
            .col_expr(webhook_endpoint::Column::Enabled, Expr::value(false))
            .col_expr(
                webhook_endpoint::Column::DisabledReason,
                Expr::value(format!(
                    "the receiver answered 410 Gone at {}",
                    now.to_rfc3339()
                )),
            )
            .col_expr(webhook_endpoint::Column::UpdatedAt, Expr::value(now))
            .filter(id)
            .exec(&txn)
            .await?;
    } else {
        WebhookEndpoint::update_many()
            .col_expr(webhook_endpoint::Column::FailingSince, Expr::value(now))
            .filter(id.clone())
            .filter(webhook_endpoint::Column::FailingSince.is_null())
            .exec(&txn)
            .await?;
        let limit = chrono::Duration::from_std(
            schedule::DISABLE_AFTER.mul_f64(state.webhooks.schedule_scale),
        )
        .unwrap_or(chrono::Duration::days(5));
        let current = WebhookEndpoint::find_by_id(endpoint.id).one(&txn).await?;
        if let Some(since) = current.and_then(|e| e.failing_since)
            && now - since >= limit
        {
            WebhookEndpoint::update_many()
                .col_expr(webhook_endpoint::Column::Enabled, Expr::value(false))
                .col_expr(
                    webhook_endpoint::Column::DisabledReason,
                    Expr::value(format!(
                        "every delivery failed since {}",
                        since.to_rfc3339()
                    )),
                )
                .col_expr(webhook_endpoint::Column::UpdatedAt, Expr::value(now))
                .filter(id)
                .filter(webhook_endpoint::Column::Enabled.eq(true))
                .exec(&txn)
                .await?;
        }
    }
    txn.commit().await?;
    state
        .metrics
        .count_webhook(if succeeded { "succeeded" } else { "failed" });
    Ok(())
}

/// Marks a delivery failed without an attempt (its endpoint is gone).
async fn give_up(
    state: &AppState,
    delivery: &webhook_delivery::Model,
    reason: &str,
) -> Result<(), sea_orm::DbErr> {
    let now = crate::clock::now();
    let txn = state.db.begin().await?;
    webhook_attempt::ActiveModel {
        delivery_id: Set(delivery.id),
        attempted_at: Set(now),
        status_code: Set(None),
        latency_ms: Set(0),
        response_excerpt: Set(None),
        error: Set(Some(reason.to_string())),
        ..Default::default()
    }
    .insert(&txn)
    .await?;
    let mut row: webhook_delivery::ActiveModel = delivery.clone().into();
    row.status = Set(DeliveryStatus::Failed);
    row.next_attempt_at = Set(None);
    row.completed_at = Set(Some(now));
    row.update(&txn).await?;
    txn.commit().await
}
