//! Deliberate violations of the policy, for the checks' own unit tests:
//! the rendered base, broken one way at a time through JSON pointers, must
//! be reported with the expected problem.

use serde_json::Value;

use super::render::{base_documents, example_documents};
use super::{assert_no_problems, check};

/// The document of `kind`/`name` in `docs`.
pub(super) fn doc<'a>(docs: &'a mut [Value], kind: &str, name: &str) -> &'a mut Value {
    docs.iter_mut()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("the base renders no {kind} {name}"))
}

/// Sets the field at the JSON pointer `at` (its parent must exist).
pub(super) fn set(value: &mut Value, at: &str, new: Value) {
    let (parent, key) = at.rsplit_once('/').expect("a JSON pointer");
    let parent = value
        .pointer_mut(parent)
        .unwrap_or_else(|| panic!("{parent} does not exist"));
    match parent {
        Value::Object(map) => {
            map.insert(key.to_string(), new);
        }
        Value::Array(items) => {
            let index: usize = key.parse().expect("an array index");
            if index == items.len() {
                items.push(new);
            } else {
                items[index] = new;
            }
        }
        other => panic!("{at}: parent is not an object or array: {other}"),
    }
}

pub(super) fn remove(value: &mut Value, at: &str) {
    let (parent, key) = at.rsplit_once('/').expect("a JSON pointer");
    value
        .pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .and_then(|m| m.remove(key))
        .unwrap_or_else(|| panic!("{at} does not exist"));
}

/// Removes the element named `name` from the array at `at`.
pub(super) fn remove_named(value: &mut Value, at: &str, name: &str) {
    let items = value
        .pointer_mut(at)
        .and_then(Value::as_array_mut)
        .unwrap_or_else(|| panic!("{at} is not an array"));
    let before = items.len();
    items.retain(|i| i["name"] != name);
    assert!(items.len() < before, "no element named {name} in {at}");
}

/// Index of the named element of the array at `at`.
pub(super) fn index_of(value: &Value, at: &str, name: &str) -> usize {
    value
        .pointer(at)
        .and_then(Value::as_array)
        .and_then(|items| items.iter().position(|i| i["name"] == name))
        .unwrap_or_else(|| panic!("no element named {name} in {at}"))
}

/// JSON pointers into a rendered workload: its pod spec.
pub(super) const POD: &str = "/spec/template/spec";
/// The first (only) container of a workload.
pub(super) const CONTAINER: &str = "/spec/template/spec/containers/0";

/// A deliberate violation: its name, a fragment of the problem the policy
/// must report, and how it breaks the base (and the example Secrets).
pub(super) type Violation = (
    &'static str,
    &'static str,
    fn(&mut Vec<Value>, &mut Vec<Value>),
);

/// Breaks the base in each of these ways (one at a time) and fails with
/// every violation the policy did not report; the base itself must pass.
pub(super) fn assert_caught(violations: &[Violation]) {
    let base = base_documents();
    let examples = example_documents();
    assert_no_problems(&check(&base, &examples));

    let mut missed = Vec::new();
    for (name, expected, mutate) in violations {
        let mut b = base.clone();
        let mut e = examples.clone();
        mutate(&mut b, &mut e);
        let problems = check(&b, &e);
        if !problems.iter().any(|p| p.contains(expected)) {
            missed.push(format!(
                "{name}: expected a problem saying {expected:?}, got {problems:#?}"
            ));
        }
    }
    assert!(
        missed.is_empty(),
        "the policy check missed {} violation(s):\n{}",
        missed.len(),
        missed.join("\n")
    );
}
