//! Registering persisted queries: admins only, audited. What a registered
//! query allows is in `crate::persisted`.

use entity::persisted_query;
use serde_json::json;

use crate::auth::Principal;
use crate::errors::{ApiError, ApiResult};
use crate::persisted::{QueryHash, Registration};
use crate::service::audit;
use crate::state::AppState;

/// The longest name: an operation name, with room to spare.
const MAX_NAME: usize = 200;

#[derive(Debug)]
pub struct NewRegistration {
    pub name: String,
    pub query: String,
}

/// Registers `input.query` under its SHA-256; registering it again
/// changes only its name. Every attempt is audited with its outcome.
pub async fn register(
    state: &AppState,
    who: &Principal,
    input: NewRegistration,
) -> ApiResult<persisted_query::Model> {
    let hash = QueryHash::of(&input.query);
    let result = register_inner(state, who, &input, hash).await;
    let outcome = match &result {
        Ok(_) => "ok".to_string(),
        Err(e) => e.code.as_str().to_lowercase(),
    };
    audit::record(
        &state.db,
        who,
        "registerPersistedQuery",
        "persisted_query",
        Some(hash.to_hex()),
        &outcome,
        json!({"name": truncated(&input.name)}),
    )
    .await;
    result
}

async fn register_inner(
    state: &AppState,
    who: &Principal,
    input: &NewRegistration,
    hash: QueryHash,
) -> ApiResult<persisted_query::Model> {
    if !who.is_admin() {
        return Err(ApiError::forbidden(
            "only admins register persisted queries",
        ));
    }
    let name = input.name.trim();
    if name.is_empty() || name.len() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(ApiError::bad_input(format!(
            "the name must be 1 to {MAX_NAME} bytes without control characters"
        )));
    }
    let max = state.persisted.settings().max_query_bytes;
    if input.query.len() > max {
        return Err(ApiError::bad_input(format!(
            "the query is {} bytes, more than the largest stored query ({max})",
            input.query.len()
        )));
    }
    let operations = crate::persisted::operation_types(&input.query)
        .map_err(|e| ApiError::bad_input(format!("the query does not parse: {e}")))?;
    if operations.is_empty() {
        return Err(ApiError::bad_input("the query holds no operation"));
    }
    let registration = Registration {
        hash,
        name: name.to_string(),
        query: input.query.clone(),
    };
    let mut rows = state.persisted.register(&[registration], &who.sub).await?;
    rows.pop()
        .ok_or_else(|| ApiError::internal("registering a persisted query", &"no row returned"))
}

/// A name as the audit log keeps it: bounded, whatever was sent.
fn truncated(name: &str) -> String {
    name.chars().take(MAX_NAME).collect()
}
