//! The one place that talks to containerd over gRPC.
//!
//! Every request carries the fixed namespace of this client; requests that
//! create content or snapshots also carry a lease, because containerd
//! collects anything written outside a lease at once.

mod content;
mod error;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::diff_client::DiffClient;
use containerd_client::services::v1::events_client::EventsClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    MountsRequest, RemoveSnapshotRequest, StatSnapshotRequest, ViewSnapshotRequest,
};
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::version_client::VersionClient;
use containerd_client::services::v1::{
    CreateImageRequest, CreateRequest as CreateLeaseRequest, DeleteRequest as DeleteLeaseRequest,
    DiffRequest, GetContainerRequest, GetImageRequest, GetRequest as GetTaskRequest, Image,
    ListContainersRequest, ListRequest as ListLeasesRequest, ListTasksRequest, PauseTaskRequest,
    ResumeTaskRequest, SubscribeRequest, UpdateImageRequest,
};
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::{Code, Request};
use containerd_client::types::Mount;
use serde::Serialize;

pub use crate::describe_error;
pub use content::BlobWriter;
pub use error::Error;

use crate::image::Descriptor;

/// CRI labels kubelet sets on every container; they make the agent pod-aware.
pub use dcs_protocol::labels::{
    CONTAINER_NAME as LABEL_CONTAINER_NAME, POD_NAME as LABEL_POD_NAME,
    POD_NAMESPACE as LABEL_POD_NAMESPACE,
};

/// Label on leases created by this agent, so it can find and drop its own
/// leftovers after a crash.
pub const LEASE_OWNER_LABEL: &str = "dcs.io/owner";
pub const LEASE_OWNER: &str = "dcs-agent";
/// Label on a commit's lease naming its container, so a restarted agent can
/// resume a task that a commit interrupted by a crash left paused.
pub const LEASE_CONTAINER_LABEL: &str = "dcs.io/container";

/// How long connecting to containerd may take.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A client of one containerd daemon, bound to one namespace.
#[derive(Clone)]
pub struct Containerd {
    channel: Channel,
    namespace: String,
    socket: PathBuf,
}

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

/// The state of a container's task, as containerd reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    /// The container has no task (it was created but never started, or its
    /// task was deleted).
    None,
    Created,
    Running,
    Stopped,
    Paused,
    Pausing,
    Unknown,
}

impl TaskState {
    fn from_status(status: i32) -> Self {
        use containerd_client::types::v1::Status;
        match Status::try_from(status) {
            Ok(Status::Created) => Self::Created,
            Ok(Status::Running) => Self::Running,
            Ok(Status::Stopped) => Self::Stopped,
            Ok(Status::Paused) => Self::Paused,
            Ok(Status::Pausing) => Self::Pausing,
            _ => Self::Unknown,
        }
    }
}

/// A lease that keeps everything created under it alive until it is deleted
/// (or expires, if the agent dies before deleting it).
#[derive(Debug, Clone)]
pub struct Lease {
    pub id: String,
}

impl Containerd {
    /// Connects to the containerd socket and checks that it answers.
    pub async fn connect(socket: &Path, namespace: &str) -> Result<Self, Error> {
        let connect_error = |message: String| Error::Connect {
            socket: socket.to_path_buf(),
            message,
        };
        if !socket.exists() {
            return Err(connect_error("no such socket".into()));
        }
        // A hung daemon accepts connections and never answers: bound the wait.
        let timeout = || connect_error(format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()));
        let channel = tokio::time::timeout(CONNECT_TIMEOUT, containerd_client::connect(socket))
            .await
            .map_err(|_| timeout())?
            .map_err(|e| connect_error(crate::describe_error(&e)))?;
        let client = Self {
            channel,
            namespace: namespace.to_string(),
            socket: socket.to_path_buf(),
        };
        tokio::time::timeout(CONNECT_TIMEOUT, client.version())
            .await
            .map_err(|_| timeout())?
            .map_err(|e| connect_error(e.to_string()))?;
        Ok(client)
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The same daemon, another namespace.
    pub fn with_namespace(&self, namespace: &str) -> Self {
        Self {
            namespace: namespace.to_string(),
            ..self.clone()
        }
    }

