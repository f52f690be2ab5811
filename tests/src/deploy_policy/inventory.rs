//! The inventory: what the base must contain, all of it in one namespace,
//! and no Secrets (their values would be in git).

use super::bundle::{Bundle, namespace_of};
use super::parse::Object;
use super::{AGENT, API, NAMESPACE};

pub(super) fn check_inventory(bundle: &Bundle, problems: &mut Vec<String>) {
    let has = |f: &dyn Fn(&Object) -> bool| bundle.objects.iter().any(f);
    let named = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, name: &str| {
        meta.name.as_deref() == Some(name)
    };
    if !has(&|o| matches!(o, Object::Namespace(n) if named(&n.metadata, NAMESPACE))) {
        problems.push(format!("the base has no Namespace {NAMESPACE}"));
    }
    if bundle.workload("DaemonSet", AGENT).is_none() {
        problems.push(format!("the base has no DaemonSet {AGENT}"));
    }
    if bundle.workload("Deployment", API).is_none() {
        problems.push(format!("the base has no Deployment {API}"));
    }
    if !bundle.workloads.iter().any(|w| {
        w.kind == "Job"
            && w.spec.containers.iter().any(|c| {
                c.args
                    .as_ref()
                    .is_some_and(|a| a.first().map(String::as_str) == Some("migrate"))
            })
    }) {
        problems.push("the base has no Job running `dcs-api migrate`".to_string());
    }
    if !has(&|o| matches!(o, Object::Service(s) if named(&s.metadata, API))) {
        problems.push(format!("the base has no Service {API}"));
    }
    for object in &bundle.objects {
        let (what, meta) = match object {
            Object::Namespace(_) | Object::ClusterRole(_) | Object::ClusterRoleBinding(_) => {
                continue;
            }
            Object::Secret(s) => {
                problems.push(format!(
                    "Secret {}: Secrets do not belong in the base (their values would be in \
                     git): keep examples in deploy/examples/secrets.yaml",
                    s.metadata.name.clone().unwrap_or_default()
                ));
                continue;
            }
            Object::ServiceAccount(o) => ("ServiceAccount", &o.metadata),
            Object::Role(o) => ("Role", &o.metadata),
            Object::RoleBinding(o) => ("RoleBinding", &o.metadata),
            Object::ConfigMap(o) => ("ConfigMap", &o.metadata),
            Object::Service(o) => ("Service", &o.metadata),
            Object::DaemonSet(o) => ("DaemonSet", &o.metadata),
            Object::Deployment(o) => ("Deployment", &o.metadata),
            Object::StatefulSet(o) => ("StatefulSet", &o.metadata),
            Object::Job(o) => ("Job", &o.metadata),
            Object::CronJob(o) => ("CronJob", &o.metadata),
            Object::Pod(o) => ("Pod", &o.metadata),
            Object::NetworkPolicy(o) => ("NetworkPolicy", &o.metadata),
            Object::PodDisruptionBudget(o) => ("PodDisruptionBudget", &o.metadata),
        };
        if namespace_of(meta) != NAMESPACE {
            problems.push(format!(
                "{what} {}: is in namespace `{}`, not {NAMESPACE}",
                meta.name.clone().unwrap_or_default(),
                namespace_of(meta)
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::deploy_policy::violations::assert_caught;

    /// A Secret rendered into the base.
    #[test]
    fn catches_a_secret_in_the_base() {
        assert_caught(&[(
            "a Secret in the base",
            "Secrets do not belong in the base",
            |b, e| {
                b.push(e[0].clone());
            },
        )]);
    }
}
