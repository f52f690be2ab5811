//! Secrets: never in the environment, always files mounted from Secrets
//! that `deploy/examples/secrets.yaml` shows, with the keys mounted.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Container, Secret};
use serde_json::Value;

use super::NAMESPACE;
use super::bundle::{Bundle, namespace_of};
use super::mounts::secret_file;

/// No secret in an environment variable: not through secretKeyRef, not
/// through envFrom, not by value under a secret-looking name.
pub(super) fn check_environment(what: &str, container: &Container, problems: &mut Vec<String>) {
    for env in container.env.iter().flatten() {
        if let Some(source) = &env.value_from
            && let Some(secret) = &source.secret_key_ref
        {
            problems.push(format!(
                "{what}: env {} takes Secret {}/{} through secretKeyRef; mount the Secret \
                 as a file and pass its path instead",
                env.name, secret.name, secret.key
            ));
        }
        let upper = env.name.to_ascii_uppercase();
        let secret_like = [
            "PASSWORD",
            "SECRET",
            "TOKEN",
            "CREDENTIAL",
            "DATABASE_URL",
            "PRIVATE_KEY",
        ]
        .iter()
        .any(|word| upper.contains(word));
        // An audience names who a token is for; it is no secret.
        if secret_like
            && !upper.ends_with("_FILE")
            && !upper.ends_with("_AUDIENCE")
            && env.value.as_deref().is_some_and(|v| !v.is_empty())
        {
            problems.push(format!(
                "{what}: env {} looks like a secret passed by value; mount it from a Secret \
                 as a file",
                env.name
            ));
        }
    }
    for source in container.env_from.iter().flatten() {
        if let Some(secret) = &source.secret_ref {
            problems.push(format!(
                "{what}: envFrom takes every key of Secret {} into the environment; mount \
                 it as files instead",
                secret.name
            ));
        }
    }
}

pub(super) fn check_secrets(bundle: &Bundle, problems: &mut Vec<String>) {
    if bundle.example_secrets.is_empty() {
        problems.push("deploy/examples/secrets.yaml has no Secret".to_string());
    }
    for (name, secret) in &bundle.example_secrets {
        let what = format!("deploy/examples/secrets.yaml: Secret {name}");
        if namespace_of(&secret.metadata) != NAMESPACE {
            problems.push(format!("{what}: must be in namespace {NAMESPACE}"));
        }
        if secret.type_.as_deref() == Some("kubernetes.io/dockerconfigjson") {
            match secret_value(secret, ".dockerconfigjson") {
                None => problems.push(format!("{what}: has no `.dockerconfigjson` key")),
                Some(bytes) => {
                    let parsed: Result<Value, _> = serde_json::from_slice(&bytes);
                    if !parsed.as_ref().is_ok_and(|v| v["auths"].is_object()) {
                        problems.push(format!(
                            "{what}: `.dockerconfigjson` must be JSON with an `auths` object"
                        ));
                    }
                }
            }
        }
    }
    for workload in &bundle.workloads {
        // Every Secret volume refers to a Secret the examples show, with the
        // keys it mounts.
        for volume in workload.spec.volumes.iter().flatten() {
            let Some(source) = &volume.secret else {
                continue;
            };
            let name = source.secret_name.clone().unwrap_or_default();
            match bundle.example_secrets.get(&name) {
                None => problems.push(format!(
                    "{}: volume `{}` mounts Secret {name}, which deploy/examples/secrets.yaml \
                     does not show",
                    workload.what, volume.name
                )),
                Some(secret) => {
                    let keys = secret_keys(secret);
                    for item in source.items.iter().flatten() {
                        if !keys.contains(&item.key) {
                            problems.push(format!(
                                "{}: volume `{}` mounts key `{}` of Secret {name}, which the \
                                 example does not have (it has {keys:?})",
                                workload.what, volume.name, item.key
                            ));
                        }
                    }
                }
            }
        }
        // Every setting that names a secret file names one inside a mounted
        // Secret (`*_TOKEN_FILE`s name projected service-account tokens:
        // check_identity).
        for container in workload.containers() {
            for env in container.env.iter().flatten() {
                let names_a_file = (env.name.ends_with("_FILE")
                    && !env.name.ends_with("_TOKEN_FILE"))
                    || env.name == "DCS_REGISTRY_CONFIG";
                let Some(path) = env.value.as_deref().filter(|_| names_a_file) else {
                    continue;
                };
                if let Err(e) = secret_file(workload, container, path) {
                    problems.push(format!(
                        "{}, container {}: env {} = {path}: {e}",
                        workload.what, container.name, env.name
                    ));
                }
            }
        }
    }
}

