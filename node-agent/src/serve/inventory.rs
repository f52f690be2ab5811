//! The node's container list, kept current in the API: pushed whole when
//! containerd reports a container or task change (debounced), and every
//! half minute in case an event was missed.
//!
//! Each container carries the owner of its pod, read from the pod's sandbox
//! (the container CRI labels `io.cri-containerd.kind=sandbox` with the same
//! `io.kubernetes.pod.uid`): CRI gives a sandbox the pod's labels, while an
//! application container's labels start as a copy of its image's labels,
//! which whoever built the image chose. Sandboxes themselves are not
//! listed: they run the pause program, there is nothing to snapshot.

use std::collections::HashMap;
use std::time::Duration;

use dcs_protocol::ContainerSummary;
use dcs_protocol::labels;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::ApiClient;
use crate::containerd::{ContainerInfo, Containerd};

/// Changes closer together than this are sent as one inventory.
const DEBOUNCE: Duration = Duration::from_millis(300);
const RESYNC: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub(super) struct Inventory {
    containerd: Containerd,
    api: ApiClient,
}

impl Inventory {
    pub(super) fn new(containerd: Containerd, api: ApiClient) -> Self {
        Self { containerd, api }
    }

    /// The containers now, as the API wants them.
    pub(super) async fn snapshot(&self) -> Result<Vec<ContainerSummary>, crate::containerd::Error> {
        let containers = self.containerd.list_containers().await?;
        let owners = pod_owners(&containers);
        let mut list = Vec::with_capacity(containers.len());
        for c in containers.iter().filter(|c| !is_sandbox(c)).cloned() {
            let owner = c
                .labels
                .get(labels::POD_UID)
                .and_then(|uid| owners.get(uid.as_str()))
                .cloned();
            let image_digest = match self.containerd.image(&c.image).await {
                Ok(Some(image)) => image.target.map(|t| t.digest),
                _ => None,
            };
            let state = serde_json::to_value(c.runtime_state)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default();
            list.push(ContainerSummary {
                id: c.id,
                image: c.image,
                image_digest,
                state,
                snapshotter: c.snapshotter,
                pod_name: c.pod_name,
                pod_namespace: c.pod_namespace,
                container_name: c.container_name,
                owner,
            });
        }
        Ok(list)
    }

    pub(super) async fn push_now(&self) {
        match self.snapshot().await {
            Ok(list) => {
                if let Err(e) = self.api.inventory(list).await {
                    tracing::warn!(error = %e, "could not send the inventory");
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not list containers"),
        }
    }

    /// Follows containerd's events until shutdown.
    pub(super) async fn watch(self, shutdown: CancellationToken) {
        loop {
            let events = match self.containerd.subscribe_changes().await {
                Ok(events) => events,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot follow containerd events; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(2)) => continue,
                        _ = shutdown.cancelled() => return,
                    }
                }
            };
            tokio::pin!(events);
            loop {
                let next = tokio::select! {
                    next = tokio::time::timeout(RESYNC, events.next()) => next,
                    _ = shutdown.cancelled() => return,
                };
                match next {
                    // Something changed: wait for the burst to end, then send.
                    Ok(Some(())) => {
                        let quiet = tokio::time::sleep(DEBOUNCE);
                        tokio::pin!(quiet);
                        loop {
                            tokio::select! {
                                _ = &mut quiet => break,
                                more = events.next() => if more.is_none() { break },
                            }
                        }
                        self.push_now().await;
                    }
                    Ok(None) => break,
                    Err(_) => self.push_now().await,
                }
            }
        }
    }
}

fn is_sandbox(container: &ContainerInfo) -> bool {
    container.labels.get(labels::CRI_KIND).map(String::as_str) == Some(labels::CRI_KIND_SANDBOX)
}

/// Pod uid -> the owner label of that pod's sandbox. A uid claimed by two
/// sandboxes (which CRI never makes) has no owner.
fn pod_owners(containers: &[ContainerInfo]) -> HashMap<&str, String> {
    let mut owners: HashMap<&str, Option<String>> = HashMap::new();
    for sandbox in containers.iter().filter(|c| is_sandbox(c)) {
        let Some(uid) = sandbox.labels.get(labels::POD_UID) else {
            continue;
        };
        let owner = sandbox.labels.get(labels::OWNER).cloned();
        owners
            .entry(uid.as_str())
            .and_modify(|seen| *seen = None)
            .or_insert(owner);
    }
    owners
        .into_iter()
        .filter_map(|(uid, owner)| Some((uid, owner?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::containerd::TaskState;

    fn container(id: &str, labels: &[(&str, &str)]) -> ContainerInfo {
        ContainerInfo {
            id: id.into(),
            image: "img".into(),
            runtime_state: TaskState::Running,
            snapshotter: "overlayfs".into(),
            snapshot_key: id.into(),
            pod_name: None,
            pod_namespace: None,
            container_name: None,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn the_owner_comes_from_the_sandbox_only() {
        let sandbox = |id, uid, owner| {
            container(
                id,
                &[
                    (labels::CRI_KIND, "sandbox"),
                    (labels::POD_UID, uid),
                    (labels::OWNER, owner),
                ],
            )
        };
        let list = vec![
            sandbox("pod-a", "uid-a", "alice"),
            // The image said `LABEL dcs.io/owner=mallory`: ignored.
            container(
                "app-a",
                &[
                    (labels::CRI_KIND, "container"),
                    (labels::POD_UID, "uid-a"),
                    (labels::OWNER, "mallory"),
                ],
            ),
            // No sandbox for this pod: no owner, whatever it says.
            container(
                "app-b",
                &[(labels::POD_UID, "uid-b"), (labels::OWNER, "mallory")],
            ),
            // Two sandboxes claim one pod: nobody owns it.
            sandbox("pod-c1", "uid-c", "alice"),
            sandbox("pod-c2", "uid-c", "mallory"),
        ];
        let owners = pod_owners(&list);
        assert_eq!(owners.get("uid-a").map(String::as_str), Some("alice"));
        assert_eq!(owners.get("uid-b"), None);
        assert_eq!(owners.get("uid-c"), None);
        assert!(is_sandbox(&list[0]));
        assert!(!is_sandbox(&list[1]));
    }
}
