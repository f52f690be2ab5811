//! The persisted query manifest read at start-up, in Apollo's format:
//!
//! ```json
//! {"format": "apollo-persisted-query-manifest", "version": 1,
//!  "operations": [{"id": "<sha256 of body>", "name": "Me", "type": "query",
//!                  "body": "query Me { me { sub } }"}]}
//! ```
//!
//! Every operation is checked before anything is registered: its id must
//! be the SHA-256 of its body, the body one GraphQL operation of its type
//! (with any fragments it uses), at most the largest stored query. A bad
//! manifest stops the server's start with a sentence naming the operation.

use std::path::Path;

use async_graphql::parser::types::OperationType;
use serde::Deserialize;

use super::hash::QueryHash;
use super::store::Registration;

const FORMAT: &str = "apollo-persisted-query-manifest";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("cannot read {path}: {error}")]
    Unreadable { path: String, error: String },
    #[error("not a persisted query manifest: {0}")]
    Malformed(String),
    #[error("operation {index} ({name:?}): {problem}")]
    BadOperation {
        index: usize,
        name: String,
        problem: String,
    },
}

#[derive(Deserialize)]
struct Manifest {
    format: String,
    version: u64,
    operations: Vec<Operation>,
}

/// Apollo's generator writes these four fields; others (a client name,
/// say) are ignored.
#[derive(Deserialize)]
struct Operation {
    id: String,
    name: String,
    #[serde(rename = "type")]
    kind: String,
    body: String,
}

/// The manifest at `path`, checked.
pub fn read(path: &Path, max_query_bytes: usize) -> Result<Vec<Registration>, ManifestError> {
    let text = std::fs::read_to_string(path).map_err(|e| ManifestError::Unreadable {
        path: path.display().to_string(),
        error: e.to_string(),
    })?;
    parse(&text, max_query_bytes)
}

/// A manifest's text, checked; duplicates (same id) are registered once.
pub fn parse(text: &str, max_query_bytes: usize) -> Result<Vec<Registration>, ManifestError> {
    let manifest: Manifest =
        serde_json::from_str(text).map_err(|e| ManifestError::Malformed(e.to_string()))?;
    if manifest.format != FORMAT {
        return Err(ManifestError::Malformed(format!(
            "\"format\" is {:?}, expected {FORMAT:?}",
            manifest.format
        )));
    }
    if manifest.version != 1 {
        return Err(ManifestError::Malformed(format!(
            "\"version\" is {}, this server reads version 1",
            manifest.version
        )));
    }
    let mut registrations: Vec<Registration> = Vec::with_capacity(manifest.operations.len());
    let mut seen = std::collections::HashSet::new();
    for (index, operation) in manifest.operations.into_iter().enumerate() {
        let bad = |problem: String| ManifestError::BadOperation {
            index,
            name: operation.name.clone(),
            problem,
        };
        let registration = check(&operation, max_query_bytes).map_err(bad)?;
        if seen.insert(registration.hash) {
            registrations.push(registration);
        }
    }
    Ok(registrations)
}

fn check(operation: &Operation, max_query_bytes: usize) -> Result<Registration, String> {
    let Some(hash) = QueryHash::parse(&operation.id) else {
        return Err("\"id\" is not 64 hex digits".into());
    };
    if operation.name.trim().is_empty() {
        return Err("\"name\" is empty".into());
    }
    let kind = match operation.kind.as_str() {
        "query" => OperationType::Query,
        "mutation" => OperationType::Mutation,
        "subscription" => OperationType::Subscription,
        other => {
            return Err(format!(
                "\"type\" is {other:?}, expected query, mutation or subscription"
            ));
        }
    };
    if operation.body.len() > max_query_bytes {
        return Err(format!(
            "the body is {} bytes, more than the largest stored query ({max_query_bytes}; \
             --persisted-query-max-bytes)",
            operation.body.len()
        ));
    }
    let actual = QueryHash::of(&operation.body);
    if actual != hash {
        return Err(format!(
            "\"id\" is not the SHA-256 of the body (the body's is {actual})"
        ));
    }
    let found = operation_types(&operation.body)?;
    if found != [kind] {
        return Err(format!(
            "the body must hold one {} operation, it holds {found:?}",
            operation.kind
        ));
    }
    Ok(Registration {
        hash,
        name: operation.name.clone(),
        query: operation.body.clone(),
    })
}

