//! HTTP: `/graphql` (POST queries, GraphiQL on GET, WebSocket subscriptions
//! with `graphql-transport-ws`), health, metrics, and the agents' endpoints.

use async_graphql::dataloader::{DataLoader, HashMapCache};
use async_graphql::http::{ALL_WEBSOCKET_PROTOCOLS, GraphiQLSource};
use async_graphql::{Data, Request as GraphQLRequest};
use async_graphql_axum::{
    GraphQLProtocol, GraphQLRequest as AxumGraphQLRequest, GraphQLResponse, GraphQLWebSocket,
};
use axum::Router;
use axum::extract::{FromRequestParts, Request, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use tower_http::trace::TraceLayer;

use crate::graphql::ApiSchema;
use crate::graphql::context::Caller;
use crate::graphql::loaders::{ChildrenLoader, SnapshotLoader};
use crate::state::AppState;

/// How long a DataLoader gathers keys before it queries: long enough that
/// the rows of one list land in one batch even on a busy machine.
const LOADER_DELAY: std::time::Duration = std::time::Duration::from_millis(5);

#[derive(Clone)]
pub struct HttpState {
    pub app: AppState,
    pub schema: ApiSchema,
}

impl axum::extract::FromRef<HttpState> for AppState {
    fn from_ref(state: &HttpState) -> AppState {
        state.app.clone()
    }
}

pub fn router(app: AppState, schema: ApiSchema) -> Router {
    let state = HttpState { app, schema };
    Router::new()
        .route("/graphql", get(graphql_get).post(graphql_post))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .merge(crate::agent_api::router().with_state(state.app.clone()))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Per-request data: the caller and fresh DataLoaders.
fn request_data(app: &AppState, caller: Caller) -> Data {
    let mut data = Data::default();
    data.insert(caller);
    // Cached: a list query feeds them what it already read (see
    // `snapshots`), and lineage walks reuse what earlier rows loaded.
    data.insert(
        DataLoader::with_cache(
            SnapshotLoader(app.clone()),
            tokio::spawn,
            HashMapCache::default(),
        )
        .delay(LOADER_DELAY),
    );
    data.insert(
        DataLoader::with_cache(
            ChildrenLoader(app.clone()),
            tokio::spawn,
            HashMapCache::default(),
        )
        .delay(LOADER_DELAY),
    );
    data
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

async fn graphql_post(
    State(state): State<HttpState>,
    headers: HeaderMap,
    request: AxumGraphQLRequest,
) -> GraphQLResponse {
    let caller = caller_from_headers(&state.app, &headers);
    let mut request: GraphQLRequest = request.into_inner();
    request.data = request_data(&state.app, caller);
    let mut response = state.schema.execute(request).await;
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
    response.into()
}

/// GraphiQL for a browser; a WebSocket for subscriptions.
async fn graphql_get(State(state): State<HttpState>, request: Request) -> Response {
    let is_upgrade = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if !is_upgrade {
        return Html(
            GraphiQLSource::build()
                .endpoint("/graphql")
                .subscription_endpoint("/graphql")
                .finish(),
        )
        .into_response();
    }
    let (mut parts, _body) = request.into_parts();
    let protocol = match GraphQLProtocol::from_request_parts(&mut parts, &state).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    let schema = state.schema.clone();
    let app = state.app.clone();
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |stream| {
            GraphQLWebSocket::new(stream, schema, protocol)
                .on_connection_init(move |payload| async move {
                    // `{"Authorization": "Bearer ..."}` or `{"token": "..."}`.
                    let token = payload
                        .get("Authorization")
                        .or_else(|| payload.get("authorization"))
                        .and_then(|v| v.as_str())
                        .and_then(crate::auth::bearer)
                        .or_else(|| payload.get("token").and_then(|v| v.as_str()))
                        .map(str::to_string);
                    match caller_from_token(&app, token.as_deref()) {
                        Caller::Authenticated(p) => {
                            Ok(request_data(&app, Caller::Authenticated(p)))
                        }
                        Caller::Refused(why) => Err(async_graphql::Error::new(why)),
                        Caller::Anonymous => Err(async_graphql::Error::new(
                            "a bearer token is required in the connection_init payload",
                        )),
                    }
                })
                .serve()
        })
}

async fn ready(State(state): State<HttpState>) -> Response {
    match state.app.db.ping().await {
        Ok(()) => "ready".into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "database not reachable");
            (StatusCode::SERVICE_UNAVAILABLE, "database not reachable").into_response()
        }
    }
}

async fn metrics(State(state): State<HttpState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.app.metrics.encode(),
    )
        .into_response()
}
