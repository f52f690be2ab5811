//! Reading GraphQL answers: an error's code, the ids of a list.

use serde_json::Value;

/// `extensions.code` of the first GraphQL error ("" when there is none).
pub fn error_code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_default()
}

/// The `id`s of a list of objects, sorted; fails the test if it is not a
/// list of objects with ids.
pub fn sorted_ids(list: &Value) -> Vec<String> {
    let mut ids: Vec<String> = list
        .as_array()
        .unwrap_or_else(|| panic!("a list: {list}"))
        .iter()
        .map(|item| {
            item["id"]
                .as_str()
                .unwrap_or_else(|| panic!("an id: {item}"))
                .to_string()
        })
        .collect();
    ids.sort();
    ids
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_first_errors_code_or_nothing() {
        let refused = json!({"errors": [{"message": "no", "extensions": {"code": "NOT_FOUND"}},
                                        {"extensions": {"code": "FORBIDDEN"}}]});
        assert_eq!(error_code(&refused), "NOT_FOUND");
        assert_eq!(error_code(&json!({"data": {}})), "");
        assert_eq!(error_code(&json!({"errors": [{"message": "no code"}]})), "");
    }

    #[test]
    fn ids_come_sorted() {
        let list = json!([{"id": "b"}, {"id": "a", "x": 1}, {"id": "c"}]);
        assert_eq!(sorted_ids(&list), ["a", "b", "c"]);
        assert!(sorted_ids(&json!([])).is_empty());
    }

    #[test]
    #[should_panic(expected = "a list")]
    fn a_missing_list_fails_the_test() {
        sorted_ids(&Value::Null);
    }
}
