//! Reading GraphQL answers: an error's code, the ids of a list, the nodes
//! of a page, an `Int64`.

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

/// The `node`s of a connection's `edges`, in order; fails the test if it
/// is not a connection.
pub fn page_nodes(connection: &Value) -> Vec<Value> {
    connection["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("a connection with edges: {connection}"))
        .iter()
        .map(|edge| edge["node"].clone())
        .collect()
}

/// The `node`s of a connection's `edges` as one JSON list, for answers
/// read like the plain lists they were.
pub fn page_list(connection: &Value) -> Value {
    Value::Array(page_nodes(connection))
}

/// An `Int64` of an answer (a string of decimal digits); fails the test on
/// anything else, a JSON number included: the schema promises a string.
pub fn int64(value: &Value) -> i64 {
    value
        .as_str()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| panic!("an Int64 (a string of digits): {value}"))
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
    fn pages_give_their_nodes_and_int64s_their_number() {
        let page = json!({"edges": [{"cursor": "a", "node": {"id": 1}}, {"cursor": "b", "node": {"id": 2}}]});
        assert_eq!(page_nodes(&page), [json!({"id": 1}), json!({"id": 2})]);
        assert_eq!(int64(&json!("3221225472")), 3221225472);
    }

    #[test]
    #[should_panic(expected = "an Int64")]
    fn an_int64_sent_as_a_number_fails_the_test() {
        int64(&json!(3221225472_i64));
    }

    #[test]
    #[should_panic(expected = "a list")]
    fn a_missing_list_fails_the_test() {
        sorted_ids(&Value::Null);
    }
}
