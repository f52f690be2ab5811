//! HTTP: `/graphql` (POST requests, GET queries, GraphiQL on a plain GET,
//! WebSocket subscriptions with `graphql-transport-ws`), health, metrics,
//! the agents' endpoints, and the speaker console (`crate::console`).
//!
//! Every GraphQL request, over POST, GET or a WebSocket, passes the
//! persisted query gate (`crate::persisted`) before it is parsed.
//!
//! Every request is bounded (see `limits`): body size on every endpoint,
//! a deadline for each GraphQL request after which its work is dropped
//! (database statements included), and per-connection limits on
//! WebSockets (`ws`). Every refusal is JSON with a code.

mod data;
mod get;
mod limits;
mod parse_cache;
mod request_span;
mod scope;
mod ws;

use std::sync::Arc;
use std::time::Duration;

use std::str::FromStr as _;

use async_graphql::http::{ALL_WEBSOCKET_PROTOCOLS, WebSocketProtocols};
use async_graphql_axum::GraphQLResponse;
use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Request, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower_http::trace::TraceLayer;
use tracing::Instrument as _;

pub use self::limits::error_response;
pub use self::scope::TaskScope;
pub use self::ws::WsLimits;
use crate::auth::review_limit::ReviewLimiter;
use crate::errors::Code;
use crate::graphql::ApiSchema;
use crate::graphql::context::{Caller, RequestDeadline};
use crate::persisted::{Admitted, Refusal};
use crate::state::AppState;

/// What one request may cost.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Largest request body on any endpoint but the agents' events.
    pub max_body_bytes: usize,
    /// Largest body of an agent's job event: a final event carries the
    /// scan report, up to a thousand findings with their paths.
    pub max_event_body_bytes: usize,
    /// A GraphQL request's work is dropped after this long.
    pub request_timeout: Duration,
    /// GraphQL queries and mutations executed at once; more wait for a
    /// turn (within their deadline). On a few cores, running every request
    /// of 200 clients at once costs more CPU per request (contention for
    /// the pool, caches, the scheduler) and so serves fewer in total.
    pub max_concurrent_requests: usize,
    pub ws: WsLimits,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            max_event_body_bytes: 32 * 1024 * 1024,
            request_timeout: Duration::from_secs(10),
            max_concurrent_requests: 32,
            ws: WsLimits::default(),
        }
    }
}

#[derive(Clone)]
pub struct HttpState {
    pub app: AppState,
    pub schema: ApiSchema,
    pub limits: HttpLimits,
    /// Turns for GraphQL requests (`HttpLimits::max_concurrent_requests`).
    pub turns: Arc<tokio::sync::Semaphore>,
    /// Parsed documents of recently seen short query texts.
    parsed: Arc<parse_cache::ParseCache>,
}

impl std::fmt::Debug for HttpState {
    // The schema has no Debug; the limits say how this server is set up.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpState")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl axum::extract::FromRef<HttpState> for AppState {
    fn from_ref(state: &HttpState) -> AppState {
        state.app.clone()
    }
}

/// The API's router with default limits, `/metrics` included.
pub fn router(app: AppState, schema: ApiSchema) -> Router {
    router_with(app, schema, HttpLimits::default(), true)
}

/// The API's router; `/metrics` only if `with_metrics` (else it is served
/// on its own address by `metrics_router`).
pub fn router_with(
    app: AppState,
    schema: ApiSchema,
    limits: HttpLimits,
    with_metrics: bool,
) -> Router {
    let state = HttpState {
        app,
        schema,
        limits,
        turns: Arc::new(tokio::sync::Semaphore::new(
            limits.max_concurrent_requests.max(1),
        )),
        parsed: Arc::default(),
    };
    let mut router = Router::new()
        .route("/graphql", get(graphql_get).post(graphql_post))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready));
    if with_metrics {
        router = router.route("/metrics", get(metrics));
    }
    router
        .merge(crate::agent_api::router(limits.max_event_body_bytes).with_state(state.app.clone()))
        .merge(crate::console::router())
        .fallback(limits::not_found)
        .method_not_allowed_fallback(limits::method_not_allowed)
        // Unknown agent tokens are rate limited before TokenReview.
        .layer(axum::Extension(Arc::new(ReviewLimiter::default())))
        // For the `Json` extractors (agent endpoints) of chunked bodies.
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            limits::BodyLimits {
                default: limits.max_body_bytes,
                agent_events: limits.max_event_body_bytes,
            },
            limits::refuse_large_bodies,
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// `/metrics` alone, for a separate listen address (reachable only from
/// the monitoring namespace in the kustomize base).
pub fn metrics_router(app: AppState, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/metrics", get(metrics_only))
        .fallback(limits::not_found)
        .layer(axum::middleware::from_fn_with_state(
            limits::BodyLimits::uniform(max_body_bytes),
            limits::refuse_large_bodies,
        ))
        .with_state(app)
}

