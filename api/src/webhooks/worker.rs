//! The delivery worker. Any number of API replicas run one: due deliveries
//! are claimed with `FOR UPDATE SKIP LOCKED` (on Postgres) by pushing their
//! `next_attempt_at` forward by a claim period, then sent after the claim
//! committed. A replica that dies mid-delivery leaves the claim to expire,
//! and another sends the event again with the same `webhook-id`: at least
//! once, never lost.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dcs_support::trace_context;
use entity::prelude::*;
use entity::{DeliveryStatus, webhook_delivery, webhook_endpoint};
use sea_orm::sea_query::{LockBehavior, LockType, Query};
use sea_orm::{
    ColumnTrait, DbBackend, EntityTrait, QueryFilter, QueryOrder, QuerySelect, QueryTrait,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::record::{Finished, Outcome, Recorder, give_up};
use super::schedule;
use super::signing::signature_header;
use crate::state::AppState;

/// Deliveries claimed at once.
const BATCH: u64 = 256;
/// Attempts in flight at once, per replica.
const CONCURRENCY: usize = 128;
/// Bytes of a response kept in the attempt log.
const EXCERPT: usize = 1024;
/// After a look that found nothing, the next one waits until this long
/// after it: wake-ups that announce nothing new (a flood of `NOTIFY`s on the
/// outbox channel from anyone) cost at most one look per gap, however many
/// arrive. Looks that find work follow each other at once.
const EMPTY_LOOK_GAP: Duration = Duration::from_millis(10);

/// Runs until `stop`, then waits for the attempts in flight to end and be
/// recorded (a slot is free again only once its attempt is recorded): an
/// attempt sent but not recorded would be sent again after its claim
/// expires. The caller bounds that wait (the shutdown grace period).
pub async fn run(state: AppState, stop: CancellationToken) {
    let slots = Arc::new(Semaphore::new(CONCURRENCY));
    let recorder = Recorder::start(state.clone(), CONCURRENCY);
    look(&state, &slots, &recorder, &stop).await;
    drop(recorder);
    let _ = slots.acquire_many(CONCURRENCY as u32).await;
}

/// Claims and sends due deliveries until `stop`.
async fn look(
    state: &AppState,
    slots: &Arc<Semaphore>,
    recorder: &Recorder,
    stop: &CancellationToken,
) {
    // When the last look that found nothing began.
    let mut last_empty: Option<Instant> = None;
    loop {
        // Claim only what can be sent now: a claimed delivery waiting for a
        // slot would see its claim expire and be sent twice. With every
        // slot taken, wait for one instead of for the next poll.
        let one_free = tokio::select! {
            _ = stop.cancelled() => return,
            permit = slots.clone().acquire_owned() => permit,
        };
        drop(one_free);
        if let Some(gap) = last_empty.and_then(|at| EMPTY_LOOK_GAP.checked_sub(at.elapsed())) {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(gap) => {}
            }
        }
        let looked = Instant::now();
        state.metrics.webhook_looks.inc();
        let free = slots.available_permits() as u64;
        let claimed = match claim(state, free.min(BATCH)).await {
            Ok(claimed) => claimed,
            Err(e) => {
                tracing::warn!(error = %e, "claiming webhook deliveries failed");
                Vec::new()
            }
        };
        last_empty = claimed.is_empty().then_some(looked);
        let full = free > 0 && claimed.len() as u64 == free.min(BATCH);
        for (delivery, endpoint) in claimed {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let state = state.clone();
            let recorder = recorder.clone();
            tokio::spawn(async move {
                attempt(&state, &recorder, delivery, endpoint, slot).await;
            });
        }
        if full {
            continue;
        }
        // Sleep until the next delivery is due (a retry, or a claim another
        // replica let expire), a wake-up (a new delivery, here or, on
        // Postgres, anywhere), or at most the poll interval.
        let poll = state.webhooks.poll;
        let wait = match next_due(state).await {
            Some(due) => (due - crate::clock::now())
                .to_std()
                .unwrap_or_default()
                .min(poll),
            None => poll,
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
    use webhook_delivery::Column as D;
    WebhookDelivery::find()
        .select_only()
        .column(D::NextAttemptAt)
        .filter(D::Status.eq(DeliveryStatus::Pending))
        .order_by_asc(D::NextAttemptAt)
        .into_tuple::<Option<chrono::DateTime<chrono::Utc>>>()
        .one(&state.db)
        .await
        .ok()
        .flatten()
        .flatten()
}

/// Claims up to `limit` due deliveries, the earliest first, and reads
/// their endpoints. The claim is one statement (an `UPDATE` of the rows a
/// locking sub-select picked, `RETURNING` them): on Postgres, rows another
/// replica is claiming are skipped, and a row another replica claimed
/// meanwhile is no longer due when the lock is granted, so it is left out.
/// It replaced a transaction of four statements.
async fn claim(state: &AppState, limit: u64) -> Result<Claimed, sea_orm::DbErr> {
    use webhook_delivery::Column as D;
    if limit == 0 {
        return Ok(Vec::new());
    }
    let now = crate::clock::now();
    let until = now
        + chrono::Duration::from_std(state.webhooks.claim).unwrap_or(chrono::Duration::seconds(30));
    let backend = state.db.get_database_backend();
    let mut due = WebhookDelivery::find()
        .select_only()
        .column(D::Id)
        .filter(D::Status.eq(DeliveryStatus::Pending))
        .filter(D::NextAttemptAt.lte(now))
        .order_by_asc(D::NextAttemptAt)
        .limit(limit);
    if backend == DbBackend::Postgres {
        due = due.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
    }
    let update = Query::update()
        .table(WebhookDelivery)
        .value(D::NextAttemptAt, until)
        .and_where(D::Id.in_subquery(due.into_query()))
        .returning_all()
        .to_owned();
    // Built and run as a raw statement: SeaORM refuses `RETURNING` on
    // SQLite, which has had it since 3.35 (the bundled one is newer).
    let claimed = WebhookDelivery::find()
        .from_raw_sql(backend.build(&update))
        .all(&state.db)
        .await?;
    if claimed.is_empty() {
        return Ok(Vec::new());
    }
    let endpoint_ids: Vec<uuid::Uuid> = claimed.iter().map(|d| d.endpoint_id).collect();
    let endpoints = WebhookEndpoint::find()
        .filter(webhook_endpoint::Column::Id.is_in(endpoint_ids))
        .all(&state.db)
        .await?;
    let mut claimed: Claimed = claimed
        .into_iter()
        .map(|d| {
            let endpoint = endpoints.iter().find(|e| e.id == d.endpoint_id).cloned();
            (d, endpoint)
        })
        .collect();
    // `RETURNING` keeps no order: send the oldest first.
    claimed.sort_by_key(|(d, _)| d.created_at);
    Ok(claimed)
}

/// Sends one claimed delivery and hands the outcome, with the send slot,
/// to the recorder; in a span that continues the trace the delivery was
/// enqueued in (for a snapshot's event, the snapshot's trace, from its
/// `createSnapshot`). The receiver gets no `traceparent`: it is outside,
/// and our trace ids are none of its business.
async fn attempt(
    state: &AppState,
    recorder: &Recorder,
    delivery: webhook_delivery::Model,
    endpoint: Option<webhook_endpoint::Model>,
    slot: OwnedSemaphorePermit,
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
    attempt_in_span(state, recorder, delivery, endpoint, slot)
        .instrument(span)
        .await;
}

async fn attempt_in_span(
    state: &AppState,
    recorder: &Recorder,
    delivery: webhook_delivery::Model,
    endpoint: Option<webhook_endpoint::Model>,
    slot: OwnedSemaphorePermit,
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
    recorder
        .record(Finished {
            delivery,
            endpoint,
            outcome,
            slot,
        })
        .await;
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
        endpoint
            .previous_secret
            .as_ref()
            .map(webhook_endpoint::SigningSecret::as_str),
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