/// The types of a document's operations, or the parser's sentence.
pub fn operation_types(
    document: &str,
) -> Result<Vec<async_graphql::parser::types::OperationType>, String> {
    let parsed = async_graphql::parser::parse_query(document).map_err(|e| e.to_string())?;
    Ok(parsed.operations.iter().map(|(_, op)| op.node.ty).collect())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn manifest(operations: serde_json::Value) -> String {
        json!({"format": FORMAT, "version": 1, "operations": operations}).to_string()
    }

    fn operation(name: &str, kind: &str, body: &str) -> serde_json::Value {
        json!({"id": QueryHash::of(body).to_hex(), "name": name, "type": kind, "body": body})
    }

    #[test]
    fn a_good_manifest_registers_each_operation_once() {
        let me = "query Me { me { sub } }";
        let text = manifest(json!([
            operation("Me", "query", me),
            operation(
                "Events",
                "subscription",
                "subscription Events { snapshotEvents { snapshotId } } "
            ),
            operation(
                "Cancel",
                "mutation",
                "mutation Cancel($id: ID!) { cancelSnapshot(id: $id) { ...S } } fragment S on Snapshot { id }"
            ),
            operation("MeAgain", "query", me),
        ]));
        let registrations = parse(&text, 64 * 1024).unwrap();
        assert_eq!(registrations.len(), 3);
        assert_eq!(registrations[0].hash, QueryHash::of(me));
        assert_eq!(registrations[0].name, "Me");
        assert_eq!(registrations[0].query, me);
    }

    #[test]
    fn every_kind_of_bad_manifest_is_named() {
        let me = "query Me { me { sub } }";
        let mut wrong_id = operation("Me", "query", me);
        wrong_id["id"] = json!(QueryHash::of("query Other { me { sub } }").to_hex());
        let mut short_id = operation("Me", "query", me);
        short_id["id"] = json!("abc");
        let cases: Vec<(String, &str)> = vec![
            ("not json".into(), "not a persisted query manifest"),
            ("[]".into(), "not a persisted query manifest"),
            (
                json!({"format": "other", "version": 1, "operations": []}).to_string(),
                "\"format\" is \"other\"",
            ),
            (
                json!({"format": FORMAT, "version": 2, "operations": []}).to_string(),
                "\"version\" is 2",
            ),
            (
                json!({"format": FORMAT, "version": 1}).to_string(),
                "missing field `operations`",
            ),
            (
                manifest(json!([wrong_id])),
                "is not the SHA-256 of the body",
            ),
            (manifest(json!([short_id])), "not 64 hex digits"),
            (
                manifest(json!([operation("Me", "fetch", me)])),
                "\"type\" is \"fetch\"",
            ),
            (
                manifest(json!([operation("Me", "mutation", me)])),
                "one mutation operation",
            ),
            (
                manifest(json!([operation("", "query", me)])),
                "\"name\" is empty",
            ),
            (
                manifest(json!([operation("X", "query", "query {")])),
                "operation 0 (\"X\")",
            ),
            (
                manifest(json!([operation(
                    "Two",
                    "query",
                    "query A { me { sub } } query B { me { sub } }"
                )])),
                "one query operation",
            ),
            (
                manifest(json!([operation(
                    "Big",
                    "query",
                    &format!("query Big {{ me {{ sub }} }} #{}", "x".repeat(100))
                )])),
                "more than the largest stored query",
            ),
            (
                manifest(json!([operation("Me", "query", me), {"id": 1}])),
                "not a persisted query manifest",
            ),
        ];
        for (text, expected) in cases {
            let error = parse(&text, 100).expect_err(&text).to_string();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn an_unreadable_file_says_which() {
        let error = read(Path::new("/nonexistent/manifest.json"), 100).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("cannot read /nonexistent/manifest.json")
        );
    }
}
