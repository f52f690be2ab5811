//! NetworkPolicies: only API pods reach the agents, on the agent port; the
//! paths the service needs (agents to API, DNS, PostgreSQL, registries, the
//! Kubernetes API server) stay open.

use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::bundle::Bundle;
use super::reachability::{
    connection_allowed, egress_anywhere_allowed, ingress_rules, policies_selecting,
    selector_matches,
};
use super::settings::env_flag;
use super::{AGENT, AGENT_PORT, API, API_PORT, KUBE_API_PORTS, POSTGRES_PORT};

pub(super) fn check_network(bundle: &Bundle, problems: &mut Vec<String>) {
    let (Some(agent), Some(api)) = (
        bundle.workload("DaemonSet", AGENT),
        bundle.workload("Deployment", API),
    ) else {
        return;
    };
    let agent_port_name = agent
        .spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.container_port == AGENT_PORT)
        .and_then(|p| p.name.clone());
    let api_port_name = api
        .spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.container_port == API_PORT)
        .and_then(|p| p.name.clone());

    // Ingress to the agents: isolated, and only from API pods on the agent
    // port. Policies add up, so every rule of every policy selecting the
    // agents must obey.
    let agent_ingress: Vec<&NetworkPolicy> = policies_selecting(bundle, agent, "Ingress").collect();
    if agent_ingress.is_empty() {
        problems.push(format!(
            "no NetworkPolicy selects the agent pods ({:?}) for Ingress: anything in the \
             cluster could connect to them",
            agent.labels
        ));
    }
    for policy in &agent_ingress {
        let (what, rules) = ingress_rules(policy);
        for (i, rule) in rules.iter().enumerate() {
            let peers = rule.from.clone().unwrap_or_default();
            if peers.is_empty() {
                problems.push(format!(
                    "{what}: ingress rule {i} to the agents has no `from`: it admits every source"
                ));
            }
            for peer in &peers {
                if peer.ip_block.is_some() {
                    problems.push(format!(
                        "{what}: ingress rule {i} to the agents admits an ipBlock; only API pods \
                         may connect"
                    ));
                }
                if peer.namespace_selector.is_some() {
                    problems.push(format!(
                        "{what}: ingress rule {i} to the agents admits pods of other namespaces \
                         (namespaceSelector); only API pods may connect"
                    ));
                }
                match &peer.pod_selector {
                    None => {}
                    Some(selector) => {
                        if !selector_matches(selector, &api.labels) {
                            problems.push(format!(
                                "{what}: ingress rule {i} to the agents admits pods that are not \
                                 the API's ({selector:?})"
                            ));
                        }
                        for other in &bundle.workloads {
                            if other.name != api.name && selector_matches(selector, &other.labels) {
                                problems.push(format!(
                                    "{what}: ingress rule {i} to the agents also admits {}; only \
                                     API pods may connect",
                                    other.what
                                ));
                            }
                        }
                    }
                }
            }
            let ports = rule.ports.clone().unwrap_or_default();
            if ports.is_empty() {
                problems.push(format!(
                    "{what}: ingress rule {i} to the agents admits every port; only {AGENT_PORT}"
                ));
            }
            for port in &ports {
                let ok = port.end_port.is_none()
                    && match &port.port {
                        Some(IntOrString::Int(n)) => *n == AGENT_PORT,
                        Some(IntOrString::String(name)) => Some(name) == agent_port_name.as_ref(),
                        None => false,
                    };
                if !ok {
                    problems.push(format!(
                        "{what}: ingress rule {i} to the agents admits port {:?}; only \
                         {AGENT_PORT}",
                        port.port
                    ));
                }
            }
        }
    }

    // The paths the service needs must stay open.
    if !connection_allowed(bundle, api, agent, AGENT_PORT, agent_port_name.as_deref()) {
        problems.push(format!(
            "the NetworkPolicies do not let API pods reach the agents on port {AGENT_PORT}"
        ));
    }
    if !connection_allowed(bundle, agent, api, API_PORT, api_port_name.as_deref()) {
        problems.push(format!(
            "the NetworkPolicies do not let the agents reach the API on port {API_PORT} \
             (registration, heartbeats, callbacks)"
        ));
    }
    for workload in &bundle.workloads {
        if !egress_anywhere_allowed(bundle, workload, 53, "UDP") {
            problems.push(format!(
                "{}: the NetworkPolicies block DNS (UDP 53)",
                workload.what
            ));
        }
    }
    for workload in bundle
        .workloads
        .iter()
        .filter(|w| w.name == API || w.is_job())
    {
        if !egress_anywhere_allowed(bundle, workload, POSTGRES_PORT, "TCP") {
            problems.push(format!(
                "{}: the NetworkPolicies block PostgreSQL (TCP {POSTGRES_PORT})",
                workload.what
            ));
        }
    }
    if !egress_anywhere_allowed(bundle, api, 443, "TCP") {
        problems.push(format!(
            "{}: the NetworkPolicies block the Kubernetes API server and webhooks (TCP 443)",
            api.what
        ));
    }
    if !egress_anywhere_allowed(bundle, agent, 443, "TCP") {
        problems.push(format!(
            "{}: the NetworkPolicies block registries (TCP 443)",
            agent.what
        ));
    }
    // The Kubernetes API server, for whoever calls it.
    for (w, why) in [
        (agent, "the agent's TokenReviews of the API's tokens"),
        (api, "pod-name targeting and TokenReviews of agents' tokens"),
    ] {
        if !w
            .spec
            .containers
            .first()
            .is_some_and(|c| env_flag(c, "DCS_KUBERNETES"))
        {
            continue;
        }
        for port in KUBE_API_PORTS {
            if !egress_anywhere_allowed(bundle, w, port, "TCP") {
                problems.push(format!(
                    "{}: the NetworkPolicies block the Kubernetes API server (TCP {port}), which \
                     {why} need",
                    w.what
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::deploy_policy::violations::{assert_caught, doc, remove, set};
    use crate::deploy_policy::{AGENT, API};
    use serde_json::json;

    /// Agents opened to others, and paths the service needs cut.
    #[test]
    fn catches_open_agents_and_cut_paths() {
        assert_caught(&[
            (
                "agents open to the cluster",
                "admits pods of other namespaces",
                |b, _| {
                    set(
                        doc(b, "NetworkPolicy", AGENT),
                        "/spec/ingress/0/from/1",
                        json!({"namespaceSelector": {}}),
                    );
                },
            ),
            ("agents open on every port", "admits every port", |b, _| {
                remove(doc(b, "NetworkPolicy", AGENT), "/spec/ingress/0/ports");
            }),
            (
                "agents open to the migration Job",
                "also admits Job dcs-system/dcs-api-migrate",
                |b, _| {
                    set(
                        doc(b, "NetworkPolicy", AGENT),
                        "/spec/ingress/0/from/0/podSelector",
                        json!({"matchLabels": {"app.kubernetes.io/part-of": "dcs"}}),
                    );
                },
            ),
            (
                "agents without an ingress policy",
                "no NetworkPolicy selects the agent pods",
                |b, _| {
                    b.retain(|d| {
                        !(d["kind"] == "NetworkPolicy"
                            && (d["metadata"]["name"] == AGENT
                                || d["metadata"]["name"] == "default-deny"))
                    });
                },
            ),
            (
                "the API cut off from the agents",
                "do not let API pods reach the agents",
                |b, _| {
                    let policy = doc(b, "NetworkPolicy", API);
                    let rules = policy["spec"]["egress"].as_array_mut().unwrap();
                    rules.retain(|r| !r.to_string().contains("dcs-agent"));
                },
            ),
            (
                "agents cut off from the API server",
                "the NetworkPolicies block the Kubernetes API server (TCP 6443), which the agent's",
                |b, _| {
                    let policy = doc(b, "NetworkPolicy", AGENT);
                    let rules = policy["spec"]["egress"].as_array_mut().unwrap();
                    rules.retain(|r| !r.to_string().contains("6443"));
                },
            ),
        ]);
    }
}
