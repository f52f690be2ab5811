//! The agent's DaemonSet: rollout one node at a time, no service-account
//! token of its own, a grace period for running commits, its settings from
//! the downward API, and registry credentials from a dockerconfigjson Secret.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::bundle::Bundle;
use super::mounts::secret_file;
use super::parse::Object;
use super::settings::{env_value, flag_value};
use super::{AGENT, AGENT_PORT};

pub(super) fn check_agent(bundle: &Bundle, problems: &mut Vec<String>) {
    let Some(agent) = bundle.workload("DaemonSet", AGENT) else {
        return;
    };
    let what = &agent.what;
    let daemon_set = bundle.objects.iter().find_map(|o| match o {
        Object::DaemonSet(d) if d.metadata.name.as_deref() == Some(AGENT) => Some(d),
        _ => None,
    });
    let strategy = daemon_set
        .and_then(|d| d.spec.as_ref())
        .and_then(|s| s.update_strategy.clone())
        .unwrap_or_default();
    let rolling = strategy.rolling_update.clone().unwrap_or_default();
    if strategy.type_.as_deref() != Some("RollingUpdate")
        || rolling.max_unavailable != Some(IntOrString::Int(1))
    {
        problems.push(format!(
            "{what}: updateStrategy must be RollingUpdate with maxUnavailable: 1, is {:?} {:?}",
            strategy.type_, rolling.max_unavailable
        ));
    }
    if rolling
        .max_surge
        .as_ref()
        .is_some_and(|s| *s != IntOrString::Int(0) && *s != IntOrString::String("0%".into()))
    {
        problems.push(format!(
            "{what}: maxSurge must be 0: two agents on one node would not share commit locks"
        ));
    }
    if agent.spec.automount_service_account_token != Some(false) {
        problems.push(format!(
            "{what}: automountServiceAccountToken must be false: the agent's tokens are its \
             projected volumes (short-lived, and for the API with a dedicated audience)"
        ));
    }
    if agent.spec.host_users == Some(false) {
        problems.push(format!(
            "{what}: hostUsers: false would make the agent's capabilities useless against host \
             files"
        ));
    }
    let Some(container) = agent.spec.containers.first() else {
        problems.push(format!("{what}: has no container"));
        return;
    };
    let args = container.args.clone().unwrap_or_default();
    if args.first().map(String::as_str) != Some("serve") {
        problems.push(format!(
            "{what}: the agent must run `dcs-agent serve`, args are {args:?}"
        ));
    }
    let grace: i64 = flag_value(&args, "--shutdown-grace-seconds")
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let termination = agent.spec.termination_grace_period_seconds.unwrap_or(30);
    if termination <= grace {
        problems.push(format!(
            "{what}: terminationGracePeriodSeconds ({termination}) must exceed \
             --shutdown-grace-seconds ({grace}) so that a running commit can finish and be \
             reported before SIGKILL"
        ));
    }
    for (name, field_path) in [("NODE_NAME", "spec.nodeName"), ("POD_IP", "status.podIP")] {
        let from_downward_api = container.env.iter().flatten().any(|e| {
            e.name == name
                && e.value_from
                    .as_ref()
                    .and_then(|v| v.field_ref.as_ref())
                    .is_some_and(|f| f.field_path == field_path)
        });
        if !from_downward_api {
            problems.push(format!(
                "{what}: env {name} must come from the downward API ({field_path})"
            ));
        }
    }
    if !container
        .ports
        .iter()
        .flatten()
        .any(|p| p.container_port == AGENT_PORT && p.host_port.is_none())
    {
        problems.push(format!(
            "{what}: must expose container port {AGENT_PORT}, without a hostPort"
        ));
    }
    let state_dir = env_value(container, "DCS_AGENT_STATE_DIR").unwrap_or("/run/dcs-agent");
    let state_is_empty_dir = container
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path == state_dir)
        .and_then(|m| {
            agent
                .spec
                .volumes
                .iter()
                .flatten()
                .find(|v| v.name == m.name)
        })
        .is_some_and(|v| v.empty_dir.is_some());
    if !state_is_empty_dir {
        problems.push(format!(
            "{what}: the state directory {state_dir} must be an emptyDir (the root file system \
             is read-only)"
        ));
    }
    // Registry credentials: a dockerconfigjson Secret, mounted as a file.
    match env_value(container, "DCS_REGISTRY_CONFIG") {
        None => problems.push(format!(
            "{what}: DCS_REGISTRY_CONFIG must name the registry credentials file"
        )),
        Some(path) => match secret_file(agent, container, path) {
            Err(e) => problems.push(format!("{what}: registry credentials: {e}")),
            Ok((secret_name, key)) => match bundle.example_secrets.get(&secret_name) {
                None => problems.push(format!(
                    "{what}: registry credentials come from Secret {secret_name}, which \
                     deploy/examples/secrets.yaml does not show"
                )),
                Some(secret) => {
                    if secret.type_.as_deref() != Some("kubernetes.io/dockerconfigjson") {
                        problems.push(format!(
                            "{what}: registry credentials Secret {secret_name} must have type \
                             kubernetes.io/dockerconfigjson, has {:?}",
                            secret.type_
                        ));
                    }
                    if key != ".dockerconfigjson" {
                        problems.push(format!(
                            "{what}: {path} must be the `.dockerconfigjson` key of Secret \
                             {secret_name}, is `{key}`"
                        ));
                    }
                }
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use crate::deploy_policy::AGENT;
    use crate::deploy_policy::violations::{CONTAINER, POD, assert_caught, doc, index_of, set};
    use serde_json::json;

    /// The agent's rollout, grace period, settings and credentials, each broken once.
    #[test]
    fn catches_agent_rollout_grace_and_credentials_faults() {
        assert_caught(&[
            (
                "registry credentials from an Opaque Secret",
                "must have type kubernetes.io/dockerconfigjson",
                |b, _| {
                    let agent = doc(b, "DaemonSet", AGENT);
                    let i = index_of(agent, &format!("{POD}/volumes"), "registry-credentials");
                    set(
                        agent,
                        &format!("{POD}/volumes/{i}/secret"),
                        json!({"secretName": "dcs-database",
                "items": [{"key": "url", "path": "config.json"}]}),
                    );
                },
            ),
            (
                "NODE_NAME not from the downward API",
                "env NODE_NAME must come from the downward API",
                |b, _| {
                    let agent = doc(b, "DaemonSet", AGENT);
                    let i = index_of(agent, &format!("{CONTAINER}/env"), "NODE_NAME");
                    set(
                        agent,
                        &format!("{CONTAINER}/env/{i}"),
                        json!({"name": "NODE_NAME", "value": "node-1"}),
                    );
                },
            ),
            (
                "a short termination grace",
                "terminationGracePeriodSeconds (60) must exceed",
                |b, _| {
                    set(
                        doc(b, "DaemonSet", AGENT),
                        &format!("{POD}/terminationGracePeriodSeconds"),
                        json!(60),
                    );
                },
            ),
            ("three agents down at once", "maxUnavailable: 1", |b, _| {
                set(
                    doc(b, "DaemonSet", AGENT),
                    "/spec/updateStrategy/rollingUpdate/maxUnavailable",
                    json!(3),
                );
            }),
            (
                "a token in the agent",
                "automountServiceAccountToken must be false",
                |b, _| {
                    set(
                        doc(b, "DaemonSet", AGENT),
                        &format!("{POD}/automountServiceAccountToken"),
                        json!(true),
                    );
                },
            ),
        ]);
    }
}
