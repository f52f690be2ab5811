//! The host: no pod shares its namespaces; host paths are the containerd
//! socket and root only, only in the agent, mounted read-only where they
//! are on the host (containerd reports host paths and the agent opens them).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Container;

use super::bundle::Workload;
use super::{AGENT, CONTAINERD_ROOT, CONTAINERD_SOCKET};

pub(super) fn check_namespaces(w: &Workload, problems: &mut Vec<String>) {
    let spec = &w.spec;
    let what = &w.what;
    for (field, value) in [
        ("hostNetwork", spec.host_network),
        ("hostPID", spec.host_pid),
        ("hostIPC", spec.host_ipc),
    ] {
        if value == Some(true) {
            problems.push(format!(
                "{what}: {field} is true; no pod may share the host's namespaces"
            ));
        }
    }
}

/// Checks the hostPath volumes; returns them (volume name -> host path).
pub(super) fn check_volumes(w: &Workload, problems: &mut Vec<String>) -> BTreeMap<String, String> {
    let what = &w.what;
    let mut host_path_volumes = BTreeMap::new();
    for volume in w.spec.volumes.iter().flatten() {
        let Some(host_path) = &volume.host_path else {
            continue;
        };
        host_path_volumes.insert(volume.name.clone(), host_path.path.clone());
        let expected_type = match host_path.path.as_str() {
            CONTAINERD_SOCKET => "Socket",
            CONTAINERD_ROOT => "Directory",
            other => {
                problems.push(format!(
                    "{what}: hostPath volume `{}` mounts {other}; only {CONTAINERD_SOCKET} and \
                     {CONTAINERD_ROOT} are allowed",
                    volume.name
                ));
                continue;
            }
        };
        if !(w.kind == "DaemonSet" && w.name == AGENT) {
            problems.push(format!(
                "{what}: hostPath volume `{}` ({}); only the agent may mount host paths",
                volume.name, host_path.path
            ));
        }
        if host_path.type_.as_deref() != Some(expected_type) {
            problems.push(format!(
                "{what}: hostPath volume `{}` ({}) must have type {expected_type}, has {:?}",
                volume.name, host_path.path, host_path.type_
            ));
        }
    }
    host_path_volumes
}

/// Host paths are mounted read-only, at their own path.
pub(super) fn check_mounts(
    what: &str,
    container: &Container,
    host_path_volumes: &BTreeMap<String, String>,
    problems: &mut Vec<String>,
) {
    for mount in container.volume_mounts.iter().flatten() {
        let Some(host_path) = host_path_volumes.get(&mount.name) else {
            continue;
        };
        if mount.read_only != Some(true) {
            problems.push(format!(
                "{what}: hostPath {host_path} is mounted at {} without readOnly: true; it \
                 must be read-only",
                mount.mount_path
            ));
        }
        if mount.mount_path != *host_path {
            problems.push(format!(
                "{what}: hostPath {host_path} is mounted at {}; mount it at the same path",
                mount.mount_path
            ));
        }
        if mount.sub_path.is_some() || mount.sub_path_expr.is_some() {
            problems.push(format!(
                "{what}: hostPath {host_path} is mounted with a subPath"
            ));
        }
        if mount
            .mount_propagation
            .as_deref()
            .is_some_and(|p| p != "None")
        {
            problems.push(format!(
                "{what}: hostPath {host_path} has mountPropagation {:?}; use None",
                mount.mount_propagation
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::deploy_policy::violations::{CONTAINER, POD, assert_caught, doc, index_of, set};
    use crate::deploy_policy::{AGENT, API, CONTAINERD_SOCKET};
    use serde_json::Value;
    use serde_json::json;

    /// Sharing the host, and host paths other than containerd's or writable.
    #[test]
    fn catches_host_namespaces_and_host_paths() {
        assert_caught(&[
            (
                "agent on the host network",
                "hostNetwork is true",
                |b, _| {
                    set(
                        doc(b, "DaemonSet", AGENT),
                        &format!("{POD}/hostNetwork"),
                        json!(true),
                    );
                },
            ),
            (
                "API in the host PID namespace",
                "hostPID is true",
                |b, _| {
                    set(
                        doc(b, "Deployment", API),
                        &format!("{POD}/hostPID"),
                        json!(true),
                    );
                },
            ),
            (
                "migration in the host IPC namespace",
                "hostIPC is true",
                |b, _| {
                    set(
                        doc(b, "Job", "dcs-api-migrate"),
                        &format!("{POD}/hostIPC"),
                        json!(true),
                    );
                },
            ),
            (
                "a writable containerd root",
                "hostPath /var/lib/containerd is mounted at /var/lib/containerd without readOnly",
                |b, _| {
                    let agent = doc(b, "DaemonSet", AGENT);
                    let i = index_of(
                        agent,
                        &format!("{CONTAINER}/volumeMounts"),
                        "containerd-root",
                    );
                    set(
                        agent,
                        &format!("{CONTAINER}/volumeMounts/{i}/readOnly"),
                        json!(false),
                    );
                },
            ),
            (
                "the containerd root elsewhere",
                "mount it at the same path",
                |b, _| {
                    let agent = doc(b, "DaemonSet", AGENT);
                    let i = index_of(
                        agent,
                        &format!("{CONTAINER}/volumeMounts"),
                        "containerd-root",
                    );
                    set(
                        agent,
                        &format!("{CONTAINER}/volumeMounts/{i}/mountPath"),
                        json!("/host/containerd"),
                    );
                },
            ),
            ("another host path", "mounts /etc; only", |b, _| {
                let agent = doc(b, "DaemonSet", AGENT);
                let i = index_of(agent, &format!("{POD}/volumes"), "containerd-root");
                set(
                    agent,
                    &format!("{POD}/volumes/{i}/hostPath/path"),
                    json!("/etc"),
                );
            }),
            (
                "a host path in the API",
                "only the agent may mount host paths",
                |b, _| {
                    let api = doc(b, "Deployment", API);
                    let n = api
                        .pointer(&format!("{POD}/volumes"))
                        .and_then(Value::as_array)
                        .map_or(0, Vec::len);
                    set(
                        api,
                        &format!("{POD}/volumes/{n}"),
                        json!({"name": "sock",
                "hostPath": {"path": CONTAINERD_SOCKET, "type": "Socket"}}),
                    );
                },
            ),
            (
                "the socket as a directory",
                "must have type Socket",
                |b, _| {
                    let agent = doc(b, "DaemonSet", AGENT);
                    let i = index_of(agent, &format!("{POD}/volumes"), "containerd-socket");
                    set(
                        agent,
                        &format!("{POD}/volumes/{i}/hostPath/type"),
                        json!("DirectoryOrCreate"),
                    );
                },
            ),
        ]);
    }
}
