//! Reading `extensions.persistedQuery`, `{"version": 1, "sha256Hash": "..."}`.
//! Everything else a client may put there is refused with a sentence; the
//! sentence never echoes the value (it may be megabytes long).

use serde_json::Value;

use super::hash::QueryHash;
use super::refusal::Refusal;

/// The only version of the protocol (Apollo's).
const VERSION: u64 = 1;

const SHAPE: &str =
    "extensions.persistedQuery must be {\"version\": 1, \"sha256Hash\": \"<64 hex digits>\"}";

/// The hash a request names, or why its extension is malformed.
pub(super) fn read(extension: &Value) -> Result<QueryHash, Refusal> {
    let Some(fields) = extension.as_object() else {
        return Err(Refusal::invalid(SHAPE));
    };
    match fields.get("version").map(Value::as_u64) {
        Some(Some(VERSION)) => {}
        Some(Some(other)) => {
            return Err(Refusal::invalid(format!(
                "persisted query version {other} is not supported; this server speaks version {VERSION}"
            )));
        }
        _ => return Err(Refusal::invalid(SHAPE)),
    }
    let Some(text) = fields.get("sha256Hash").and_then(Value::as_str) else {
        return Err(Refusal::invalid(SHAPE));
    };
    QueryHash::parse(text).ok_or_else(|| {
        Refusal::invalid("extensions.persistedQuery.sha256Hash must be 64 hex digits")
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::errors::Code;

    #[test]
    fn the_hash_of_a_well_formed_extension() {
        let hash = QueryHash::of("{ me { sub } }");
        let extension = json!({"version": 1, "sha256Hash": hash.to_hex()});
        assert_eq!(read(&extension).unwrap(), hash);
    }

    #[test]
    fn malformed_extensions_are_refused_with_a_code_and_without_their_value() {
        let long = "f".repeat(1_000_000);
        let good = QueryHash::of("q").to_hex();
        for extension in [
            json!("sha256"),
            json!(1),
            json!(null),
            json!([{"version": 1, "sha256Hash": good}]),
            json!({}),
            json!({"version": 1}),
            json!({"sha256Hash": good}),
            json!({"version": "1", "sha256Hash": good}),
            json!({"version": -1, "sha256Hash": good}),
            json!({"version": 1.5, "sha256Hash": good}),
            json!({"version": 2, "sha256Hash": good}),
            json!({"version": 1, "sha256Hash": 12}),
            json!({"version": 1, "sha256Hash": {"a": 1}}),
            json!({"version": 1, "sha256Hash": "abc"}),
            json!({"version": 1, "sha256Hash": long}),
            json!({"version": 1, "sha256Hash": "z".repeat(64)}),
        ] {
            let refusal = read(&extension)
                .expect_err(&extension.to_string()[..40.min(extension.to_string().len())]);
            assert_eq!(refusal.code, Code::BadUserInput);
            assert!(refusal.message.len() < 200, "{}", refusal.message);
        }
        let version = read(&json!({"version": 2, "sha256Hash": good})).unwrap_err();
        assert!(
            version.message.contains("version 2 is not supported"),
            "{}",
            version.message
        );
    }
}
