//! Snapshot changes fanned out to GraphQL subscribers of this process.
//! (Across API replicas, Postgres LISTEN/NOTIFY feeds the same bus: the
//! Kubernetes issue.)

use chrono::{DateTime, Utc};
use entity::SnapshotStatus;
use tokio::sync::broadcast;
use uuid::Uuid;

/// Subscribers that fall this far behind skip the oldest changes.
const CAPACITY: usize = 1024;

/// One change of one snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotChange {
    pub snapshot_id: Uuid,
    pub requested_by: String,
    pub pod_namespace: Option<String>,
    pub status: SnapshotStatus,
    pub bytes_done: i64,
    pub bytes_total: i64,
    pub at: DateTime<Utc>,
}

#[derive(Clone)]
pub struct Bus {
    sender: broadcast::Sender<SnapshotChange>,
}

impl Bus {
    pub fn new() -> Self {
        let (sender, _) = broadcast::channel(CAPACITY);
        Self { sender }
    }

    pub fn publish(&self, change: SnapshotChange) {
        // No subscriber is fine.
        let _ = self.sender.send(change);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<SnapshotChange> {
        self.sender.subscribe()
    }
}

impl Default for Bus {
    fn default() -> Self {
        Self::new()
    }
}

impl SnapshotChange {
    pub fn of(snapshot: &entity::snapshot::Model) -> Self {
        Self {
            snapshot_id: snapshot.id,
            requested_by: snapshot.requested_by.clone(),
            pod_namespace: snapshot.pod_namespace.clone(),
            status: snapshot.status,
            bytes_done: snapshot.phase_bytes_done,
            bytes_total: snapshot.phase_bytes_total,
            at: snapshot.updated_at,
        }
    }
}
