//! Persisted query requests as Apollo clients send them: the hash of a
//! query's text in `extensions.persistedQuery`, with or without the text.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The SHA-256 of `query`, 64 lower-case hex digits.
pub fn sha256_hex(query: &str) -> String {
    hex::encode(Sha256::digest(query.as_bytes()))
}

/// `{"version": 1, "sha256Hash": <hash of query>}`.
pub fn extension(query: &str) -> Value {
    json!({"version": 1, "sha256Hash": sha256_hex(query)})
}

/// A POST body naming `query` by its hash alone (what a client tries first).
pub fn by_hash(query: &str) -> Value {
    json!({"extensions": {"persistedQuery": extension(query)}})
}

/// A POST body with `query`'s text and its hash (what a client sends after
/// `PERSISTED_QUERY_NOT_FOUND`).
pub fn in_full(query: &str) -> Value {
    json!({"query": query, "extensions": {"persistedQuery": extension(query)}})
}

/// The query-string parameters of a GET naming `query` by its hash alone.
pub fn get_by_hash(query: &str) -> Vec<(&'static str, String)> {
    vec![(
        "extensions",
        json!({"persistedQuery": extension(query)}).to_string(),
    )]
}
