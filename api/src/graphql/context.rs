//! What resolvers read from the request context.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_graphql::Context;
use tokio::time::Instant;

use crate::auth::Principal;
use crate::errors::ApiError;
use crate::graphql::loaders::{RequestLoader, RequestLoaders};
use crate::service::audit;
use crate::state::AppState;

/// The outcome of authenticating a request, put into its context by the
/// HTTP or WebSocket layer.
#[derive(Debug, Clone)]
pub enum Caller {
    Authenticated(Principal),
    /// A token was presented and refused: why.
    Refused(String),
    Anonymous,
}

/// When a GraphQL request over HTTP is stopped, put into its context by
/// the HTTP layer. The same for almost every field; a resolver that waits
/// on an agent (`previewSnapshot`, whose agent walks a whole desktop) may
/// move it later, by a bound of its own.
#[derive(Debug, Clone)]
pub struct RequestDeadline(Arc<Mutex<Instant>>);

impl RequestDeadline {
    pub fn after(budget: Duration) -> Self {
        Self(Arc::new(Mutex::new(Instant::now() + budget)))
    }

    pub fn at(&self) -> Instant {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Gives the request at least `budget` from now; never earlier.
    pub fn extend(&self, budget: Duration) {
        let mut at = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *at = (*at).max(Instant::now() + budget);
    }

    /// Resolves once the deadline has passed, following any extension.
    pub async fn passed(&self) {
        loop {
            let at = self.at();
            tokio::time::sleep_until(at).await;
            if self.at() <= Instant::now() {
                return;
            }
        }
    }
}

/// Gives the request at least `budget` from now, when it has a deadline
/// (GraphQL over WebSocket has none: its operations end with the socket).
pub fn extend_deadline(ctx: &Context<'_>, budget: Duration) {
    if let Some(deadline) = ctx.data_opt::<RequestDeadline>() {
        deadline.extend(budget);
    }
}

/// The authenticated caller, or `UNAUTHENTICATED`.
pub fn principal<'a>(ctx: &'a Context<'_>) -> Result<&'a Principal, ApiError> {
    match ctx.data_opt::<Caller>() {
        Some(Caller::Authenticated(p)) => Ok(p),
        Some(Caller::Refused(why)) => Err(ApiError::unauthenticated(why.clone())),
        _ => Err(ApiError::unauthenticated(
            "a bearer token is required (Authorization header, or connection_init payload)",
        )),
    }
}

/// The shared state; present in every schema built by `build_schema`.
pub fn state<'a>(ctx: &'a Context<'_>) -> Result<&'a AppState, ApiError> {
    ctx.data_opt::<AppState>()
        .ok_or_else(|| ApiError::unavailable("the service is starting"))
}

/// The request's loader of type `T`, made on first use from the
/// [`RequestLoaders`] the HTTP layer puts into every request
/// (`http/data.rs`). Missing, it is the server's fault, not the caller's:
/// an internal error with its code, where `ctx.data` would report a
/// codeless one.
pub fn loader<'a, T: RequestLoader>(ctx: &'a Context<'_>) -> Result<&'a T, ApiError> {
    ctx.data_opt::<RequestLoaders>()
        .map(|loaders| loaders.get::<T>())
        .ok_or_else(|| {
            ApiError::internal(
                "the DataLoaders are missing from the request context",
                &std::any::type_name::<T>(),
            )
        })
}

/// The authenticated caller of an audited action. A refused or anonymous
/// caller is recorded in the audit log (`action` on a `target_kind`, with
/// `detail`) before the refusal is returned.
pub async fn audited_principal<'a>(
    ctx: &'a Context<'_>,
    action: &str,
    target_kind: &str,
    detail: serde_json::Value,
) -> Result<&'a Principal, ApiError> {
    match principal(ctx) {
        Ok(who) => Ok(who),
        Err(refused) => {
            audit::record_unauthenticated(
                &state(ctx)?.db,
                action,
                target_kind,
                &refused.message,
                detail,
            )
            .await;
            Err(refused)
        }
    }
}

#[cfg(test)]
mod tests {
    use async_graphql::{EmptyMutation, EmptySubscription, Object, Schema};

    use super::*;

    struct Query;

    #[Object]
    impl Query {
        async fn needs_loader(&self, ctx: &Context<'_>) -> async_graphql::Result<u32> {
            loader::<crate::graphql::loaders::SnapshotsById>(ctx)?;
            Ok(1)
        }
    }

    /// A loader missing from the context is the server's fault: INTERNAL,
    /// not a codeless error a client would take for its own.
    #[tokio::test]
    async fn a_missing_loader_is_an_internal_error_with_its_code() {
        let schema = Schema::new(Query, EmptyMutation, EmptySubscription);
        let response = schema.execute("{ needsLoader }").await;
        let error = &response.errors[0];
        let code = error.extensions.as_ref().and_then(|e| e.get("code"));
        assert_eq!(code, Some(&async_graphql::Value::from("INTERNAL")));
        assert_eq!(error.message, "internal error; it has been logged");
    }

    #[tokio::test]
    async fn a_deadline_moves_only_later_and_passes_at_its_last_value() {
        let ms = Duration::from_millis;
        let started = Instant::now();
        let deadline = RequestDeadline::after(ms(200));
        let first = deadline.at();
        deadline.extend(ms(10));
        assert_eq!(deadline.at(), first, "never earlier");
        let waiter = tokio::spawn({
            let deadline = deadline.clone();
            async move { deadline.passed().await }
        });
        tokio::time::sleep(ms(100)).await;
        // Moved while someone waits for the old value.
        deadline.extend(ms(400));
        waiter.await.unwrap();
        let waited = started.elapsed();
        assert!(waited >= ms(500), "passed after {waited:?}");
        assert!(waited < ms(3000), "passed after {waited:?}");
    }
}
