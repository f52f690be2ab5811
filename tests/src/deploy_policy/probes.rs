//! Probes: liveness and readiness for every long-running container; the
//! agent's are exec probes (its endpoints answer 401 without a token).

use k8s_openapi::api::core::v1::Container;

use super::AGENT;
use super::bundle::Workload;

pub(super) fn check_probes(
    w: &Workload,
    what: &str,
    container: &Container,
    problems: &mut Vec<String>,
) {
    for (name, probe) in [
        ("livenessProbe", &container.liveness_probe),
        ("readinessProbe", &container.readiness_probe),
    ] {
        match probe {
            None => problems.push(format!("{what}: has no {name}")),
            Some(probe) => {
                if w.kind == "DaemonSet"
                    && w.name == AGENT
                    && (probe.http_get.is_some()
                        || probe.tcp_socket.is_some()
                        || probe.grpc.is_some())
                {
                    problems.push(format!(
                        "{what}: {name} must be an exec probe: every agent endpoint \
                         answers 401 without a token, and an open port proves little"
                    ));
                }
                if probe.exec.is_none()
                    && probe.http_get.is_none()
                    && probe.tcp_socket.is_none()
                    && probe.grpc.is_none()
                {
                    problems.push(format!("{what}: {name} has no handler"));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::deploy_policy::violations::{CONTAINER, assert_caught, doc, remove, set};
    use crate::deploy_policy::{AGENT, AGENT_PORT, API};
    use serde_json::json;

    /// Probes left out, or an HTTP probe the agent would answer with 401.
    #[test]
    fn catches_missing_and_unauthenticated_probes() {
        assert_caught(&[
            ("no liveness probe", "has no livenessProbe", |b, _| {
                remove(
                    doc(b, "DaemonSet", AGENT),
                    &format!("{CONTAINER}/livenessProbe"),
                );
            }),
            ("no readiness probe", "has no readinessProbe", |b, _| {
                remove(
                    doc(b, "Deployment", API),
                    &format!("{CONTAINER}/readinessProbe"),
                );
            }),
            (
                "an httpGet probe on the agent",
                "must be an exec probe",
                |b, _| {
                    set(
                        doc(b, "DaemonSet", AGENT),
                        &format!("{CONTAINER}/readinessProbe"),
                        json!({"httpGet": {"path": "/readyz", "port": AGENT_PORT}}),
                    );
                },
            ),
        ]);
    }
}
