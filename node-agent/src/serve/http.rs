//! The agent's HTTP endpoints. Every endpoint, health checks included,
//! answers an unauthenticated request with 401 and nothing else: only the
//! API (a token signed with the shared secret, for this node) gets through.
//!
//! `POST /v1/preview` answers a `Preview` (200), or: 400 `BAD_USER_INPUT`
//! (malformed body, bad exclude), 413 `PAYLOAD_TOO_LARGE` (over axum's 2 MB
//! body limit), 404 `NOT_FOUND` (no such container), 422
//! `UNSUPPORTED_SNAPSHOTTER` (not one overlay upper directory), 429
//! `RATE_LIMITED` (more than `PREVIEWS_AT_ONCE` running), 503 `UNAVAILABLE`
//! (shutting down), 500 `INTERNAL`.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use dcs_protocol::token::{AGENT_AUDIENCE, API_ISSUER, SharedSecret};
use dcs_protocol::{JobRequest, PreviewRequest, agent_paths};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::jobs::{Jobs, SubmitError};
use super::metrics::Metrics;
use crate::containerd::Containerd;

#[derive(Clone)]
pub(super) struct AppState {
    pub jobs: Jobs,
    pub secret: SharedSecret,
    pub node: String,
    pub containerd: Containerd,
    pub metrics: Arc<Metrics>,
    /// Cancelled when the agent stops taking jobs.
    pub accepting: CancellationToken,
    /// In a cluster: checks the API's service-account tokens.
    pub reviewer: Option<Arc<super::kube_auth::ApiTokenReviewer>>,
    /// Previews running now, at most `PREVIEWS_AT_ONCE`.
    pub previews: Arc<tokio::sync::Semaphore>,
}

/// Previews that run at once on one agent: each is a walk of a desktop's
/// changes with reads of up to 1 MiB per text file, on the node's disks
/// and cores that the commits and the desktops need too. More are refused
/// (429) rather than queued: a speaker asking again sees fresh results.
pub(super) const PREVIEWS_AT_ONCE: usize = 2;

/// A preview names at most this many excludes of at most this many bytes
/// each (the API's own limits on a snapshot's excludes).
const MAX_EXCLUDES: usize = 64;
const MAX_EXCLUDE_BYTES: usize = 4096;

pub(super) fn router(state: AppState) -> Router {
    Router::new()
        .route(agent_paths::JOBS, post(submit_job))
        .route(agent_paths::PREVIEW, post(preview))
        .route(&format!("{}/{{id}}", agent_paths::JOBS), delete(cancel_job))
        .route(agent_paths::HEALTHZ, get(|| async { "ok" }))
        .route(agent_paths::READYZ, get(ready))
        .route(agent_paths::METRICS, get(metrics))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such endpoint") })
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .with_state(state)
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({"code": code, "message": message}))).into_response()
}

async fn authenticate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let mut allowed = token
        .and_then(|t| state.secret.verify(t, AGENT_AUDIENCE).ok())
        .is_some_and(|claims| claims.iss == API_ISSUER && claims.sub == state.node);
    if !allowed && let (Some(reviewer), Some(token)) = (&state.reviewer, token) {
        allowed = reviewer.is_api(token).await;
    }
    if !allowed {
        return error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "a valid API token for this node is required",
        );
    }
    next.run(request).await
}

async fn submit_job(
    State(state): State<AppState>,
    request: Result<Json<JobRequest>, JsonRejection>,
) -> Response {
    // A malformed body gets the same JSON error shape as everything else.
    let Json(request) = match request {
        Ok(request) => request,
        Err(rejection) => {
            return error(rejection.status(), "BAD_USER_INPUT", &rejection.body_text());
        }
    };
    match state.jobs.submit(request) {
        Ok(accepted) => (StatusCode::ACCEPTED, Json(accepted)).into_response(),
        Err(SubmitError::ShuttingDown) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            "the agent is shutting down",
        ),
        Err(SubmitError::BadRequest(message)) => {
            error(StatusCode::BAD_REQUEST, "BAD_USER_INPUT", &message)
        }
    }
}

#[tracing::instrument(skip_all, fields(container_id))]
async fn preview(
    State(state): State<AppState>,
    request: Result<Json<PreviewRequest>, JsonRejection>,
) -> Response {
    let Json(request) = match request {
        Ok(request) => request,
        // Too big is 413 (axum's body limit); anything else malformed, 400.
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return error(
                rejection.status(),
                "PAYLOAD_TOO_LARGE",
                &rejection.body_text(),
            );
        }
        Err(rejection) => {
            return error(
                StatusCode::BAD_REQUEST,
                "BAD_USER_INPUT",
                &rejection.body_text(),
            );
        }
    };
    tracing::Span::current().record("container_id", request.container_id.as_str());
    if request.container_id.is_empty()
        || request.excludes.len() > MAX_EXCLUDES
        || request.excludes.iter().any(|e| e.len() > MAX_EXCLUDE_BYTES)
    {
        return error(
            StatusCode::BAD_REQUEST,
            "BAD_USER_INPUT",
            &format!(
                "a preview names a container and at most {MAX_EXCLUDES} excludes of at most \
                 {MAX_EXCLUDE_BYTES} bytes"
            ),
        );
    }
    if state.accepting.is_cancelled() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            "the agent is shutting down",
        );
    }
    let Ok(_running) = state.previews.clone().try_acquire_owned() else {
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            "RATE_LIMITED",
            &format!("{PREVIEWS_AT_ONCE} previews are running on this node; ask again shortly"),
        );
    };
    let request = crate::preview::PreviewRequest {
        container_id: request.container_id,
        excludes: request.excludes,
        default_excludes: true,
    };
    // A client that goes away drops this future, which stops the walk.
    match crate::preview::preview(&state.containerd, &request).await {
        Ok(preview) => (StatusCode::OK, Json(preview)).into_response(),
        Err(e) if e.is_container_not_found() => {
            error(StatusCode::NOT_FOUND, "NOT_FOUND", &e.to_string())
        }
        Err(e) if e.is_unsupported() => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "UNSUPPORTED_SNAPSHOTTER",
            &e.to_string(),
        ),
        Err(crate::preview::PreviewError::Exclude(e)) => {
            error(StatusCode::BAD_REQUEST, "BAD_USER_INPUT", &e.to_string())
        }
        Err(e) => {
            tracing::warn!(error = %e, "preview failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                "the preview failed; the agent's log says why",
            )
        }
    }
}

async fn cancel_job(State(state): State<AppState>, Path(id): Path<Uuid>) -> Response {
    if state.jobs.cancel(id) {
        StatusCode::ACCEPTED.into_response()
    } else {
        error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "no such job on this agent",
        )
    }
}

async fn ready(State(state): State<AppState>) -> Response {
    if state.accepting.is_cancelled() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            "shutting down",
        );
    }
    match state.containerd.version().await {
        Ok(_) => "ready".into_response(),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            &e.to_string(),
        ),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}
