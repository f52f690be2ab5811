//! What the NetworkPolicies of the bundle let through, evaluated the way
//! the API server and a NetworkPolicy implementation would: label
//! selectors, policy types, ports and peers.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::NAMESPACE;
use super::bundle::{Bundle, Workload, namespace_of};

pub(super) fn selector_matches(
    selector: &LabelSelector,
    labels: &BTreeMap<String, String>,
) -> bool {
    let by_labels = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expressions = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.clone().unwrap_or_default();
        match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            _ => false,
        }
    });
    by_labels && by_expressions
}

pub(super) fn selector_is_empty(selector: &LabelSelector) -> bool {
    selector.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(|m| m.is_empty())
}

/// Does a NetworkPolicy port list admit `port` (number, or the container
/// port's name) over TCP?
pub(super) fn ports_admit(
    ports: Option<&Vec<NetworkPolicyPort>>,
    port: i32,
    port_name: Option<&str>,
) -> bool {
    let Some(ports) = ports.filter(|p| !p.is_empty()) else {
        return true;
    };
    ports.iter().any(|p| {
        let tcp = p.protocol.as_deref().unwrap_or("TCP") == "TCP";
        let matches = match &p.port {
            None => true,
            Some(IntOrString::Int(n)) => {
                *n == port || p.end_port.is_some_and(|end| *n <= port && port <= end)
            }
            Some(IntOrString::String(name)) => Some(name.as_str()) == port_name,
        };
        tcp && matches
    })
}

/// Does a peer list admit pods with `labels` in the policy's own namespace?
/// An empty list admits everything; ipBlocks cannot be judged here and do
/// not count.
pub(super) fn peers_admit(
    peers: Option<&Vec<NetworkPolicyPeer>>,
    labels: &BTreeMap<String, String>,
) -> bool {
    let Some(peers) = peers.filter(|p| !p.is_empty()) else {
        return true;
    };
    peers.iter().any(|peer| {
        if peer.ip_block.is_some() {
            return false;
        }
        let namespace_ok = peer.namespace_selector.as_ref().is_none_or(|ns| {
            let mut ns_labels = BTreeMap::new();
            ns_labels.insert(
                "kubernetes.io/metadata.name".to_string(),
                NAMESPACE.to_string(),
            );
            selector_matches(ns, &ns_labels)
        });
        let pod_ok = peer
            .pod_selector
            .as_ref()
            .is_none_or(|s| selector_matches(s, labels));
        namespace_ok && pod_ok
    })
}

pub(super) fn policy_types(policy: &NetworkPolicy) -> Vec<String> {
    let spec = policy.spec.clone().unwrap_or_default();
    spec.policy_types.unwrap_or_else(|| {
        // The API server's default: Ingress always, Egress when rules exist.
        let mut types = vec!["Ingress".to_string()];
        if spec.egress.is_some() {
            types.push("Egress".to_string());
        }
        types
    })
}

pub(super) fn policies_selecting<'a>(
    bundle: &'a Bundle,
    workload: &'a Workload,
    direction: &'a str,
) -> impl Iterator<Item = &'a NetworkPolicy> {
    bundle.network_policies().filter(move |p| {
        namespace_of(&p.metadata) == workload.namespace
            && policy_types(p).iter().any(|t| t == direction)
            && p.spec
                .as_ref()
                .and_then(|s| s.pod_selector.as_ref())
                .is_none_or(|s| selector_matches(s, &workload.labels))
    })
}

/// May `from` open a TCP connection to `to` on `port` (container port name
/// `port_name`), as far as the NetworkPolicies of the bundle say?
pub(super) fn connection_allowed(
    bundle: &Bundle,
    from: &Workload,
    to: &Workload,
    port: i32,
    port_name: Option<&str>,
) -> bool {
    let mut egress = policies_selecting(bundle, from, "Egress").peekable();
    let egress_ok = egress.peek().is_none()
        || egress.any(|p| {
            p.spec
                .iter()
                .flat_map(|s| s.egress.iter().flatten())
                .any(|rule| {
                    peers_admit(rule.to.as_ref(), &to.labels)
                        && ports_admit(rule.ports.as_ref(), port, port_name)
                })
        });
    let mut ingress = policies_selecting(bundle, to, "Ingress").peekable();
    let ingress_ok = ingress.peek().is_none()
        || ingress.any(|p| {
            p.spec
                .iter()
                .flat_map(|s| s.ingress.iter().flatten())
                .any(|rule| {
                    peers_admit(rule.from.as_ref(), &from.labels)
                        && ports_admit(rule.ports.as_ref(), port, port_name)
                })
        });
    egress_ok && ingress_ok
}

/// May `from` reach an outside address (anything not a pod) on `port`?
pub(super) fn egress_anywhere_allowed(
    bundle: &Bundle,
    from: &Workload,
    port: i32,
    protocol: &str,
) -> bool {
    let mut egress = policies_selecting(bundle, from, "Egress").peekable();
    egress.peek().is_none()
        || egress.any(|p| {
            p.spec
                .iter()
                .flat_map(|s| s.egress.iter().flatten())
                .any(|rule| {
                    let to_ok = rule.to.as_ref().is_none_or(|peers| {
                        peers.is_empty()
                            || peers.iter().any(|peer| {
                                peer.ip_block
                                    .as_ref()
                                    .is_some_and(|b| b.cidr == "0.0.0.0/0" || b.cidr == "::/0")
                            })
                    });
                    let port_ok = rule.ports.as_ref().is_none_or(|ports| {
                        ports.is_empty()
                            || ports.iter().any(|p| {
                                p.protocol.as_deref().unwrap_or("TCP") == protocol
                                    && match &p.port {
                                        None => true,
                                        Some(IntOrString::Int(n)) => *n == port,
                                        Some(IntOrString::String(_)) => false,
                                    }
                            })
                    });
                    to_ok && port_ok
                })
        })
}

/// `NetworkPolicy <name>` for messages, and the policy's ingress rules.
pub(super) fn ingress_rules(policy: &NetworkPolicy) -> (String, Vec<NetworkPolicyIngressRule>) {
    let what = format!(
        "NetworkPolicy {}",
        policy.metadata.name.clone().unwrap_or_default()
    );
    let rules = policy
        .spec
        .as_ref()
        .and_then(|s| s.ingress.clone())
        .unwrap_or_default();
    (what, rules)
}
