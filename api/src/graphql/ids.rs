//! The one parser of GraphQL `ID`s: every id the API hands out is a UUID,
//! and a malformed one is the caller's mistake, named after what it was
//! meant to identify.

use async_graphql::ID;
use uuid::Uuid;

use crate::errors::ApiError;

/// `what` names the kind of id in the message ("snapshot", "webhook
/// endpoint").
pub fn parse_id(id: &ID, what: &str) -> Result<Uuid, ApiError> {
    id.parse().map_err(|_| {
        // An id is 36 characters: a longer one is not repeated whole.
        let shown: String = id.as_str().chars().take(40).collect();
        let cut = if shown.len() < id.len() { "…" } else { "" };
        ApiError::bad_input(format!("\"{shown}{cut}\" is not a {what} id"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_id_is_bad_input_naming_what_it_was_for() {
        let id = Uuid::new_v4();
        assert_eq!(parse_id(&ID(id.to_string()), "snapshot").unwrap(), id);
        let error = parse_id(&ID("nope".into()), "webhook endpoint").unwrap_err();
        assert_eq!(error.message, "\"nope\" is not a webhook endpoint id");
        let error = parse_id(&ID("x".repeat(100_000)), "snapshot").unwrap_err();
        assert!(error.message.len() < 100, "{}", error.message);
    }
}
