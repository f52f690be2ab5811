//! In-cluster identity: which tokens the agents and the API present to each
//! other, for which audience, and where they come from; or, with the
//! shared-secret identity, that there are none. The shared secret stays the
//! fallback in both modes.

use super::bundle::Bundle;
use super::mounts::{kube_api_access, projected_token, secret_file};
use super::settings::{env_flag, env_value};
use super::{
    AGENT, AGENT_TO_API_AUDIENCE, API, API_TO_AGENT_AUDIENCE, DEFAULT_AGENT_SERVICE_ACCOUNT,
    DEFAULT_AGENT_TOKEN_AUDIENCE, DEFAULT_API_SERVICE_ACCOUNT, DEFAULT_API_TOKEN_AUDIENCE,
    Identity, KUBE_API_ACCESS_DIR,
};

/// In-cluster identity: which tokens the agents and the API present to each
/// other, for which audience, and where they come from; or, with the
/// shared-secret identity, that there are none.
pub(super) fn check_identity(bundle: &Bundle, identity: Identity, problems: &mut Vec<String>) {
    let agent = bundle.workload("DaemonSet", AGENT);
    let api = bundle.workload("Deployment", API);

    let (Some(agent), Some(api)) = (agent, api) else {
        return;
    };
    let (Some(agent_c), Some(api_c)) = (agent.spec.containers.first(), api.spec.containers.first())
    else {
        return;
    };
    for (w, c) in [(agent, agent_c), (api, api_c)] {
        if let Some(v) = env_value(c, "DCS_KUBERNETES").filter(|v| *v != "true" && *v != "false") {
            problems.push(format!(
                "{}, container {}: DCS_KUBERNETES is {v:?}; write \"true\" or \"false\"",
                w.what, c.name
            ));
        }
    }
    let agent_reviews = env_flag(agent_c, "DCS_KUBERNETES");
    let api_kubernetes = env_flag(api_c, "DCS_KUBERNETES");
    let agent_token = env_value(agent_c, "DCS_AGENT_SA_TOKEN_FILE");
    let api_token = env_value(api_c, "DCS_API_SA_TOKEN_FILE");

    match identity {
        Identity::InCluster => {
            for (w, name, set, why) in [
                (
                    agent,
                    "DCS_AGENT_SA_TOKEN_FILE",
                    agent_token.is_some(),
                    "the token it presents to the API",
                ),
                (
                    agent,
                    "DCS_KUBERNETES=true",
                    agent_reviews,
                    "to accept the API's tokens, checked by TokenReview",
                ),
                (
                    api,
                    "DCS_API_SA_TOKEN_FILE",
                    api_token.is_some(),
                    "the token it presents to agents",
                ),
                (
                    api,
                    "DCS_KUBERNETES=true",
                    api_kubernetes,
                    "to accept agents' tokens, checked by TokenReview",
                ),
            ] {
                if !set {
                    problems.push(format!(
                        "{}: in-cluster identity needs {name} ({why})",
                        w.what
                    ));
                }
            }
        }
        Identity::SharedSecret => {
            for (w, name, set) in [
                (agent, "DCS_AGENT_SA_TOKEN_FILE", agent_token.is_some()),
                (agent, "DCS_KUBERNETES=true", agent_reviews),
                (api, "DCS_API_SA_TOKEN_FILE", api_token.is_some()),
            ] {
                if set {
                    problems.push(format!(
                        "{}: sets {name}, but the shared-secret identity uses no \
                         service-account tokens",
                        w.what
                    ));
                }
            }
        }
    }
    // A token one side presents must be one the other side accepts: a
    // readable token file is always sent, never the shared secret instead.
    if api_token.is_some() && !agent_reviews {
        problems.push(format!(
            "{}: presents its service-account token to agents (DCS_API_SA_TOKEN_FILE), but the \
             agents do not accept it (their DCS_KUBERNETES is not true): every call to an agent \
             would be refused",
            api.what
        ));
    }
    if agent_token.is_some() && !api_kubernetes {
        problems.push(format!(
            "{}: presents a service-account token to the API (DCS_AGENT_SA_TOKEN_FILE), but the \
             API does not check such tokens (its DCS_KUBERNETES is not true)",
            agent.what
        ));
    }

    // Audiences: dcs-api for the agents' tokens, dcs-agent for the API's,
    // and what each side accepts is what the other presents.
    let api_accepts =
        env_value(api_c, "DCS_AGENT_TOKEN_AUDIENCE").unwrap_or(DEFAULT_AGENT_TOKEN_AUDIENCE);
    let agents_accept =
        env_value(agent_c, "DCS_API_TOKEN_AUDIENCE").unwrap_or(DEFAULT_API_TOKEN_AUDIENCE);
    if api_kubernetes && api_accepts != AGENT_TO_API_AUDIENCE {
        problems.push(format!(
            "{}: accepts agents' tokens for audience `{api_accepts}` (DCS_AGENT_TOKEN_AUDIENCE); \
             it must be `{AGENT_TO_API_AUDIENCE}`",
            api.what
        ));
    }
    if agent_reviews && agents_accept != API_TO_AGENT_AUDIENCE {
        problems.push(format!(
            "{}: accepts the API's tokens for audience `{agents_accept}` \
             (DCS_API_TOKEN_AUDIENCE); it must be `{API_TO_AGENT_AUDIENCE}`",
            agent.what
        ));
    }
    let mut audiences = Vec::new();
    for (w, c, env, want, peer, accepted, sa) in [
        (
            agent,
            agent_c,
            "DCS_AGENT_SA_TOKEN_FILE",
            AGENT_TO_API_AUDIENCE,
            "the API accepts",
            api_accepts,
            &agent.spec.service_account_name,
        ),
        (
            api,
            api_c,
            "DCS_API_SA_TOKEN_FILE",
            API_TO_AGENT_AUDIENCE,
            "the agents accept",
            agents_accept,
            &api.spec.service_account_name,
        ),
    ] {
        let Some(path) = env_value(c, env) else {
            continue;
        };
        let what = format!("{}, container {}: env {env} = {path}", w.what, c.name);
        match projected_token(w, c, path) {
            Err(e) => problems.push(format!("{what}: {e}")),
            Ok(token) => match token.audience {
                None => problems.push(format!(
                    "{what}: volume `{}` projects a token without audience, i.e. for the \
                     Kubernetes API server: whoever receives it could call the API server as {}; \
                     give it audience `{want}`",
                    token.volume,
                    sa.as_deref().unwrap_or("its service account")
                )),
                Some(audience) => {
                    if audience != want {
                        problems.push(format!(
                            "{what}: the token's audience is `{audience}`; it must be `{want}` \
                             (one audience per direction)"
                        ));
                    }
                    if audience != accepted {
                        problems.push(format!(
                            "{what}: the token's audience is `{audience}`, but {peer} tokens \
                             for `{accepted}`"
                        ));
                    }
                    audiences.push(audience);
                }
            },
        }
    }
    if audiences.len() == 2 && audiences[0] == audiences[1] {
        problems.push(format!(
            "the agents and the API present tokens for the same audience `{}`: a token one side \
             receives would be good against the other; use one audience per direction",
            audiences[0]
        ));
    }

    // The service accounts each side expects are the other's.
    for (checks, w, c, env, default, other) in [
        (
            api_kubernetes,
            api,
            api_c,
            "DCS_AGENT_SERVICE_ACCOUNT",
            DEFAULT_AGENT_SERVICE_ACCOUNT,
            agent,
        ),
        (
            agent_reviews,
            agent,
            agent_c,
            "DCS_API_SERVICE_ACCOUNT",
            DEFAULT_API_SERVICE_ACCOUNT,
            api,
        ),
    ] {
        let expected = format!(
            "{}:{}",
            other.namespace,
            other
                .spec
                .service_account_name
                .as_deref()
                .unwrap_or("default")
        );
        let named = env_value(c, env).unwrap_or(default);
        if checks && named != expected {
            problems.push(format!(
                "{}: {env} is `{named}`, but {} runs as `{expected}`",
                w.what, other.what
            ));
        }
    }

    // Credentials for the Kubernetes API server. The agent: only the
    // projected ones, and only when it reviews the API's tokens; nothing it
    // does not use.
    if agent_reviews {
        if let Err(e) = kube_api_access(agent, agent_c) {
            problems.push(format!(
                "{}: checks the API's tokens by TokenReview, so it needs credentials for the \
                 Kubernetes API server: {e}",
                agent.what
            ));
        }
    } else if kube_api_access(agent, agent_c).is_ok()
        || agent_c
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| m.mount_path.trim_end_matches('/') == KUBE_API_ACCESS_DIR)
    {
        problems.push(format!(
            "{}: mounts credentials for the Kubernetes API server at {KUBE_API_ACCESS_DIR}, \
             which it does not use without DCS_KUBERNETES",
            agent.what
        ));
    }
    for volume in agent.spec.volumes.iter().flatten() {
        let audiences = volume
            .projected
            .iter()
            .flat_map(|p| p.sources.iter().flatten())
            .filter_map(|s| s.service_account_token.as_ref())
            .map(|t| t.audience.clone().filter(|a| !a.is_empty()));
        for audience in audiences {
            let unused = match &audience {
                None => !agent_reviews,
                Some(_) => agent_token.is_none(),
            };
            if unused {
                problems.push(format!(
                    "{}: volume `{}` projects a token {} that the agent does not use",
                    agent.what,
                    volume.name,
                    audience.map_or("for the Kubernetes API server".to_string(), |a| {
                        format!("with audience `{a}`")
                    })
                ));
            }
        }
    }
    if api_kubernetes {
        let automount = api
            .spec
            .automount_service_account_token
            .or_else(|| {
                bundle
                    .service_accounts()
                    .find(|sa| sa.metadata.name == api.spec.service_account_name)
                    .and_then(|sa| sa.automount_service_account_token)
            })
            .unwrap_or(true);
        if !automount && let Err(e) = kube_api_access(api, api_c) {
            problems.push(format!(
                "{}: uses the Kubernetes API (DCS_KUBERNETES) without credentials: no \
                 automounted token, and {e}",
                api.what
            ));
        }
    }

    // The shared secret: the fallback either side may still sign with, and
    // the agent's probes' tokens. Both read the same one.
    let mut shared = Vec::new();
    for (w, c) in [(agent, agent_c), (api, api_c)] {
        match env_value(c, "DCS_AGENT_SECRET_FILE") {
            None => problems.push(format!(
                "{}: DCS_AGENT_SECRET_FILE must name the shared secret (the fallback identity, \
                 and the agent's probes)",
                w.what
            )),
            Some(path) => {
                if let Ok(found) = secret_file(w, c, path) {
                    shared.push(found);
                }
            }
        }
    }
    if shared.len() == 2 && shared[0] != shared[1] {
        problems.push(format!(
            "the agents and the API read the shared secret from different Secrets: {:?} and {:?}",
            shared[0], shared[1]
        ));
    }
}

