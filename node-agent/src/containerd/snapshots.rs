//! containerd's Snapshots service: a container's layers as mounts.

use std::collections::HashMap;

use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    MountsRequest, RemoveSnapshotRequest, StatSnapshotRequest, ViewSnapshotRequest,
};
use containerd_client::tonic::Code;
use containerd_client::types::Mount;

use super::{Containerd, Error, Lease};

impl Containerd {
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

    /// Removes a snapshot; one that is already gone is not an error.
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
}
