//! The API's /metrics: on a port of its own, which only the monitoring
//! namespace may reach.

use std::collections::BTreeMap;

use super::bundle::Bundle;
use super::reachability::{ingress_rules, policies_selecting, ports_admit, selector_matches};
use super::settings::{env_value, flag_value};
use super::{API, API_PORT, NAMESPACE};

/// The namespace Prometheus runs in: the only one that may scrape the API.
const MONITORING_NAMESPACE: &str = "monitoring";
/// Namespaces that must not reach the API's metrics port.
const NOT_MONITORING: [&str; 4] = [NAMESPACE, "default", "kube-system", "workshop"];

fn namespace_labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("kubernetes.io/metadata.name".to_string(), name.to_string())])
}

/// `/metrics` of the API is served on a port of its own, not on the API's
/// port (which every pod of the cluster reaches), and only the monitoring
/// namespace may connect to that port.
pub(super) fn check_metrics(bundle: &Bundle, problems: &mut Vec<String>) {
    let Some(api) = bundle.workload("Deployment", API) else {
        return;
    };
    let Some(container) = api.spec.containers.first() else {
        return;
    };
    let args = container.args.clone().unwrap_or_default();
    let listen = env_value(container, "DCS_API_METRICS_LISTEN")
        .or_else(|| flag_value(&args, "--metrics-listen"));
    let port = listen
        .and_then(|l| l.rsplit_once(':'))
        .and_then(|(_, p)| p.parse::<i32>().ok());
    let Some(port) = port.filter(|p| *p != API_PORT) else {
        problems.push(format!(
            "{}: /metrics is served on the API's port, which every pod of the cluster may \
             reach; serve it apart (DCS_API_METRICS_LISTEN)",
            api.what
        ));
        return;
    };
    let port_name = container
        .ports
        .iter()
        .flatten()
        .find(|p| p.container_port == port)
        .map(|p| p.name.clone());
    let Some(port_name) = port_name else {
        problems.push(format!(
            "{}: the metrics port {port} is not a containerPort of the API container",
            api.what
        ));
        return;
    };
    let mut monitoring_admitted = false;
    for policy in policies_selecting(bundle, api, "Ingress") {
        let (what, rules) = ingress_rules(policy);
        for (i, rule) in rules.iter().enumerate() {
            if !ports_admit(rule.ports.as_ref(), port, port_name.as_deref()) {
                continue;
            }
            let peers = rule.from.clone().unwrap_or_default();
            if peers.is_empty() {
                problems.push(format!(
                    "{what}: ingress rule {i} admits every source to the metrics port {port}"
                ));
            }
            for peer in &peers {
                if peer.ip_block.is_some() {
                    problems.push(format!(
                        "{what}: ingress rule {i} admits an ipBlock to the metrics port {port}"
                    ));
                    continue;
                }
                let Some(namespaces) = &peer.namespace_selector else {
                    problems.push(format!(
                        "{what}: ingress rule {i} admits pods of {NAMESPACE} to the metrics port \
                         {port}; only the {MONITORING_NAMESPACE} namespace may scrape it"
                    ));
                    continue;
                };
                for other in NOT_MONITORING {
                    if selector_matches(namespaces, &namespace_labels(other)) {
                        problems.push(format!(
                            "{what}: ingress rule {i} admits namespace {other} to the metrics \
                             port {port}; only the {MONITORING_NAMESPACE} namespace may scrape it"
                        ));
                    }
                }
                if selector_matches(namespaces, &namespace_labels(MONITORING_NAMESPACE)) {
                    monitoring_admitted = true;
                }
            }
        }
    }
    if !monitoring_admitted {
        problems.push(format!(
            "the {MONITORING_NAMESPACE} namespace cannot reach the API's metrics port {port}"
        ));
    }
}

#[cfg(test)]
mod tests {
    use crate::deploy_policy::API;
    use crate::deploy_policy::violations::{CONTAINER, assert_caught, doc, remove, remove_named};
    use serde_json::json;

    /// The metrics port opened to other namespaces, or closed to monitoring.
    #[test]
    fn catches_metrics_open_to_others_or_shut_to_monitoring() {
        assert_caught(&[
            (
                "metrics on the API's port",
                "/metrics is served on the API's port",
                |b, _| {
                    remove_named(
                        doc(b, "Deployment", API),
                        &format!("{CONTAINER}/env"),
                        "DCS_API_METRICS_LISTEN",
                    );
                },
            ),
            (
                "metrics open to every namespace",
                "admits namespace workshop to the metrics port",
                |b, _| {
                    let policy = doc(b, "NetworkPolicy", API);
                    let rules = policy["spec"]["ingress"].as_array_mut().unwrap();
                    for rule in rules.iter_mut().filter(|r| r.to_string().contains("9090")) {
                        rule["from"] = json!([{"namespaceSelector": {}}]);
                    }
                },
            ),
            (
                "metrics open to the API's own namespace",
                "admits pods of dcs-system to the metrics port",
                |b, _| {
                    let policy = doc(b, "NetworkPolicy", API);
                    let rules = policy["spec"]["ingress"].as_array_mut().unwrap();
                    for rule in rules.iter_mut().filter(|r| r.to_string().contains("9090")) {
                        rule["from"] = json!([{"podSelector": {}}]);
                    }
                },
            ),
            (
                "the API port rule opened to every port",
                "admits namespace workshop to the metrics port",
                |b, _| {
                    let policy = doc(b, "NetworkPolicy", API);
                    remove(policy, "/spec/ingress/0/ports");
                },
            ),
            (
                "monitoring shut out",
                "the monitoring namespace cannot reach the API's metrics port",
                |b, _| {
                    let policy = doc(b, "NetworkPolicy", API);
                    let rules = policy["spec"]["ingress"].as_array_mut().unwrap();
                    rules.retain(|r| !r.to_string().contains("9090"));
                },
            ),
        ]);
    }
}
