//! Projected service-account tokens, wherever they are: short-lived,
//! mounted read-only, and held by the agent and the API only.

use super::bundle::{Bundle, Workload};
use super::{AGENT, API, TOKEN_SECONDS};

pub(super) fn check_projected_tokens(bundle: &Bundle, problems: &mut Vec<String>) {
    let agent = bundle.workload("DaemonSet", AGENT);
    let api = bundle.workload("Deployment", API);
    let is_peer = |w: &Workload| {
        agent.is_some_and(|a| std::ptr::eq(a, w)) || api.is_some_and(|a| std::ptr::eq(a, w))
    };

    for w in &bundle.workloads {
        for volume in w.spec.volumes.iter().flatten() {
            let tokens = volume
                .projected
                .iter()
                .flat_map(|p| p.sources.iter().flatten())
                .filter_map(|s| s.service_account_token.as_ref());
            for token in tokens {
                let what = format!("{}: volume `{}`", w.what, volume.name);
                if !is_peer(w) {
                    problems.push(format!(
                        "{what} projects a service-account token; only the agent and the API \
                         hold tokens"
                    ));
                }
                match token.expiration_seconds {
                    None => problems.push(format!(
                        "{what}: the projected token has no expirationSeconds (it would live an \
                         hour); set a short one, {}..={} s",
                        TOKEN_SECONDS.start(),
                        TOKEN_SECONDS.end()
                    )),
                    Some(seconds) if !TOKEN_SECONDS.contains(&seconds) => problems.push(format!(
                        "{what}: the projected token's expirationSeconds is {seconds}; it \
                             must be within {}..={} s",
                        TOKEN_SECONDS.start(),
                        TOKEN_SECONDS.end()
                    )),
                    Some(_) => {}
                }
            }
        }
        for container in w.containers() {
            for mount in container.volume_mounts.iter().flatten() {
                let projected = w
                    .spec
                    .volumes
                    .iter()
                    .flatten()
                    .any(|v| v.name == mount.name && v.projected.is_some());
                if projected && mount.read_only != Some(true) {
                    problems.push(format!(
                        "{}, container {}: projected volume `{}` must be mounted read-only \
                         (readOnly: true)",
                        w.what, container.name, mount.name
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::deploy_policy::violations::{
        CONTAINER, POD, assert_caught, doc, index_of, remove, set,
    };
    use crate::deploy_policy::{AGENT, API};
    use serde_json::json;

    /// Tokens that live too long, are writable, or sit in the wrong workload.
    #[test]
    fn catches_long_lived_writable_or_misplaced_tokens() {
        assert_caught(&[
            (
                "a day-long token",
                "the projected token's expirationSeconds is 86400",
                |b, _| {
                    let agent = doc(b, "DaemonSet", AGENT);
                    let i = index_of(agent, &format!("{POD}/volumes"), "kube-api-access");
                    set(
                        agent,
                        &format!(
                            "{POD}/volumes/{i}/projected/sources/0/serviceAccountToken/expirationSeconds"
                        ),
                        json!(86400),
                    );
                },
            ),
            (
                "a token without expiry",
                "the projected token has no expirationSeconds",
                |b, _| {
                    let api = doc(b, "Deployment", API);
                    let i = index_of(api, &format!("{POD}/volumes"), "token-for-agents");
                    remove(
                        api,
                        &format!(
                            "{POD}/volumes/{i}/projected/sources/0/serviceAccountToken/expirationSeconds"
                        ),
                    );
                },
            ),
            (
                "a writable token mount",
                "projected volume `token-for-agents` must be mounted read-only",
                |b, _| {
                    let api = doc(b, "Deployment", API);
                    let i = index_of(
                        api,
                        &format!("{CONTAINER}/volumeMounts"),
                        "token-for-agents",
                    );
                    remove(api, &format!("{CONTAINER}/volumeMounts/{i}/readOnly"));
                },
            ),
            (
                "a token in the migration Job",
                "only the agent and the API hold tokens",
                |b, _| {
                    let job = doc(b, "Job", "dcs-api-migrate");
                    set(
                        job,
                        &format!("{POD}/volumes/1"),
                        json!({"name": "token", "projected": {"sources": [{"serviceAccountToken":
                        {"path": "token", "audience": "dcs-api", "expirationSeconds": 600}}]}}),
                    );
                },
            ),
        ]);
    }
}
