//! The one place that talks to containerd over gRPC: a thin client, one
//! file per containerd service. What the agent decides (which leases are
//! its own, when a task is resumed) lives with the code that decides it.
//!
//! Every request carries the fixed namespace of this client; requests that
//! create content or snapshots also carry a lease, because containerd
//! collects anything written outside a lease at once.

mod containers;
mod content;
mod descriptor;
mod diff;
mod error;
mod events;
mod images;
mod leases;
mod snapshots;
mod tasks;

use std::path::{Path, PathBuf};

use containerd_client::services::v1::version_client::VersionClient;
use containerd_client::tonic::Request;
use containerd_client::tonic::transport::Channel;

pub use containers::{ContainerInfo, LABEL_CONTAINER_NAME, LABEL_POD_NAME, LABEL_POD_NAMESPACE};
pub use content::BlobWriter;
pub use descriptor::{from_proto_descriptor, to_proto_descriptor};
pub use diff::read_only_mounts;
pub use error::Error;
pub use leases::{Lease, LeaseInfo};
pub use tasks::TaskState;

/// How long connecting to containerd may take.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A client of one containerd daemon, bound to one namespace.
#[derive(Clone, Debug)]
pub struct Containerd {
    channel: Channel,
    namespace: String,
    socket: PathBuf,
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
            .map_err(|e| connect_error(dcs_support::describe_chain(&e)))?;
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
}
