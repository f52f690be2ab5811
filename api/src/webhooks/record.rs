//! Recording attempts. A success, the common case, waits a moment for others
//! and is written with them in one transaction: the attempt rows in one
//! statement, the deliveries and the endpoints' failing streaks in one each.
//! Recording each one alone cost five round trips and a commit per
//! delivery, the largest part of the worker's database work. Anything else
//! (a failure, a retry, a 410) is recorded at once, alone, because it
//! schedules what comes next and decides the endpoint's health.
//!
//! A recorded outcome keeps its send slot until it is written, so the
//! worker never holds more claimed-but-unrecorded deliveries than it has
//! slots. A process that dies before writing leaves the claim to expire:
//! the delivery is sent again with the same `webhook-id`, as before.

use std::collections::BTreeMap;
use std::time::Duration;

use entity::prelude::*;
use entity::{DeliveryStatus, webhook_attempt, webhook_delivery, webhook_endpoint};
use sea_orm::sea_query::{Expr, ExprTrait, Func};
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, Set, TransactionTrait};
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use super::schedule;
use crate::state::AppState;

/// Successes written in one transaction at most.
const BATCH: usize = 256;

/// What one attempt came to.
#[derive(Debug)]
pub(super) struct Outcome {
    pub(super) status_code: Option<u16>,
    pub(super) latency: Duration,
    pub(super) excerpt: Option<String>,
    pub(super) error: Option<String>,
    pub(super) retry_after: Option<Duration>,
}

impl Outcome {
    fn succeeded(&self) -> bool {
        self.status_code.is_some_and(|c| (200..300).contains(&c))
    }
}

/// An attempt to record, holding its send slot until it is.
#[derive(Debug)]
pub(super) struct Finished {
    pub(super) delivery: webhook_delivery::Model,
    pub(super) endpoint: webhook_endpoint::Model,
    pub(super) outcome: Outcome,
    pub(super) slot: OwnedSemaphorePermit,
}

/// Where the worker's attempts go when they end.
#[derive(Clone, Debug)]
pub(super) struct Recorder {
    state: AppState,
    successes: mpsc::Sender<Finished>,
}

impl Recorder {
    /// Starts the task that writes successes in batches; it ends when every
    /// clone of the recorder is gone.
    pub(super) fn start(state: AppState, capacity: usize) -> Self {
        let (successes, queue) = mpsc::channel(capacity.max(1));
        tokio::spawn(record_successes(state.clone(), queue));
        Self { state, successes }
    }

    pub(super) async fn record(&self, finished: Finished) {
        if finished.outcome.succeeded() {
            // The channel holds as many as there are slots: no real wait.
            if let Err(mpsc::error::SendError(finished)) = self.successes.send(finished).await {
                record_alone(&self.state, finished).await;
            }
            return;
        }
        record_alone(&self.state, finished).await;
    }
}

/// Records one finished attempt in its own transaction, and wakes the
/// worker when a retry is due later: it may be asleep past it (the poll
/// can be long where notifications announce new rows).
async fn record_alone(state: &AppState, finished: Finished) {
    let Finished {
        delivery,
        endpoint,
        outcome,
        slot,
    } = finished;
    match record_one(state, delivery, endpoint, outcome).await {
        Ok(Some(_retry_at)) => state.webhook_wakeup.notify_one(),
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "recording a webhook attempt failed"),
    }
    drop(slot);
}

/// Writes the successes that queue up while the previous batch is written.
async fn record_successes(state: AppState, mut queue: mpsc::Receiver<Finished>) {
    let mut batch = Vec::with_capacity(BATCH);
    while queue.recv_many(&mut batch, BATCH).await > 0 {
        match record_batch(&state, &batch).await {
            Ok(()) => {
                for _ in &batch {
                    state.metrics.count_webhook("succeeded");
                }
                // Frees their slots.
                batch.clear();
            }
            Err(e) => {
                // One row can fail the whole batch (a delivery deleted with
                // its endpoint meanwhile): then each is written alone, so
                // the others are not sent again.
                tracing::warn!(error = %e, count = batch.len(), "recording a batch of webhook successes failed; recording them one by one");
                for finished in batch.drain(..) {
                    record_alone(&state, finished).await;
                }
            }
        }
    }
}

/// An attempt is bounded by its timeout (15 s); saturate, never wrap.
fn latency_ms(latency: Duration) -> i64 {
    i64::try_from(latency.as_millis()).unwrap_or(i64::MAX)
}

/// Records successful attempts in one transaction.
async fn record_batch(state: &AppState, batch: &[Finished]) -> Result<(), sea_orm::DbErr> {
    let now = crate::clock::now();
    let txn = state.db.begin().await?;
    WebhookAttempt::insert_many(batch.iter().map(|f| webhook_attempt::ActiveModel {
        delivery_id: Set(f.delivery.id),
        attempted_at: Set(now),
        status_code: Set(f.outcome.status_code.map(i32::from)),
        latency_ms: Set(latency_ms(f.outcome.latency)),
        response_excerpt: Set(f.outcome.excerpt.clone()),
        error: Set(f.outcome.error.clone()),
        ..Default::default()
    }))
    .exec(&txn)
    .await?;
    // One statement per status code (nearly always one: 200 or 204).
    let mut by_code: BTreeMap<Option<u16>, Vec<uuid::Uuid>> = BTreeMap::new();
    for f in batch {
        by_code
            .entry(f.outcome.status_code)
            .or_default()
            .push(f.delivery.id);
    }
    use webhook_delivery::Column as D;
    for (code, ids) in by_code {
        WebhookDelivery::update_many()
            .col_expr(D::Status, Expr::value(DeliveryStatus::Succeeded))
            .col_expr(D::Attempts, Expr::col(D::Attempts).add(1))
            .col_expr(D::LastAttemptAt, Expr::value(now))
            .col_expr(D::LastStatusCode, Expr::value(code.map(i32::from)))
            .col_expr(
                D::FirstAttemptAt,
                Func::coalesce([Expr::col(D::FirstAttemptAt), Expr::value(now)]).into(),
            )
            .col_expr(
                D::NextAttemptAt,
                Expr::value(Option::<chrono::DateTime<chrono::Utc>>::None),
            )
            .col_expr(D::CompletedAt, Expr::value(now))
            .filter(D::Id.is_in(ids))
            .exec(&txn)
            .await?;
    }
    // A success ends its endpoint's failing streak (see `record_one`).
    let endpoints: Vec<uuid::Uuid> = batch.iter().map(|f| f.endpoint.id).collect();
    WebhookEndpoint::update_many()
        .col_expr(
            webhook_endpoint::Column::FailingSince,
            Expr::value(Option::<chrono::DateTime<chrono::Utc>>::None),
        )
        .filter(webhook_endpoint::Column::Id.is_in(endpoints))
        .filter(webhook_endpoint::Column::FailingSince.is_not_null())
        .exec(&txn)
        .await?;
    txn.commit().await
}

/// Records one attempt and what follows from it, in a transaction of its
/// own; returns when the delivery is tried again, if it is.
async fn record_one(
    state: &AppState,
    delivery: webhook_delivery::Model,
    endpoint: webhook_endpoint::Model,
    outcome: Outcome,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, sea_orm::DbErr> {
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
        latency_ms: Set(latency_ms(outcome.latency)),
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
    Ok(next)
}

/// Marks a delivery failed without an attempt (its endpoint is gone).
pub(super) async fn give_up(
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
