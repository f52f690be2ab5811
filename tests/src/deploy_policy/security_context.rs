//! Security contexts: ALL capabilities dropped and only the workload's own
//! added back, no privilege or privilege escalation, a read-only root,
//! RuntimeDefault seccomp, and non-root for everything but the agent.

use k8s_openapi::api::core::v1::Container;

use super::bundle::Workload;
use super::{ADDED_CAPABILITIES, AGENT};

pub(super) fn check_security_context(
    w: &Workload,
    what: &str,
    container: &Container,
    problems: &mut Vec<String>,
) {
    let allowed_caps: &[&str] = ADDED_CAPABILITIES
        .iter()
        .find(|(name, _)| w.kind == "DaemonSet" && *name == w.name)
        .map(|(_, caps)| *caps)
        .unwrap_or(&[]);
    let pod_sc = w.spec.security_context.clone().unwrap_or_default();
    let Some(sc) = &container.security_context else {
        problems.push(format!("{what}: has no securityContext"));
        return;
    };
    let caps = sc.capabilities.clone().unwrap_or_default();
    if !caps.drop.iter().flatten().any(|c| c == "ALL") {
        problems.push(format!(
            "{what}: securityContext.capabilities.drop must contain ALL"
        ));
    }
    for cap in caps.add.iter().flatten() {
        if cap.starts_with("CAP_") {
            problems.push(format!(
                "{what}: capability `{cap}`: spell it without CAP_ (`{}`), as Kubernetes \
                 does; the API server refuses CAP_SYS_ADMIN with allowPrivilegeEscalation: \
                 false",
                cap.trim_start_matches("CAP_")
            ));
        } else if !allowed_caps.contains(&cap.as_str()) {
            problems.push(format!(
                "{what}: adds capability {cap}; allowed here: {}",
                if allowed_caps.is_empty() {
                    "none".to_string()
                } else {
                    allowed_caps.join(", ")
                }
            ));
        }
    }
    if sc.privileged == Some(true) {
        problems.push(format!("{what}: is privileged"));
    }
    if sc.allow_privilege_escalation != Some(false) {
        problems.push(format!("{what}: allowPrivilegeEscalation must be false"));
    }
    if sc.read_only_root_filesystem != Some(true) {
        problems.push(format!("{what}: readOnlyRootFilesystem must be true"));
    }
    if sc.proc_mount.as_deref().is_some_and(|p| p != "Default") {
        problems.push(format!("{what}: procMount must be Default"));
    }
    let seccomp = sc
        .seccomp_profile
        .as_ref()
        .or(pod_sc.seccomp_profile.as_ref())
        .map(|p| p.type_.as_str());
    if !matches!(seccomp, Some("RuntimeDefault" | "Localhost")) {
        problems.push(format!(
            "{what}: seccomp profile must be RuntimeDefault, is {}",
            seccomp.unwrap_or("unset (Unconfined)")
        ));
    }
    let is_agent = w.kind == "DaemonSet" && w.name == AGENT;
    if !is_agent {
        let non_root = sc.run_as_non_root.or(pod_sc.run_as_non_root) == Some(true);
        let uid = sc.run_as_user.or(pod_sc.run_as_user);
        if !non_root || uid == Some(0) {
            problems.push(format!(
                "{what}: must run as non-root (runAsNonRoot: true and a non-zero runAsUser); \
                 only the agent runs as root"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::deploy_policy::violations::{CONTAINER, POD, assert_caught, doc, remove, set};
    use crate::deploy_policy::{AGENT, API};
    use serde_json::json;

    /// Capabilities, privileges, writable roots, seccomp and root, each broken once.
    #[test]
    fn catches_capabilities_privileges_and_root() {
        assert_caught(&[
            (
                "an extra capability",
                "adds capability NET_ADMIN",
                |b, _| {
                    set(
                        doc(b, "DaemonSet", AGENT),
                        &format!("{CONTAINER}/securityContext/capabilities/add/2"),
                        json!("NET_ADMIN"),
                    );
                },
            ),
            (
                "a capability for the API",
                "adds capability DAC_READ_SEARCH; allowed here: none",
                |b, _| {
                    set(
                        doc(b, "Deployment", API),
                        &format!("{CONTAINER}/securityContext/capabilities/add"),
                        json!(["DAC_READ_SEARCH"]),
                    );
                },
            ),
            (
                "CAP_SYS_ADMIN spelling",
                "capability `CAP_SYS_ADMIN`",
                |b, _| {
                    set(
                        doc(b, "DaemonSet", AGENT),
                        &format!("{CONTAINER}/securityContext/capabilities/add/1"),
                        json!("CAP_SYS_ADMIN"),
                    );
                },
            ),
            (
                "capabilities not dropped",
                "drop must contain ALL",
                |b, _| {
                    set(
                        doc(b, "Deployment", API),
                        &format!("{CONTAINER}/securityContext/capabilities/drop"),
                        json!(["NET_RAW"]),
                    );
                },
            ),
            (
                "privilege escalation",
                "allowPrivilegeEscalation must be false",
                |b, _| {
                    set(
                        doc(b, "DaemonSet", AGENT),
                        &format!("{CONTAINER}/securityContext/allowPrivilegeEscalation"),
                        json!(true),
                    );
                },
            ),
            ("a privileged container", "is privileged", |b, _| {
                set(
                    doc(b, "DaemonSet", AGENT),
                    &format!("{CONTAINER}/securityContext/privileged"),
                    json!(true),
                );
            }),
            (
                "a writable root file system",
                "readOnlyRootFilesystem must be true",
                |b, _| {
                    set(
                        doc(b, "Deployment", API),
                        &format!("{CONTAINER}/securityContext/readOnlyRootFilesystem"),
                        json!(false),
                    );
                },
            ),
            (
                "no seccomp",
                "seccomp profile must be RuntimeDefault",
                |b, _| {
                    let api = doc(b, "Deployment", API);
                    remove(api, &format!("{CONTAINER}/securityContext/seccompProfile"));
                    remove(api, &format!("{POD}/securityContext/seccompProfile"));
                },
            ),
            ("the API as root", "must run as non-root", |b, _| {
                let api = doc(b, "Deployment", API);
                set(
                    api,
                    &format!("{CONTAINER}/securityContext/runAsUser"),
                    json!(0),
                );
            }),
        ]);
    }
}
