//! The endpoints agents call: registration, heartbeats, inventory and job
//! events. Each request carries a token signed with the shared secret whose
//! subject is the agent's node; a body about another node is refused.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequestParts, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::routing::post;
use axum::{Json, Router};
use dcs_protocol::token::API_AUDIENCE;
use dcs_protocol::{Ack, Heartbeat, Inventory, JobEvent, Registration, api_paths};

use crate::errors::{ApiError, ApiResult};
use crate::service::{agent_events, containers, nodes};
use crate::state::AppState;

/// Issuer of agents' tokens.
pub const AGENT_ISSUER: &str = "dcs-agent";

/// An authenticated agent: the node its token names.
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
        // TokenReview, naming the node the agent's pod runs on.
        if let Some(kubernetes) = &state.kubernetes
            && let Some(node) = kubernetes.agent_node(token).await?
        {
            return Ok(Self(node));
        }
        Err(ApiError::unauthenticated("invalid agent token"))
    }
}

/// A malformed body, in the API's error shape.
fn bad_body(rejection: JsonRejection) -> ApiError {
    ApiError::bad_input(rejection.body_text())
}

fn same_node(agent: &AgentNode, node: &str) -> ApiResult<()> {
    if agent.0 == node {
        Ok(())
    } else {
        Err(ApiError::forbidden("the token is for another node"))
    }
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route(api_paths::REGISTER, post(register))
        .route(api_paths::HEARTBEAT, post(heartbeat))
        .route(api_paths::INVENTORY, post(inventory))
        .route(api_paths::EVENTS, post(event))
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

async fn event(
    State(state): State<AppState>,
    agent: AgentNode,
    body: Result<Json<JobEvent>, JsonRejection>,
) -> ApiResult<Json<Ack>> {
    let Json(body) = body.map_err(bad_body)?;
    same_node(&agent, &body.node)?;
    agent_events::apply(&state, &agent.0, body).await?;
    Ok(Json(Ack { known: true }))
}
