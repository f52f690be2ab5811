use std::path::PathBuf;

use containerd_client::tonic::{Code, Status};

/// What can go wrong talking to containerd.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect to containerd at {}: {message}", socket.display())]
    Connect { socket: PathBuf, message: String },

    #[error("container \"{id}\" not found in containerd namespace \"{namespace}\"")]
    ContainerNotFound { id: String, namespace: String },

    #[error("{what} {digest} is not in containerd's content store")]
    ContentNotFound { what: &'static str, digest: String },

    #[error("containerd could not {op}: its disk is full (no space left on device)")]
    DiskFull { op: &'static str },

    #[error("containerd could not {op}: {message}")]
    Rpc {
        op: &'static str,
        code: Code,
        message: String,
    },

    #[error("unexpected answer from containerd: {0}")]
    Protocol(String),
}

impl Error {
    pub(crate) fn rpc(op: &'static str, status: Status) -> Self {
        let message = status.message().to_string();
        if message.contains("no space left on device") {
            return Self::DiskFull { op };
        }
        Self::Rpc {
            op,
            code: status.code(),
            message,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Self::ContainerNotFound { .. }
                | Self::ContentNotFound { .. }
                | Self::Rpc {
                    code: Code::NotFound,
                    ..
                }
        )
    }
}
