//! What resolvers read from the request context.

use async_graphql::Context;

use crate::auth::Principal;
use crate::errors::ApiError;
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
