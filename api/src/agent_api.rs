//! The endpoints agents call: registration, heartbeats, inventory and job
//! events. Each request carries a token signed with the shared secret whose
//! subject is the agent's node; a body about another node is refused.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::post;
use axum::{Json, Router};
use dcs_protocol::token::{AGENT_ISSUER, API_AUDIENCE};
use dcs_protocol::{Ack, Heartbeat, Inventory, JobEvent, Registration, api_paths};
use dcs_support::trace_context;
use tracing::Instrument as _;

use crate::auth::review_limit::{Decision, ReviewLimiter};
use crate::errors::{ApiError, ApiResult, Code};
use crate::service::{agent_events, containers, nodes};
use crate::state::AppState;

/// An authenticated agent: the node its token names.
#[derive(Debug)]
pub struct AgentNode(pub String);

impl FromRequestParts<AppState> for AgentNode {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(crate::auth::bearer)
            .ok_or_else(|| ApiError::unauthenticated("an agent token is required"))?;
        if let Ok(claims) = state.agent_secret.verify(token, API_AUDIENCE)
            && claims.iss == AGENT_ISSUER
        {
            return Ok(Self(claims.sub));
        }
        // In a cluster: a projected service-account token, checked by
        // TokenReview, naming the node the agent's pod runs on. Unknown
        // tokens pass the limiter first: each one costs the API server a
        // review.
        if let Some(kubernetes) = &state.kubernetes {
            let limiter = parts.extensions.get::<Arc<ReviewLimiter>>().cloned();
            let client = parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip());
            match limiter.as_ref().map(|l| l.check(client, token)) {
                Some(Decision::Limited) => {
                    return Err(ApiError::new(
                        Code::RateLimited,
                        "too many unknown agent tokens; try again later",
                    ));
                }
                Some(Decision::RecentlyRefused) => {
                    return Err(ApiError::unauthenticated("invalid agent token"));
                }
                Some(Decision::Known | Decision::Review) | None => {}
            }
            let node = kubernetes.agent_node(token).await?;
            if let Some(limiter) = &limiter {
                limiter.reviewed(token, node.is_some());
            }
            if let Some(node) = node {
                return Ok(Self(node));
            }
        }
        Err(ApiError::unauthenticated("invalid agent token"))
    }
}

/// A malformed or oversized body, in the API's error shape.
fn bad_body(rejection: JsonRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(
            Code::PayloadTooLarge,
            "the request body is larger than the limit",
        );
    }
    ApiError::bad_input(rejection.body_text())
}

fn same_node(agent: &AgentNode, node: &str) -> ApiResult<()> {
    if agent.0 == node {
        Ok(())
    } else {
        Err(ApiError::forbidden("the token is for another node"))
    }
}

/// The agents' endpoints. Unknown service-account tokens are limited by
/// the `ReviewLimiter` in the requests' extensions (see `http::router`).
/// Job events may be up to `max_event_body_bytes` (a final event carries
/// the scan report); the other bodies keep the router's limit.
pub fn router(max_event_body_bytes: usize) -> Router<AppState> {
    Router::new()
        .route(api_paths::REGISTER, post(register))
        .route(api_paths::HEARTBEAT, post(heartbeat))
        .route(api_paths::INVENTORY, post(inventory))
        .route(
            api_paths::EVENTS,
            post(event).layer(DefaultBodyLimit::max(max_event_body_bytes)),
        )
}

async fn register(
    State(state): State<AppState>,
    agent: AgentNode,
    body: Result<Json<Registration>, JsonRejection>,
) -> ApiResult<Json<Ack>> {
    let Json(body) = body.map_err(bad_body)?;
    same_node(&agent, &body.node)?;
    nodes::register(&state, body).await?;
    Ok(Json(Ack { known: true }))
}

async fn heartbeat(
    State(state): State<AppState>,
    agent: AgentNode,
    body: Result<Json<Heartbeat>, JsonRejection>,
) -> ApiResult<Json<Ack>> {
    let Json(body) = body.map_err(bad_body)?;
    same_node(&agent, &body.node)?;
    Ok(Json(nodes::heartbeat(&state, body).await?))
}

async fn inventory(
    State(state): State<AppState>,
    agent: AgentNode,
    body: Result<Json<Inventory>, JsonRejection>,
) -> ApiResult<Json<Ack>> {
    let Json(body) = body.map_err(bad_body)?;
    same_node(&agent, &body.node)?;
    Ok(Json(containers::replace_inventory(&state, body).await?))
}

/// A job event, in a span that continues the agent's trace when its
/// `traceparent` header names one (one it cannot parse starts a new one).
async fn event(
    State(state): State<AppState>,
    agent: AgentNode,
    headers: HeaderMap,
    body: Result<Json<JobEvent>, JsonRejection>,
) -> ApiResult<Json<Ack>> {
    let Json(body) = body.map_err(bad_body)?;
    same_node(&agent, &body.node)?;
    let span = tracing::info_span!(
        "agent_event",
        snapshot_id = %body.snapshot_id,
        node = %agent.0,
        seq = body.seq
    );
    let traceparent = headers
        .get(trace_context::TRACEPARENT)
        .and_then(|v| v.to_str().ok());
    trace_context::set_remote_parent(&span, traceparent);
    agent_events::apply(&state, &agent.0, body)
        .instrument(span)
        .await?;
    Ok(Json(Ack { known: true }))
}
