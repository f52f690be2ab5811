//! containerd's Containers service: what the agent knows about a container.

use std::collections::HashMap;

use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::{GetContainerRequest, ListContainersRequest};
use containerd_client::tonic::Code;
use serde::Serialize;

use super::{Containerd, Error, TaskState};

/// CRI labels kubelet sets on every container; they make the agent pod-aware.
pub use dcs_protocol::labels::{
    CONTAINER_NAME as LABEL_CONTAINER_NAME, POD_NAME as LABEL_POD_NAME,
    POD_NAMESPACE as LABEL_POD_NAMESPACE,
};

/// What the agent knows about one container.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerInfo {
    pub id: String,
    pub image: String,
    pub runtime_state: TaskState,
    pub snapshotter: String,
    pub snapshot_key: String,
    pub pod_name: Option<String>,
    pub pod_namespace: Option<String>,
    pub container_name: Option<String>,
    pub labels: HashMap<String, String>,
}

impl Containerd {
    /// Lists the containers of the namespace with their task state.
    pub async fn list_containers(&self) -> Result<Vec<ContainerInfo>, Error> {
        let containers = ContainersClient::new(self.channel.clone())
            .list(self.request(ListContainersRequest::default()))
            .await
            .map_err(|s| Error::rpc("list containers", s))?
            .into_inner()
            .containers;
        let states = self.task_states().await?;
        let mut list: Vec<ContainerInfo> = containers
            .into_iter()
            .map(|c| {
                let state = states.get(&c.id).copied().unwrap_or(TaskState::None);
                container_info(c, state)
            })
            .collect();
        list.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(list)
    }

    /// One container, by id.
    pub async fn container(&self, id: &str) -> Result<ContainerInfo, Error> {
        let not_found = || Error::ContainerNotFound {
            id: id.to_string(),
            namespace: self.namespace.clone(),
        };
        let response = ContainersClient::new(self.channel.clone())
            .get(self.request(GetContainerRequest { id: id.to_string() }))
            .await
            .map_err(|s| match s.code() {
                Code::NotFound => not_found(),
                _ => Error::rpc("get container", s),
            })?;
        let container = response.into_inner().container.ok_or_else(not_found)?;
        let state = self.task_state(id).await?;
        Ok(container_info(container, state))
    }
}

fn container_info(
    container: containerd_client::services::v1::Container,
    state: TaskState,
) -> ContainerInfo {
    let label = |key: &str| container.labels.get(key).cloned();
    ContainerInfo {
        pod_name: label(LABEL_POD_NAME),
        pod_namespace: label(LABEL_POD_NAMESPACE),
        container_name: label(LABEL_CONTAINER_NAME),
        id: container.id,
        image: container.image,
        runtime_state: state,
        snapshotter: container.snapshotter,
        snapshot_key: container.snapshot_key,
        labels: container.labels,
    }
}
