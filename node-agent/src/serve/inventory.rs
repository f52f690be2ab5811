//! The node's container list, kept current in the API: pushed whole when
//! containerd reports a container or task change (debounced), and every
//! half minute in case an event was missed.

use std::time::Duration;

use dcs_protocol::ContainerSummary;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::ApiClient;
use crate::containerd::Containerd;

/// Changes closer together than this are sent as one inventory.
const DEBOUNCE: Duration = Duration::from_millis(300);
const RESYNC: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct Inventory {
    containerd: Containerd,
    api: ApiClient,
}

impl Inventory {
    pub fn new(containerd: Containerd, api: ApiClient) -> Self {
        Self { containerd, api }
    }

    /// The containers now, as the API wants them.
    pub async fn snapshot(&self) -> Result<Vec<ContainerSummary>, crate::containerd::Error> {
        let containers = self.containerd.list_containers().await?;
        let mut list = Vec::with_capacity(containers.len());
        for c in containers {
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
            });
        }
        Ok(list)
    }

    pub async fn push_now(&self) {
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
    pub async fn watch(self, shutdown: CancellationToken) {
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
