//! The commit's lease: everything a commit writes to containerd is written
//! under it, so the garbage collector cannot take it half-way; the labels
//! on it let a restarted agent clean up after a commit a crash interrupted.

use std::time::Duration;

use crate::containerd::{self, Containerd, Lease, TaskState};

use super::on_drop::SpawnOnDrop;

/// Label on leases created by this agent, so it can find and drop its own
/// leftovers after a crash.
const OWNER_LABEL: &str = "dcs.io/owner";
const OWNER: &str = "dcs-agent";
/// Label on a commit's lease naming its container, so a restarted agent can
/// resume a task that a commit interrupted by a crash left paused.
const CONTAINER_LABEL: &str = "dcs.io/container";

/// A lease outlives a crashed agent by this much at most.
const EXPIRY: Duration = Duration::from_secs(6 * 3600);

/// Deletes the commit's lease when the commit ends, however it ends (also
/// when it is cancelled): the image record holds what must stay.
pub(super) struct LeaseGuard {
    lease: Lease,
    delete: SpawnOnDrop,
}

impl LeaseGuard {
    /// Creates the lease of a commit of `container_id`.
    pub(super) async fn create(
        client: &Containerd,
        container_id: &str,
    ) -> Result<Self, containerd::Error> {
        let lease = client
            .create_lease(
                &format!("dcs-commit-{}", uuid::Uuid::new_v4()),
                EXPIRY,
                Some(&[(OWNER_LABEL, OWNER), (CONTAINER_LABEL, container_id)]),
            )
            .await?;
        Ok(Self {
            delete: SpawnOnDrop::new(delete_lease(client.clone(), lease.clone())),
            lease,
        })
    }

    pub(super) fn lease(&self) -> &Lease {
        &self.lease
    }

    /// Deletes the lease now.
    pub(super) async fn release(self) {
        self.delete.run_now().await;
    }
}

async fn delete_lease(client: Containerd, lease: Lease) {
    if let Err(e) = client.delete_lease(&lease).await {
        tracing::warn!(lease = %lease.id, error = %e, "could not delete lease; it expires by itself");
    }
}

/// Cleans up after an agent that died mid-commit: resumes the tasks its
/// commits had paused (a desktop must never stay frozen), then deletes
/// its leases; returns how many leases it removed.
pub async fn recover_interrupted_commits(client: &Containerd) -> Result<usize, containerd::Error> {
    let leases = client.leases_labelled(OWNER_LABEL, OWNER).await?;
    for found in &leases {
        if let Some(container) = found.labels.get(CONTAINER_LABEL)
            && client.task_state(container).await? == TaskState::Paused
        {
            tracing::warn!(container = %container, "resuming a task an interrupted commit left paused");
            client.resume_task(container).await?;
        }
    }
    for found in &leases {
        client.delete_lease(&found.lease).await?;
    }
    Ok(leases.len())
}
