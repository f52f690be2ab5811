//! Every document parsed into the `k8s-openapi` type of its kind, strictly:
//! an unknown kind, or a field that type does not have, is a problem.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::serde::Serialize;
use k8s_openapi::serde::de::DeserializeOwned;
use serde_json::Value;

// A handful of objects per test: their size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Object {
    Namespace(Namespace),
    ServiceAccount(ServiceAccount),
    ClusterRole(ClusterRole),
    ClusterRoleBinding(ClusterRoleBinding),
    Role(Role),
    RoleBinding(RoleBinding),
    ConfigMap(ConfigMap),
    Secret(Secret),
    Service(Service),
    DaemonSet(DaemonSet),
    Deployment(Deployment),
    StatefulSet(StatefulSet),
    Job(Job),
    CronJob(CronJob),
    Pod(Pod),
    NetworkPolicy(NetworkPolicy),
    PodDisruptionBudget(PodDisruptionBudget),
}

/// `Kind namespace/name` of a document, for messages.
pub(super) fn describe(value: &Value) -> String {
    let kind = value["kind"].as_str().unwrap_or("<no kind>");
    let name = value["metadata"]["name"].as_str().unwrap_or("<no name>");
    match value["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

/// Parses `value` into `T` and back: a field `T` does not know would be
/// dropped silently by the parse, so whatever does not survive the round
/// trip is reported (a typo such as `hostNetwrok` must not pass unseen).
pub(super) fn strict<T: DeserializeOwned + Serialize>(
    value: &Value,
    what: &str,
    problems: &mut Vec<String>,
) -> Option<T> {
    let typed: T = match serde_json::from_value(value.clone()) {
        Ok(typed) => typed,
        Err(e) => {
            problems.push(format!(
                "{what}: does not parse into its Kubernetes type: {e}"
            ));
            return None;
        }
    };
    let back = serde_json::to_value(&typed).expect("k8s-openapi types serialize");
    let mut lost = Vec::new();
    compare("", value, &back, &mut lost);
    problems.extend(lost.into_iter().map(|l| format!("{what}: {l}")));
    // Checked further all the same, so that one typo does not hide the rest.
    Some(typed)
}

fn compare(path: &str, original: &Value, back: &Value, lost: &mut Vec<String>) {
    match (original, back) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                let here = format!("{path}.{key}");
                match b.get(key) {
                    None if value.is_null() => {}
                    None => lost.push(format!(
                        "`{}` is not a field of this kind (misspelt or misplaced?)",
                        here.trim_start_matches('.')
                    )),
                    Some(other) => compare(&here, value, other, lost),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                compare(&format!("{path}[{i}]"), x, y, lost);
            }
        }
        (Value::Number(a), Value::Number(b)) if a.as_f64() == b.as_f64() => {}
        (a, b) if a == b => {}
        (a, b) => lost.push(format!(
            "`{}` = {a} reads back as {b}",
            path.trim_start_matches('.')
        )),
    }
}

pub(super) fn parse_object(value: &Value, problems: &mut Vec<String>) -> Option<Object> {
    let what = describe(value);
    let api_version = value["apiVersion"].as_str().unwrap_or_default();
    let kind = value["kind"].as_str().unwrap_or_default();
    Some(match (api_version, kind) {
        ("v1", "Namespace") => Object::Namespace(strict(value, &what, problems)?),
        ("v1", "ServiceAccount") => Object::ServiceAccount(strict(value, &what, problems)?),
        ("v1", "ConfigMap") => Object::ConfigMap(strict(value, &what, problems)?),
        ("v1", "Secret") => Object::Secret(strict(value, &what, problems)?),
        ("v1", "Service") => Object::Service(strict(value, &what, problems)?),
        ("v1", "Pod") => Object::Pod(strict(value, &what, problems)?),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
            Object::ClusterRole(strict(value, &what, problems)?)
        }
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            Object::ClusterRoleBinding(strict(value, &what, problems)?)
        }
        ("rbac.authorization.k8s.io/v1", "Role") => Object::Role(strict(value, &what, problems)?),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => {
            Object::RoleBinding(strict(value, &what, problems)?)
        }
        ("apps/v1", "DaemonSet") => Object::DaemonSet(strict(value, &what, problems)?),
        ("apps/v1", "Deployment") => Object::Deployment(strict(value, &what, problems)?),
        ("apps/v1", "StatefulSet") => Object::StatefulSet(strict(value, &what, problems)?),
        ("batch/v1", "Job") => Object::Job(strict(value, &what, problems)?),
        ("batch/v1", "CronJob") => Object::CronJob(strict(value, &what, problems)?),
        ("networking.k8s.io/v1", "NetworkPolicy") => {
            Object::NetworkPolicy(strict(value, &what, problems)?)
        }
        ("policy/v1", "PodDisruptionBudget") => {
            Object::PodDisruptionBudget(strict(value, &what, problems)?)
        }
        _ => {
            problems.push(format!(
                "{what}: unknown kind `{kind}` (apiVersion `{api_version}`): this test knows \
                 Namespace, ServiceAccount, ConfigMap, Secret, Service, Pod, ClusterRole, \
                 ClusterRoleBinding, Role, RoleBinding, DaemonSet, Deployment, StatefulSet, Job, \
                 CronJob, NetworkPolicy and PodDisruptionBudget; teach it the new kind and its \
                 policy"
            ));
            return None;
        }
    })
}

#[cfg(test)]
mod tests {
    use crate::deploy_policy::violations::{POD, assert_caught, doc, set};
    use crate::deploy_policy::{AGENT, NAMESPACE};
    use serde_json::json;

    /// Typos and kinds the policy does not know are reported, not skipped.
    #[test]
    fn catches_misspelt_fields_unknown_kinds_and_unparsable_examples() {
        assert_caught(&[
            (
                "a misspelt field",
                "`spec.template.spec.hostNetwrok` is not a field",
                |b, _| {
                    set(
                        doc(b, "DaemonSet", AGENT),
                        &format!("{POD}/hostNetwrok"),
                        json!(true),
                    );
                },
            ),
            ("an unknown kind", "unknown kind `Ingresss`", |b, _| {
                b.push(
                    json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingresss",
                          "metadata": {"name": "x", "namespace": NAMESPACE}}),
                );
            }),
            (
                "an example that is not a Secret",
                "does not parse into its Kubernetes type",
                |_, e| {
                    set(&mut e[0], "/stringData", json!("not a map"));
                },
            ),
        ]);
    }
}
