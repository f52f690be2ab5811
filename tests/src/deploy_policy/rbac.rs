//! RBAC: no wildcards, no built-in roles, and exactly the permissions each
//! side needs (the API: pods get/list/watch and TokenReviews; the agent:
//! TokenReviews when it checks the API's tokens, nothing otherwise).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::rbac::v1::PolicyRule;

use super::bundle::{Bundle, namespace_of};
use super::parse::Object;
use super::settings::env_flag;
use super::{AGENT, AGENT_PERMISSIONS, API, API_PERMISSIONS, NAMESPACE};

pub(super) fn check_rbac(bundle: &Bundle, problems: &mut Vec<String>) {
    let triples = |list: &[(&str, &str, &str)]| -> BTreeSet<(String, String, String)> {
        list.iter()
            .map(|(g, r, v)| (g.to_string(), r.to_string(), v.to_string()))
            .collect()
    };
    let api_allowed = triples(API_PERMISSIONS);
    // The agent needs TokenReviews only when it checks the API's tokens.
    let agent_reviews = bundle
        .workload("DaemonSet", AGENT)
        .and_then(|w| w.spec.containers.first())
        .is_some_and(|c| env_flag(c, "DCS_KUBERNETES"));
    let agent_allowed = if agent_reviews {
        triples(AGENT_PERMISSIONS)
    } else {
        BTreeSet::new()
    };
    let any_allowed: BTreeSet<_> = api_allowed.union(&agent_allowed).cloned().collect();
    let mut check_rules = |what: String, rules: &[PolicyRule], aggregated: bool| {
        if aggregated {
            problems.push(format!(
                "{what}: aggregationRule would pull in other roles' rules"
            ));
        }
        for (i, rule) in rules.iter().enumerate() {
            let lists = [
                ("apiGroups", rule.api_groups.clone().unwrap_or_default()),
                ("resources", rule.resources.clone().unwrap_or_default()),
                ("verbs", rule.verbs.clone()),
                (
                    "resourceNames",
                    rule.resource_names.clone().unwrap_or_default(),
                ),
            ];
            for (field, values) in &lists {
                if values.iter().any(|v| v.contains('*')) {
                    problems.push(format!(
                        "{what}: rule {i} has a wildcard in {field}: {values:?}"
                    ));
                }
            }
            if rule
                .non_resource_urls
                .as_ref()
                .is_some_and(|u| !u.is_empty())
            {
                problems.push(format!("{what}: rule {i} grants nonResourceURLs"));
            }
            for group in rule.api_groups.iter().flatten() {
                for resource in rule.resources.iter().flatten() {
                    for verb in &rule.verbs {
                        let triple = (group.clone(), resource.clone(), verb.clone());
                        if !any_allowed.contains(&triple)
                            && !verb.contains('*')
                            && !resource.contains('*')
                        {
                            problems.push(format!(
                                "{what}: rule {i} grants `{verb}` on `{resource}` (apiGroup \
                                 \"{group}\"); only pods get/list/watch and tokenreviews create \
                                 are allowed"
                            ));
                        }
                    }
                }
            }
        }
    };
    for object in &bundle.objects {
        match object {
            Object::ClusterRole(r) => check_rules(
                format!(
                    "ClusterRole {}",
                    r.metadata.name.clone().unwrap_or_default()
                ),
                r.rules.as_deref().unwrap_or_default(),
                r.aggregation_rule.is_some(),
            ),
            Object::Role(r) => check_rules(
                format!("Role {}", r.metadata.name.clone().unwrap_or_default()),
                r.rules.as_deref().unwrap_or_default(),
                false,
            ),
            _ => {}
        }
    }

    let agent_sa = bundle
        .workload("DaemonSet", AGENT)
        .and_then(|w| w.spec.service_account_name.clone());
    let api_sa = bundle
        .workload("Deployment", API)
        .and_then(|w| w.spec.service_account_name.clone());
    // Who is granted what, cluster-wide: (service account) -> permissions.
    let mut granted: BTreeMap<String, BTreeSet<(String, String, String)>> = BTreeMap::new();
    for object in &bundle.objects {
        let (what, role_ref, subjects, binding_ns) = match object {
            Object::ClusterRoleBinding(b) => (
                format!(
                    "ClusterRoleBinding {}",
                    b.metadata.name.clone().unwrap_or_default()
                ),
                &b.role_ref,
                b.subjects.clone().unwrap_or_default(),
                None,
            ),
            Object::RoleBinding(b) => (
                format!(
                    "RoleBinding {}",
                    b.metadata.name.clone().unwrap_or_default()
                ),
                &b.role_ref,
                b.subjects.clone().unwrap_or_default(),
                Some(namespace_of(&b.metadata)),
            ),
            _ => continue,
        };
        let rules = bundle.role_rules(
            &role_ref.kind,
            &role_ref.name,
            binding_ns.as_deref().unwrap_or_default(),
        );
        let Some(rules) = rules else {
            problems.push(format!(
                "{what}: binds {} {}, which is not in the base (never bind built-in roles such \
                 as cluster-admin or edit)",
                role_ref.kind, role_ref.name
            ));
            continue;
        };
        let mut permissions = BTreeSet::new();
        for rule in &rules {
            for g in rule.api_groups.iter().flatten() {
                for r in rule.resources.iter().flatten() {
                    for v in &rule.verbs {
                        permissions.insert((g.clone(), r.clone(), v.clone()));
                    }
                }
            }
        }
        for subject in &subjects {
            let is_ours = subject.kind == "ServiceAccount"
                && subject.namespace.as_deref() == Some(NAMESPACE)
                && bundle
                    .service_accounts()
                    .any(|sa| sa.metadata.name.as_deref() == Some(subject.name.as_str()));
            if !is_ours {
                problems.push(format!(
                    "{what}: subject {} {} ({:?}) is not a service account of this base",
                    subject.kind, subject.name, subject.namespace
                ));
                continue;
            }
            // What each service account may be given, wherever.
            let (allowed, whose, may) = if Some(&subject.name) == agent_sa.as_ref() {
                (
                    &agent_allowed,
                    "the agent's",
                    if agent_reviews {
                        "the agent may only create tokenreviews"
                    } else {
                        "the agent needs nothing from the Kubernetes API without DCS_KUBERNETES"
                    },
                )
            } else if Some(&subject.name) == api_sa.as_ref() {
                (
                    &api_allowed,
                    "the API's",
                    "the API may only get/list/watch pods and create tokenreviews",
                )
            } else {
                (&BTreeSet::new(), "the", "it needs nothing")
            };
            for (g, r, v) in permissions.difference(allowed) {
                problems.push(format!(
                    "{what}: binds {whose} service account {} to `{v}` on `{r}` (apiGroup \
                     \"{g}\"); {may}",
                    subject.name
                ));
            }
            // Only cluster-wide grants count for what they need.
            if binding_ns.is_none() {
                granted
                    .entry(subject.name.clone())
                    .or_default()
                    .extend(permissions.iter().cloned());
            }
        }
    }
    for (sa, needed, why) in [
        (&api_sa, API_PERMISSIONS, "which the API needs"),
        (
            &agent_sa,
            if agent_reviews {
                AGENT_PERMISSIONS
            } else {
                &[]
            },
            "which the agent needs to check the API's tokens (DCS_KUBERNETES)",
        ),
    ] {
        let Some(sa) = sa else {
            continue;
        };
        let has = granted.get(sa).cloned().unwrap_or_default();
        for (g, r, v) in needed {
            if !has.contains(&(g.to_string(), r.to_string(), v.to_string())) {
                problems.push(format!(
                    "service account {sa}: lacks `{v}` on `{r}` (apiGroup \"{g}\") cluster-wide, \
                     {why}"
                ));
            }
        }
    }
    if let Some(agent_sa) = agent_sa {
        let sa = bundle
            .service_accounts()
            .find(|s| s.metadata.name.as_deref() == Some(agent_sa.as_str()));
        if sa.is_some_and(|s| s.automount_service_account_token != Some(false)) {
            problems.push(format!(
                "ServiceAccount {agent_sa}: automountServiceAccountToken must be false"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::deploy_policy::violations::{assert_caught, doc, set};
    use crate::deploy_policy::{AGENT, API, NAMESPACE};
    use serde_json::json;

    /// Grants too wide, too many or missing.
    #[test]
    fn catches_wildcards_extra_grants_and_missing_grants() {
        assert_caught(&[
            ("an RBAC wildcard", "has a wildcard in verbs", |b, _| {
                set(doc(b, "ClusterRole", API), "/rules/0/verbs", json!(["*"]));
            }),
            ("reading secrets", "grants `get` on `secrets`", |b, _| {
                set(
                    doc(b, "ClusterRole", API),
                    "/rules/2",
                    json!({"apiGroups": [""],
                "resources": ["secrets"], "verbs": ["get"]}),
                );
            }),
            ("pods/exec", "grants `create` on `pods/exec`", |b, _| {
                set(
                    doc(b, "ClusterRole", API),
                    "/rules/2",
                    json!({"apiGroups": [""],
                "resources": ["pods/exec"], "verbs": ["create"]}),
                );
            }),
            (
                "no TokenReview",
                "lacks `create` on `tokenreviews`",
                |b, _| {
                    let role = doc(b, "ClusterRole", API);
                    role["rules"].as_array_mut().unwrap().truncate(1);
                },
            ),
            (
                "the agent bound to a role",
                "binds the agent's service account",
                |b, _| {
                    set(
                        doc(b, "ClusterRoleBinding", API),
                        "/subjects/1",
                        json!({"kind": "ServiceAccount", "name": AGENT, "namespace": NAMESPACE}),
                    );
                },
            ),
            ("a built-in role", "which is not in the base", |b, _| {
                set(
                    doc(b, "ClusterRoleBinding", API),
                    "/roleRef/name",
                    json!("cluster-admin"),
                );
            }),
            (
                "an extra verb for the agent",
                "ClusterRole dcs-agent: rule 0 grants `get` on `tokenreviews`",
                |b, _| {
                    let role = doc(b, "ClusterRole", AGENT);
                    role["rules"][0]["verbs"]
                        .as_array_mut()
                        .unwrap()
                        .push(json!("get"));
                },
            ),
            (
                "the agent reading pods",
                "binds the agent's service account dcs-agent to `list` on `pods`",
                |b, _| {
                    set(
                        doc(b, "ClusterRole", AGENT),
                        "/rules/1",
                        json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}),
                    );
                },
            ),
            (
                "the agent without TokenReviews",
                "service account dcs-agent: lacks `create` on `tokenreviews`",
                |b, _| {
                    b.retain(|d| {
                        !(d["kind"] == "ClusterRoleBinding" && d["metadata"]["name"] == AGENT)
                    });
                },
            ),
        ]);
    }
}
