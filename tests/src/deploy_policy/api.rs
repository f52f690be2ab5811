//! The API's Deployment: replicated, behind a Service, protected by a
//! PodDisruptionBudget, probed on /readyz and /healthz.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::bundle::Bundle;
use super::parse::Object;
use super::reachability::{selector_is_empty, selector_matches};
use super::{API, API_PORT};

pub(super) fn check_api(bundle: &Bundle, problems: &mut Vec<String>) {
    let Some(api) = bundle.workload("Deployment", API) else {
        return;
    };
    let replicas = bundle.objects.iter().find_map(|o| match o {
        Object::Deployment(d) if d.metadata.name.as_deref() == Some(API) => {
            Some(d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1))
        }
        _ => None,
    });
    if replicas.unwrap_or(1) < 2 {
        problems.push(format!("{}: needs at least 2 replicas", api.what));
    }
    let service_ok = bundle.objects.iter().any(|o| match o {
        Object::Service(s) => s.spec.as_ref().is_some_and(|spec| {
            spec.selector.as_ref().is_some_and(|sel| {
                !sel.is_empty() && sel.iter().all(|(k, v)| api.labels.get(k) == Some(v))
            }) && spec.ports.iter().flatten().any(|p| {
                p.port == 80
                    && match &p.target_port {
                        Some(IntOrString::Int(n)) => *n == API_PORT,
                        Some(IntOrString::String(name)) => api.spec.containers.iter().any(|c| {
                            c.ports.iter().flatten().any(|cp| {
                                cp.name.as_deref() == Some(name) && cp.container_port == API_PORT
                            })
                        }),
                        None => false,
                    }
            })
        }),
        _ => false,
    });
    if !service_ok {
        problems.push(format!(
            "{}: no Service selects its pods with port 80 -> {API_PORT}",
            api.what
        ));
    }
    let pdb_ok = bundle.objects.iter().any(|o| match o {
        Object::PodDisruptionBudget(p) => p
            .spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .is_some_and(|s| !selector_is_empty(s) && selector_matches(s, &api.labels)),
        _ => false,
    });
    if !pdb_ok {
        problems.push(format!(
            "{}: no PodDisruptionBudget selects its pods",
            api.what
        ));
    }
    for container in &api.spec.containers {
        for (name, probe) in [
            ("readinessProbe", &container.readiness_probe),
            ("livenessProbe", &container.liveness_probe),
        ] {
            let path = probe
                .as_ref()
                .and_then(|p| p.http_get.as_ref())
                .and_then(|h| h.path.as_deref());
            let want = if name == "readinessProbe" {
                "/readyz"
            } else {
                "/healthz"
            };
            if path != Some(want) {
                problems.push(format!(
                    "{}, container {}: {name} must be an httpGet on {want}, is {path:?}",
                    api.what, container.name
                ));
            }
        }
    }
}
