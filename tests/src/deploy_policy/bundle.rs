//! The bundle: the parsed objects, and the views of them the checks need
//! (workloads by their pod templates, the example Secrets by name).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, PodSpec, Secret, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::PolicyRule;
use serde_json::Value;

use super::parse::{Object, describe, parse_object, strict};

/// A pod template of some workload.
#[derive(Debug)]
pub struct Workload {
    /// `DaemonSet dcs-system/dcs-agent`
    pub what: String,
    pub kind: &'static str,
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub spec: PodSpec,
}

impl Workload {
    pub fn is_job(&self) -> bool {
        matches!(self.kind, "Job" | "CronJob")
    }

    pub fn containers(&self) -> impl Iterator<Item = &Container> {
        self.spec
            .init_containers
            .iter()
            .flatten()
            .chain(&self.spec.containers)
    }
}

#[derive(Debug, Default)]
pub struct Bundle {
    pub objects: Vec<Object>,
    pub workloads: Vec<Workload>,
    /// Secrets of deploy/examples/secrets.yaml, by name.
    pub example_secrets: BTreeMap<String, Secret>,
}

pub(super) fn namespace_of(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> String {
    meta.namespace.clone().unwrap_or_default()
}

impl Bundle {
    pub(super) fn workload(&self, kind: &str, name: &str) -> Option<&Workload> {
        self.workloads
            .iter()
            .find(|w| w.kind == kind && w.name == name)
    }

    pub(super) fn network_policies(&self) -> impl Iterator<Item = &NetworkPolicy> {
        self.objects.iter().filter_map(|o| match o {
            Object::NetworkPolicy(p) => Some(p),
            _ => None,
        })
    }

    pub(super) fn service_accounts(&self) -> impl Iterator<Item = &ServiceAccount> {
        self.objects.iter().filter_map(|o| match o {
            Object::ServiceAccount(sa) => Some(sa),
            _ => None,
        })
    }

    /// Rules of the (Cluster)Role a binding refers to, if the bundle has it.
    pub(super) fn role_rules(
        &self,
        kind: &str,
        name: &str,
        namespace: &str,
    ) -> Option<Vec<PolicyRule>> {
        self.objects.iter().find_map(|o| match o {
            Object::ClusterRole(r)
                if kind == "ClusterRole" && r.metadata.name.as_deref() == Some(name) =>
            {
                Some(r.rules.clone().unwrap_or_default())
            }
            Object::Role(r)
                if kind == "Role"
                    && r.metadata.name.as_deref() == Some(name)
                    && namespace_of(&r.metadata) == namespace =>
            {
                Some(r.rules.clone().unwrap_or_default())
            }
            _ => None,
        })
    }
}

/// Parses the base's documents and the example Secrets; what cannot be
/// parsed is reported.
pub fn load(base: &[Value], examples: &[Value], problems: &mut Vec<String>) -> Bundle {
    let mut bundle = Bundle::default();
    for value in base {
        if let Some(object) = parse_object(value, problems) {
            bundle.objects.push(object);
        }
    }
    for object in &bundle.objects {
        let (kind, meta, spec): (&'static str, _, Option<&PodSpec>) = match object {
            Object::DaemonSet(o) => (
                "DaemonSet",
                &o.metadata,
                o.spec.as_ref().and_then(|s| s.template.spec.as_ref()),
            ),
            Object::Deployment(o) => (
                "Deployment",
                &o.metadata,
                o.spec.as_ref().and_then(|s| s.template.spec.as_ref()),
            ),
            Object::StatefulSet(o) => (
                "StatefulSet",
                &o.metadata,
                o.spec.as_ref().and_then(|s| s.template.spec.as_ref()),
            ),
            Object::Job(o) => (
                "Job",
                &o.metadata,
                o.spec.as_ref().and_then(|s| s.template.spec.as_ref()),
            ),
            Object::CronJob(o) => (
                "CronJob",
                &o.metadata,
                o.spec
                    .as_ref()
                    .and_then(|s| s.job_template.spec.as_ref())
                    .and_then(|s| s.template.spec.as_ref()),
            ),
            Object::Pod(o) => ("Pod", &o.metadata, o.spec.as_ref()),
            _ => continue,
        };
        let name = meta.name.clone().unwrap_or_default();
        let namespace = namespace_of(meta);
        let full = format!("{kind} {namespace}/{name}");
        let Some(spec) = spec else {
            problems.push(format!("{full}: has no pod template spec"));
            continue;
        };
        let labels = match object {
            Object::DaemonSet(o) => o.spec.as_ref().and_then(|s| s.template.metadata.clone()),
            Object::Deployment(o) => o.spec.as_ref().and_then(|s| s.template.metadata.clone()),
            Object::StatefulSet(o) => o.spec.as_ref().and_then(|s| s.template.metadata.clone()),
            Object::Job(o) => o.spec.as_ref().and_then(|s| s.template.metadata.clone()),
            Object::CronJob(o) => o
                .spec
                .as_ref()
                .and_then(|s| s.job_template.spec.as_ref())
                .and_then(|s| s.template.metadata.clone()),
            Object::Pod(o) => Some(o.metadata.clone()),
            _ => None,
        }
        .and_then(|m| m.labels)
        .unwrap_or_default();
        bundle.workloads.push(Workload {
            what: full,
            kind,
            name,
            namespace,
            labels,
            spec: spec.clone(),
        });
    }
    for value in examples {
        let what = format!("deploy/examples/secrets.yaml: {}", describe(value));
        if value["kind"] != "Secret" || value["apiVersion"] != "v1" {
            problems.push(format!("{what}: only v1 Secrets belong in this file"));
            continue;
        }
        if let Some(secret) = strict::<Secret>(value, &what, problems) {
            let name = secret.metadata.name.clone().unwrap_or_default();
            bundle.example_secrets.insert(name, secret);
        }
    }
    bundle
}
