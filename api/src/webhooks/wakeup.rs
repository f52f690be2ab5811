//! Wakes this replica's delivery worker when another process commits a
//! delivery ready to send. On Postgres, the outbox trigger (migration
//! `webhook_outbox_notify`) notifies `WEBHOOK_OUTBOX_CHANNEL` when such a
//! transaction commits, whoever wrote it: a SQL script, a retention job,
//! psql. Without it, a row written elsewhere waited for the worker's poll
//! (p50 119 ms at a 250 ms poll in `scripts/bench-webhooks.sh`, phase B).
//! (The API's own writes do not notify: the replica that writes a delivery
//! wakes its own worker in-process; see `db.rs` and the migration.)
//!
//! - The listening connection is one of its own, outside the shared pool,
//!   named `APPLICATION_NAME` in `pg_stat_activity`.
//! - Every notification only says "look": the payload is not read (anyone
//!   may `NOTIFY` the channel with anything), and any number of
//!   notifications before the worker looks wake it once (`Notify` keeps one
//!   permit).
//! - Notifications sent while the connection is down are lost: after each
//!   (re)connection the worker is woken once to sweep what is due. The
//!   worker's poll stays as the safety net.
//! - A connection that died without a word (a half-open TCP connection
//!   after a failover) would wait for ever: every `HEARTBEAT` this replica
//!   notifies the channel itself through the shared pool, and a listener
//!   that hears nothing, not even that, for `SILENCE` reconnects.
//! - Reconnections back off from `FIRST_RETRY` to `LONGEST_RETRY`.
//!
//! On SQLite (one process) the writers wake the worker in-process, and this
//! does nothing.

use std::time::Duration;

use migration::WEBHOOK_OUTBOX_CHANNEL;
use sea_orm::sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// How the listening connection shows in `pg_stat_activity`.
pub const APPLICATION_NAME: &str = "dcs-api webhook wake-up";
/// First wait before listening again after the connection was lost;
/// doubled after each failure up to `LONGEST_RETRY`.
const FIRST_RETRY: Duration = Duration::from_millis(100);
const LONGEST_RETRY: Duration = Duration::from_secs(5);
/// How often this replica checks that its listener still hears the channel.
const HEARTBEAT: Duration = Duration::from_secs(15);
/// A listener that hears nothing for this long is presumed dead.
const SILENCE: Duration = Duration::from_secs(50);
/// The payload of heartbeats: they wake no worker.
const HEARTBEAT_PAYLOAD: &str = "dcs-heartbeat";

/// Listens until `stop`, reconnecting after errors.
pub async fn listen(state: AppState, stop: CancellationToken) {
    if state.db.get_database_backend() != DbBackend::Postgres {
        return;
    }
    tokio::spawn(heartbeat(state.clone(), stop.clone()));
    // A connection of its own, outside the shared pool: it is held for
    // good, and must come back even while requests keep the pool busy.
    let options = (*state.db.get_postgres_connection_pool().connect_options())
        .clone()
        .application_name(APPLICATION_NAME);
    let mut retry = FIRST_RETRY;
    loop {
        let mut listened = false;
        tokio::select! {
            _ = stop.cancelled() => return,
            e = session(&state, &options, &mut listened) => {
                tracing::warn!(error = %e, "listening for new webhook deliveries failed; polling meanwhile");
            }
        }
        if listened {
            retry = FIRST_RETRY;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(retry) => {}
        }
        retry = (retry * 2).min(LONGEST_RETRY);
    }
}

/// Listens on one connection and wakes the worker for each notification;
/// returns why it stopped. Sets `listened` once the `LISTEN` took effect.
async fn session(
    state: &AppState,
    options: &PgConnectOptions,
    listened: &mut bool,
) -> sea_orm::sqlx::Error {
    let mut listener = match connect(options).await {
        Ok(listener) => listener,
        Err(e) => return e,
    };
    if let Err(e) = listener.listen(WEBHOOK_OUTBOX_CHANNEL).await {
        return e;
    }
    *listened = true;
    tracing::debug!("listening for new webhook deliveries");
    // Listening (again): what was committed while nobody listened is due
    // now, not at the next poll.
    state.webhook_wakeup.notify_one();
    loop {
        // Cancelling `try_recv` may leave the connection mid-message: only
        // done when the connection is given up anyway.
        let Ok(received) = tokio::time::timeout(SILENCE, listener.try_recv()).await else {
            return sea_orm::sqlx::Error::Protocol(format!(
                "nothing heard on the listening connection for {} s, not even this \
                 replica's heartbeat",
                SILENCE.as_secs()
            ));
        };
        match received {
            Ok(Some(notification)) => {
                state.metrics.webhook_notifications.inc();
                if !is_heartbeat(notification.payload()) {
                    state.webhook_wakeup.notify_one();
                }
            }
            // The connection dropped: what was sent meanwhile is lost,
            // which the next session's wake-up makes up for.
            Ok(None) => {
                return sea_orm::sqlx::Error::Protocol("the listening connection was lost".into());
            }
            Err(e) => return e,
        }
    }
}

fn is_heartbeat(payload: &str) -> bool {
    payload == HEARTBEAT_PAYLOAD
}

/// A listener on a one-connection pool of its own.
async fn connect(options: &PgConnectOptions) -> Result<PgListener, sea_orm::sqlx::Error> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .max_lifetime(None)
        .idle_timeout(None)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options.clone())
        .await?;
    let mut listener = PgListener::connect_with(&pool).await?;
    // Reconnecting is this module's job: a lost connection ends the session
    // here, so that the worker is woken after every reconnection.
    listener.eager_reconnect(false);
    Ok(listener)
}

/// Notifies the channel every `HEARTBEAT` through the shared pool, so that
/// every listener (this replica's and the others') hears something at
/// least that often while its connection works. Failures are the
/// listener's business: it reconnects after `SILENCE`.
async fn heartbeat(state: AppState, stop: CancellationToken) {
    let mut every = tokio::time::interval(HEARTBEAT);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        let statement = Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_notify($1, $2)",
            [WEBHOOK_OUTBOX_CHANNEL.into(), HEARTBEAT_PAYLOAD.into()],
        );
        if let Err(e) = state.db.execute_raw(statement).await {
            tracing::debug!(error = %e, "the webhook wake-up heartbeat failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_heartbeat_is_one() {
        assert!(is_heartbeat(HEARTBEAT_PAYLOAD));
        for payload in [
            "",
            "dcs-heartbeat ",
            "DCS-HEARTBEAT",
            "{\"x\":1}",
            "héllo\u{0}",
        ] {
            assert!(!is_heartbeat(payload), "{payload:?}");
        }
    }
}