fn caller_from_token(app: &AppState, token: Option<&str>) -> Caller {
    match token {
        None => Caller::Anonymous,
        Some(token) => match app.verifier.verify(token) {
            Ok(principal) => Caller::Authenticated(principal),
            Err(e) => Caller::Refused(e.message),
        },
    }
}

fn caller_from_headers(app: &AppState, headers: &HeaderMap) -> Caller {
    let header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match header {
        None => Caller::Anonymous,
        Some(value) => match crate::auth::bearer(value) {
            Some(token) => caller_from_token(app, Some(token)),
            None => Caller::Refused("the Authorization header must be \"Bearer <token>\"".into()),
        },
    }
}

fn refuse(status: StatusCode, code: Code, message: &str) -> Response {
    limits::error_response("/graphql", status, code, message)
}

/// The one GraphQL request of a POST body. Only JSON: multipart (file
/// uploads, which this schema has none of) and batches are refused, so
/// neither can multiply what one request costs.
async fn parse_request(
    headers: &HeaderMap,
    body: axum::body::Body,
    limit: usize,
) -> Result<async_graphql::Request, Response> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_ascii_lowercase();
    if !content_type.contains("json") {
        return Err(refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Code::BadUserInput,
            "send the GraphQL request as application/json (multipart and forms are not accepted)",
        ));
    }
    let bytes = limits::read_body(body, limit)
        .await
        .map_err(|e| limits::body_error("/graphql", e, limit))?;
    let bad = |why: String| refuse(StatusCode::BAD_REQUEST, Code::BadUserInput, &why);
    if bytes.trim_ascii_start().starts_with(b"[") {
        return Err(bad(
            "batched requests are not accepted: send one request per POST".into(),
        ));
    }
    serde_json::from_slice::<async_graphql::Request>(&bytes)
        .map_err(|e| bad(format!("the body is not a GraphQL request: {e}")))
}

async fn graphql_post(State(state): State<HttpState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let caller = caller_from_headers(&state.app, &parts.headers);
    let request = match parse_request(&parts.headers, body, state.limits.max_body_bytes).await {
        Ok(request) => request,
        Err(response) => return response,
    };
    run(&state, caller, request, Method::Post).await
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Post,
    /// Queries only (`get::is_query`).
    Get,
}

/// A refusal of the persisted query gate, as GraphQL errors are answered.
fn refusal_response(refusal: &Refusal) -> Response {
    refuse(refusal.status(), refusal.code, &refusal.message)
}

