//! Resources: every container requests and is limited in CPU and memory.

use k8s_openapi::api::core::v1::Container;

pub(super) fn check_resources(what: &str, container: &Container, problems: &mut Vec<String>) {
    let resources = container.resources.clone().unwrap_or_default();
    for (kind, map) in [
        ("requests", &resources.requests),
        ("limits", &resources.limits),
    ] {
        for resource in ["cpu", "memory"] {
            if !map.as_ref().is_some_and(|m| m.contains_key(resource)) {
                problems.push(format!("{what}: resources.{kind}.{resource} is not set"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::deploy_policy::API;
    use crate::deploy_policy::violations::{CONTAINER, assert_caught, doc, remove};

    /// A request or limit left out.
    #[test]
    fn catches_missing_requests_and_limits() {
        assert_caught(&[
            (
                "no memory limit",
                "resources.limits.memory is not set",
                |b, _| {
                    remove(
                        doc(b, "Deployment", API),
                        &format!("{CONTAINER}/resources/limits/memory"),
                    );
                },
            ),
            (
                "no CPU request",
                "resources.requests.cpu is not set",
                |b, _| {
                    remove(
                        doc(b, "Job", "dcs-api-migrate"),
                        &format!("{CONTAINER}/resources/requests/cpu"),
                    );
                },
            ),
        ]);
    }
}