fn secret_keys(secret: &Secret) -> BTreeSet<String> {
    secret
        .data
        .iter()
        .flatten()
        .map(|(k, _)| k.clone())
        .chain(secret.string_data.iter().flatten().map(|(k, _)| k.clone()))
        .collect()
}

fn secret_value(secret: &Secret, key: &str) -> Option<Vec<u8>> {
    secret
        .string_data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|s| s.as_bytes().to_vec())
        .or_else(|| {
            secret
                .data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|b| b.0.clone())
        })
}

#[cfg(test)]
mod tests {
    use crate::deploy_policy::violations::{CONTAINER, assert_caught, doc, index_of, set};
    use crate::deploy_policy::{AGENT, API};
    use serde_json::Value;
    use serde_json::json;

    /// Secrets passed in the environment, or from Secrets the examples lack.
    #[test]
    fn catches_secrets_in_the_environment_and_unknown_secrets() {
        assert_caught(&[
            (
                "a secret through secretKeyRef",
                "through secretKeyRef",
                |b, _| {
                    let env = format!("{CONTAINER}/env");
                    let agent = doc(b, "DaemonSet", AGENT);
                    let n = agent
                        .pointer(&env)
                        .and_then(Value::as_array)
                        .map(Vec::len)
                        .unwrap_or(0);
                    set(
                        agent,
                        &format!("{env}/{n}"),
                        json!({"name": "DATABASE_PASSWORD",
                "valueFrom": {"secretKeyRef": {"name": "dcs-database", "key": "url"}}}),
                    );
                },
            ),
            (
                "secrets through envFrom",
                "envFrom takes every key of Secret",
                |b, _| {
                    set(
                        doc(b, "Deployment", API),
                        &format!("{CONTAINER}/envFrom"),
                        json!([{"secretRef": {"name": "dcs-database"}}]),
                    );
                },
            ),
            (
                "DATABASE_URL by value",
                "env DATABASE_URL looks like a secret passed by value",
                |b, _| {
                    let env = format!("{CONTAINER}/env");
                    let api = doc(b, "Deployment", API);
                    set(
                        api,
                        &format!("{env}/0"),
                        json!({"name": "DATABASE_URL", "value": "postgres://u:p@db/dcs"}),
                    );
                },
            ),
            (
                "a secret file outside any Secret",
                "is in volume `state`, which is not a Secret volume",
                |b, _| {
                    let agent = doc(b, "DaemonSet", AGENT);
                    let i = index_of(agent, &format!("{CONTAINER}/env"), "DCS_AGENT_SECRET_FILE");
                    set(
                        agent,
                        &format!("{CONTAINER}/env/{i}/value"),
                        json!("/run/dcs-agent/secret"),
                    );
                },
            ),
            (
                "a Secret the examples lack",
                "which deploy/examples/secrets.yaml does not show",
                |_, e| {
                    e.retain(|s| s["metadata"]["name"] != "dcs-api-jwt");
                },
            ),
            (
                "a registry Secret without auths",
                "must be JSON with an `auths` object",
                |_, e| {
                    let secret = e
                        .iter_mut()
                        .find(|s| s["type"] == "kubernetes.io/dockerconfigjson")
                        .unwrap();
                    set(secret, "/stringData/.dockerconfigjson", json!("{}"));
                },
            ),
        ]);
    }
}