/// Runs one GraphQL request: the persisted query gate, then the schema,
/// within the request's deadline and a turn.
async fn run(
    state: &HttpState,
    caller: Caller,
    mut request: async_graphql::Request,
    method: Method,
) -> Response {
    let scope = TaskScope::default();
    // Dropped when this handler ends, however it ends: at the deadline,
    // or when hyper drops it because the client went away.
    let _guard = scope.guard();
    let started = tokio::time::Instant::now();
    let deadline = RequestDeadline::after(state.limits.request_timeout);
    let span = request_span::start();
    let execute = async {
        // Only requests that use the protocol pay for the conversion.
        let extension = request
            .extensions
            .get("persistedQuery")
            .map(|value| value.clone().into_json().unwrap_or_default());
        let admitted = state
            .app
            .persisted
            .admit(&request.query, extension.as_ref(), data::requester(&caller))
            .await
            .map_err(|refusal| refusal_response(&refusal))?;
        if let Admitted::Stored(text) = admitted {
            request.query = text.to_string();
        }
        if method == Method::Get && !get::is_query(&mut request) {
            return Err(refuse(
                StatusCode::METHOD_NOT_ALLOWED,
                Code::BadUserInput,
                get::QUERIES_ONLY,
            ));
        }
        request.data = data::request_data(&state.app, caller, &scope);
        request.data.insert(deadline.clone());
        // Never closed, so the permit is always granted in the end.
        let _turn = state.turns.acquire().await;
        state.parsed.prepare(&mut request);
        request_span::name_after_operation(&mut request);
        let response = state.schema.execute(request).await;
        if response.is_err() {
            request_span::failed();
        }
        Ok::<_, Response>(response)
    }
    .instrument(span.clone());
    let outcome = tokio::select! {
        response = execute => Some(response),
        () = deadline.passed() => None,
    };
    let mut response = match outcome {
        Some(Ok(response)) => response,
        Some(Err(refused)) => {
            span.in_scope(request_span::failed);
            return refused;
        }
        None => {
            span.in_scope(request_span::failed);
            // Whole milliseconds: the deadline was set a moment after `started`.
            let allowed = Duration::from_millis(
                deadline.at().saturating_duration_since(started).as_millis() as u64,
            );
            tracing::warn!(
                deadline_ms = allowed.as_millis() as u64,
                "GraphQL request stopped at its deadline"
            );
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                Code::Timeout,
                &format!(
                    "the request took longer than its deadline ({} s) and was stopped",
                    allowed.as_secs_f64()
                ),
            );
        }
    };
    // Errors of our resolvers carry a code; those async-graphql raises
    // itself (parse, validation, depth and complexity limits) are the
    // client's: give them one too, so every error has a code.
    for error in &mut response.errors {
        let has_code = error
            .extensions
            .as_ref()
            .is_some_and(|e| e.get("code").is_some());
        if !has_code {
            error
                .extensions
                .get_or_insert_with(Default::default)
                .set("code", "BAD_USER_INPUT");
        }
    }
    GraphQLResponse::from(response).into_response()
}

/// A query in the query string; a WebSocket for subscriptions; else
/// GraphiQL for a browser. (In registered-only mode GraphiQL still loads,
/// but what it sends is refused unless its headers carry an admin's
/// token: its introspection query and every query typed into it are not
/// registered.)
async fn graphql_get(State(state): State<HttpState>, request: Request) -> Response {
    let is_upgrade = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if !is_upgrade {
        return match get::request(request.uri()) {
            Some(Ok(graphql)) => {
                let caller = caller_from_headers(&state.app, request.headers());
                run(&state, caller, graphql, Method::Get).await
            }
            Some(Err(why)) => refuse(StatusCode::BAD_REQUEST, Code::BadUserInput, &why),
            None => crate::console::graphiql_page(),
        };
    }
    let (mut parts, _body) = request.into_parts();
    // The first subprotocol the client offers that async-graphql speaks.
    let protocol = parts
        .headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .and_then(|offered| {
            offered
                .split(',')
                .find_map(|p| WebSocketProtocols::from_str(p.trim()).ok())
        });
    let Some(protocol) = protocol else {
        return refuse(
            StatusCode::BAD_REQUEST,
            Code::BadUserInput,
            "unknown WebSocket subprotocol (use graphql-transport-ws)",
        );
    };
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
        Ok(u) => u,
        Err(e) => {
            return refuse(e.status(), Code::BadUserInput, &e.body_text());
        }
    };
    let schema = state.schema.clone();
    let app = state.app.clone();
    let limits = state.limits.ws;
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .max_message_size(limits.max_message_bytes)
        .max_frame_size(limits.max_message_bytes)
        .on_upgrade(move |socket| ws::serve(socket, schema, protocol, app, limits))
}

/// How long `/readyz` waits for the database: under the Deployment's probe
/// timeout (3 s), so that an outage is reported as one. Without a bound the
/// check would wait for the pool's acquire timeout, which keeps retrying
/// the connection, and a short outage would never be seen.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

async fn ready(State(state): State<HttpState>) -> Response {
    match tokio::time::timeout(READY_TIMEOUT, state.app.db.ping()).await {
        Ok(Ok(())) => "ready".into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "database not reachable");
            (StatusCode::SERVICE_UNAVAILABLE, "database not reachable").into_response()
        }
        Err(_) => {
            tracing::warn!("database did not answer the readiness check in time");
            (StatusCode::SERVICE_UNAVAILABLE, "database not answering").into_response()
        }
    }
}

async fn metrics(State(state): State<HttpState>) -> Response {
    metrics_only(State(state.app)).await
}

async fn metrics_only(State(app): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.encode(),
    )
        .into_response()
}