#[cfg(test)]
mod tests {
    use crate::deploy_policy::violations::{
        CONTAINER, POD, assert_caught, doc, index_of, remove, remove_named, set,
    };
    use crate::deploy_policy::{AGENT, API};
    use serde_json::Value;
    use serde_json::json;

    /// Audiences, identity modes, service accounts and credentials, each broken once.
    #[test]
    fn catches_audience_mode_and_credential_faults() {
        assert_caught(&[
            // In-cluster identity.
            (
                "the agents' token for the API server",
                "projects a token without audience, i.e. for the Kubernetes API server",
                |b, _| {
                    let agent = doc(b, "DaemonSet", AGENT);
                    let i = index_of(agent, &format!("{POD}/volumes"), "token-for-api");
                    remove(
                        agent,
                        &format!(
                            "{POD}/volumes/{i}/projected/sources/0/serviceAccountToken/audience"
                        ),
                    );
                },
            ),
            (
                "the agents' token for the wrong audience",
                "the token's audience is `dcs-agent`, but the API accepts tokens for `dcs-api`",
                |b, _| {
                    let agent = doc(b, "DaemonSet", AGENT);
                    let i = index_of(agent, &format!("{POD}/volumes"), "token-for-api");
                    set(
                        agent,
                        &format!(
                            "{POD}/volumes/{i}/projected/sources/0/serviceAccountToken/audience"
                        ),
                        json!("dcs-agent"),
                    );
                },
            ),
            (
                "one audience both ways",
                "present tokens for the same audience `dcs-api`",
                |b, _| {
                    let api = doc(b, "Deployment", API);
                    let i = index_of(api, &format!("{POD}/volumes"), "token-for-agents");
                    set(
                        api,
                        &format!(
                            "{POD}/volumes/{i}/projected/sources/0/serviceAccountToken/audience"
                        ),
                        json!("dcs-api"),
                    );
                },
            ),
            (
                "the API accepting the default audience",
                "accepts agents' tokens for audience `dcs-agent`",
                |b, _| {
                    remove_named(
                        doc(b, "Deployment", API),
                        &format!("{CONTAINER}/env"),
                        "DCS_AGENT_TOKEN_AUDIENCE",
                    );
                },
            ),
            (
                "no token volume in the agent",
                "env DCS_AGENT_SA_TOKEN_FILE = /var/run/secrets/dcs/token: /var/run/secrets/dcs/token \
             is not inside any volume mount",
                |b, _| {
                    let agent = doc(b, "DaemonSet", AGENT);
                    remove_named(agent, &format!("{POD}/volumes"), "token-for-api");
                    remove_named(agent, &format!("{CONTAINER}/volumeMounts"), "token-for-api");
                },
            ),
            (
                "the agents' token file in a Secret",
                "which projects no service-account token at `shared-secret`",
                |b, _| {
                    let agent = doc(b, "DaemonSet", AGENT);
                    let i = index_of(
                        agent,
                        &format!("{CONTAINER}/env"),
                        "DCS_AGENT_SA_TOKEN_FILE",
                    );
                    set(
                        agent,
                        &format!("{CONTAINER}/env/{i}/value"),
                        json!("/etc/dcs/agent/shared-secret"),
                    );
                },
            ),
            (
                "agents refusing the API's tokens",
                "but the agents do not accept it",
                |b, _| {
                    remove_named(
                        doc(b, "DaemonSet", AGENT),
                        &format!("{CONTAINER}/env"),
                        "DCS_KUBERNETES",
                    );
                },
            ),
            (
                "the API without its token",
                "in-cluster identity needs DCS_API_SA_TOKEN_FILE",
                |b, _| {
                    remove_named(
                        doc(b, "Deployment", API),
                        &format!("{CONTAINER}/env"),
                        "DCS_API_SA_TOKEN_FILE",
                    );
                },
            ),
            (
                "the API expecting another service account",
                "DCS_AGENT_SERVICE_ACCOUNT is `dcs-system:default`, but DaemonSet dcs-system/dcs-agent \
             runs as `dcs-system:dcs-agent`",
                |b, _| {
                    let api = doc(b, "Deployment", API);
                    let i = index_of(
                        api,
                        &format!("{CONTAINER}/env"),
                        "DCS_AGENT_SERVICE_ACCOUNT",
                    );
                    set(
                        api,
                        &format!("{CONTAINER}/env/{i}/value"),
                        json!("dcs-system:default"),
                    );
                },
            ),
            (
                "the agent without the API server's CA",
                "lacks `ca.crt` (from the ConfigMap kube-root-ca.crt)",
                |b, _| {
                    let agent = doc(b, "DaemonSet", AGENT);
                    let i = index_of(agent, &format!("{POD}/volumes"), "kube-api-access");
                    let sources = agent
                        .pointer_mut(&format!("{POD}/volumes/{i}/projected/sources"))
                        .and_then(Value::as_array_mut)
                        .unwrap();
                    sources.retain(|s| s.get("configMap").is_none());
                },
            ),
            (
                "no shared secret in the API",
                "DCS_AGENT_SECRET_FILE must name the shared secret",
                |b, _| {
                    remove_named(
                        doc(b, "Deployment", API),
                        &format!("{CONTAINER}/env"),
                        "DCS_AGENT_SECRET_FILE",
                    );
                },
            ),
        ]);
    }
}