    /// Wraps a message with the namespace header.
    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        // Namespaces are validated at start-up, so they are valid header values.
        if let Ok(value) = self.namespace.parse() {
            request.metadata_mut().insert("containerd-namespace", value);
        }
        request
    }

    /// Wraps a message with the namespace and lease headers.
    fn leased<T>(&self, message: T, lease: &Lease) -> Request<T> {
        let mut request = self.request(message);
        if let Ok(value) = lease.id.parse() {
            request.metadata_mut().insert("containerd-lease", value);
        }
        request
    }

    pub async fn version(&self) -> Result<String, Error> {
        let response = VersionClient::new(self.channel.clone())
            .version(())
            .await
            .map_err(|s| Error::rpc("version", s))?;
        Ok(response.into_inner().version)
    }

    /// Lists the containers of the namespace with their task state.
    pub async fn list_containers(&self) -> Result<Vec<ContainerInfo>, Error> {
        let containers = ContainersClient::new(self.channel.clone())
            .list(self.request(ListContainersRequest::default()))
            .await
            .map_err(|s| Error::rpc("list containers", s))?
            .into_inner()
            .containers;
        let tasks = TasksClient::new(self.channel.clone())
            .list(self.request(ListTasksRequest::default()))
            .await
            .map_err(|s| Error::rpc("list tasks", s))?
            .into_inner()
            .tasks;
        let states: HashMap<String, TaskState> = tasks
            .into_iter()
            // containerd 1.6 names the container in `id` and leaves
            // `container_id` empty for a task's init process.
            .map(|t| {
                let id = if t.container_id.is_empty() {
                    t.id
                } else {
                    t.container_id
                };
                (id, TaskState::from_status(t.status))
            })
            .collect();
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
        let response = ContainersClient::new(self.channel.clone())
            .get(self.request(GetContainerRequest { id: id.to_string() }))
            .await
            .map_err(|s| match s.code() {
                Code::NotFound => Error::ContainerNotFound {
                    id: id.to_string(),
                    namespace: self.namespace.clone(),
                },
                _ => Error::rpc("get container", s),
            })?;
        let container =
            response
                .into_inner()
                .container
                .ok_or_else(|| Error::ContainerNotFound {
                    id: id.to_string(),
                    namespace: self.namespace.clone(),
                })?;
        let state = self.task_state(id).await?;
        Ok(container_info(container, state))
    }

    pub async fn task_state(&self, container_id: &str) -> Result<TaskState, Error> {
        let response = TasksClient::new(self.channel.clone())
            .get(self.request(GetTaskRequest {
                container_id: container_id.to_string(),
                exec_id: String::new(),
            }))
            .await;
        match response {
            Ok(r) => Ok(r
                .into_inner()
                .process
                .map(|p| TaskState::from_status(p.status))
                .unwrap_or(TaskState::None)),
            Err(s) if s.code() == Code::NotFound => Ok(TaskState::None),
            Err(s) => Err(Error::rpc("get task", s)),
        }
    }

    pub async fn pause_task(&self, container_id: &str) -> Result<(), Error> {
        TasksClient::new(self.channel.clone())
            .pause(self.request(PauseTaskRequest {
                container_id: container_id.to_string(),
            }))
            .await
            .map_err(|s| Error::rpc("pause task", s))?;
        Ok(())
    }

    pub async fn resume_task(&self, container_id: &str) -> Result<(), Error> {
        TasksClient::new(self.channel.clone())
            .resume(self.request(ResumeTaskRequest {
                container_id: container_id.to_string(),
            }))
            .await
            .map_err(|s| Error::rpc("resume task", s))?;
        Ok(())
    }

    /// The image record of that name; `None` when it does not exist.
    pub async fn image(&self, name: &str) -> Result<Option<Image>, Error> {
        let response = ImagesClient::new(self.channel.clone())
            .get(self.request(GetImageRequest {
                name: name.to_string(),
            }))
            .await;
        match response {
            Ok(r) => Ok(r.into_inner().image),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(Error::rpc("get image", s)),
        }
    }

    /// Creates the image record, or points an existing one at the new target.
    pub async fn put_image(
        &self,
        name: &str,
        target: &Descriptor,
        labels: HashMap<String, String>,
    ) -> Result<(), Error> {
        let image = Image {
            name: name.to_string(),
            labels,
            target: Some(to_proto_descriptor(target)),
            created_at: None,
            updated_at: None,
        };
        let mut images = ImagesClient::new(self.channel.clone());
        let created = images
            .create(self.request(CreateImageRequest {
                image: Some(image.clone()),
                source_date_epoch: None,
            }))
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::AlreadyExists => {
                images
                    .update(self.request(UpdateImageRequest {
                        image: Some(image),
                        update_mask: None,
                        source_date_epoch: None,
                    }))
                    .await
                    .map_err(|s| Error::rpc("update image", s))?;
                Ok(())
            }
            Err(s) => Err(Error::rpc("create image", s)),
        }
    }

    /// Creates a lease that containerd drops by itself after `expire_after`,
    /// so a crashed agent cannot pin content forever.
    pub async fn create_lease(
        &self,
        id: &str,
        expire_after: std::time::Duration,
        container: Option<&str>,
    ) -> Result<Lease, Error> {
        let expire = chrono::Utc::now()
            + chrono::Duration::from_std(expire_after).unwrap_or(chrono::Duration::hours(1));
        let mut labels = HashMap::from([
            (
                "containerd.io/gc.expire".to_string(),
                expire.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            ),
            (LEASE_OWNER_LABEL.to_string(), LEASE_OWNER.to_string()),
        ]);
        if let Some(container) = container {
            labels.insert(LEASE_CONTAINER_LABEL.to_string(), container.to_string());
        }
        LeasesClient::new(self.channel.clone())
            .create(self.request(CreateLeaseRequest {
                id: id.to_string(),
                labels,
            }))
            .await
            .map_err(|s| Error::rpc("create lease", s))?;
        Ok(Lease { id: id.to_string() })
    }

    pub async fn delete_lease(&self, lease: &Lease) -> Result<(), Error> {
        let deleted = LeasesClient::new(self.channel.clone())
            .delete(self.request(DeleteLeaseRequest {
                id: lease.id.clone(),
                sync: false,
            }))
            .await;
        match deleted {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(Error::rpc("delete lease", s)),
        }
    }

    /// Cleans up after an agent that died mid-commit: resumes the tasks its
    /// commits had paused (a desktop must never stay frozen), then deletes
    /// its leases; returns how many leases it removed.
    pub async fn recover_own_leases(&self) -> Result<usize, Error> {
        let filter = format!("labels.\"{LEASE_OWNER_LABEL}\"=={LEASE_OWNER}");
        let leases = LeasesClient::new(self.channel.clone())
            .list(self.request(ListLeasesRequest {
                filters: vec![filter],
            }))
            .await
            .map_err(|s| Error::rpc("list leases", s))?
            .into_inner()
            .leases;
        for lease in &leases {
            if let Some(container) = lease.labels.get(LEASE_CONTAINER_LABEL)
                && self.task_state(container).await? == TaskState::Paused
            {
                tracing::warn!(container = %container, "resuming a task an interrupted commit left paused");
                self.resume_task(container).await?;
            }
        }
        self.delete_own_leases().await
    }

    /// Deletes the leases this agent left behind (after a crash); returns
    /// how many it removed.
    pub async fn delete_own_leases(&self) -> Result<usize, Error> {
        let filter = format!("labels.\"{LEASE_OWNER_LABEL}\"=={LEASE_OWNER}");
        let leases = LeasesClient::new(self.channel.clone())
            .list(self.request(ListLeasesRequest {
                filters: vec![filter],
            }))
            .await
            .map_err(|s| Error::rpc("list leases", s))?
            .into_inner()
            .leases;
        for lease in &leases {
            self.delete_lease(&Lease {
                id: lease.id.clone(),
            })
            .await?;
        }
        Ok(leases.len())
    }

    /// The mounts of a snapshot (for a container: its writable layer on top
    /// of the image's layers).
    pub async fn snapshot_mounts(&self, snapshotter: &str, key: &str) -> Result<Vec<Mount>, Error> {
        let response = SnapshotsClient::new(self.channel.clone())
            .mounts(self.request(MountsRequest {
                snapshotter: snapshotter.to_string(),
                key: key.to_string(),
            }))
            .await
            .map_err(|s| Error::rpc("get snapshot mounts", s))?;
        Ok(response.into_inner().mounts)
    }

    /// The parent of a snapshot: for a container's snapshot, the image's top
    /// layer.
    pub async fn snapshot_parent(&self, snapshotter: &str, key: &str) -> Result<String, Error> {
        let response = SnapshotsClient::new(self.channel.clone())
            .stat(self.request(StatSnapshotRequest {
                snapshotter: snapshotter.to_string(),
                key: key.to_string(),
            }))
            .await
            .map_err(|s| Error::rpc("stat snapshot", s))?;
        Ok(response
            .into_inner()
            .info
            .map(|i| i.parent)
            .unwrap_or_default())
    }

    /// A read-only view of a committed snapshot, under a lease.
    pub async fn view_snapshot(
        &self,
        snapshotter: &str,
        key: &str,
        parent: &str,
        lease: &Lease,
    ) -> Result<Vec<Mount>, Error> {
        let response = SnapshotsClient::new(self.channel.clone())
            .view(self.leased(
                ViewSnapshotRequest {
                    snapshotter: snapshotter.to_string(),
                    key: key.to_string(),
                    parent: parent.to_string(),
                    labels: HashMap::new(),
                },
                lease,
            ))
            .await
            .map_err(|s| Error::rpc("view snapshot", s))?;
        Ok(response.into_inner().mounts)
    }

    pub async fn remove_snapshot(&self, snapshotter: &str, key: &str) -> Result<(), Error> {
        let removed = SnapshotsClient::new(self.channel.clone())
            .remove(self.request(RemoveSnapshotRequest {
                snapshotter: snapshotter.to_string(),
                key: key.to_string(),
            }))
            .await;
        match removed {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(Error::rpc("remove snapshot", s)),
        }
    }

    /// A stream that yields whenever a container or task of this namespace
    /// changes (created, started, exited, deleted, ...).
    pub async fn subscribe_changes(
        &self,
    ) -> Result<impl futures::Stream<Item = ()> + Send + 'static, Error> {
        let namespace = &self.namespace;
        let filters = vec![
            format!("namespace=={namespace},topic~=\"^/containers/\""),
            format!("namespace=={namespace},topic~=\"^/tasks/\""),
        ];
        let stream = EventsClient::new(self.channel.clone())
            .subscribe(SubscribeRequest { filters })
            .await
            .map_err(|s| Error::rpc("subscribe to events", s))?
            .into_inner();
        use futures::StreamExt;
        Ok(stream
            .take_while(|item| futures::future::ready(item.is_ok()))
            .map(|_| ()))
    }

    /// Asks containerd's Diff service for the changes between two sets of
    /// mounts; the result is written to the content store under the lease.
    pub async fn diff(
        &self,
        lower: Vec<Mount>,
        upper: Vec<Mount>,
        media_type: &str,
        lease: &Lease,
    ) -> Result<Descriptor, Error> {
        let response = DiffClient::new(self.channel.clone())
            .diff(self.leased(
                DiffRequest {
                    left: lower,
                    right: upper,
                    media_type: media_type.to_string(),
                    r#ref: format!("dcs-diff-{}", uuid::Uuid::new_v4()),
                    labels: HashMap::new(),
                    source_date_epoch: None,
                },
                lease,
            ))
            .await
            .map_err(|s| Error::rpc("diff", s))?;
        let descriptor = response
            .into_inner()
            .diff
            .ok_or_else(|| Error::Protocol("the Diff service returned no descriptor".into()))?;
        Ok(from_proto_descriptor(descriptor))
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

pub fn to_proto_descriptor(d: &Descriptor) -> containerd_client::types::Descriptor {
    containerd_client::types::Descriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.clone(),
        size: d.size,
        annotations: d.annotations.clone().into_iter().collect(),
    }
}

pub fn from_proto_descriptor(d: containerd_client::types::Descriptor) -> Descriptor {
    Descriptor {
        media_type: d.media_type,
        digest: d.digest,
        size: d.size,
        annotations: d.annotations.into_iter().collect(),
        platform: None,
    }
}
