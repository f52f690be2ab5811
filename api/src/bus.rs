//! Snapshot changes fanned out to GraphQL subscribers.
//!
//! Within a process, a broadcast channel. On Postgres, shared by API
//! replicas, changes travel only through the database: each writer sends
//! `NOTIFY` inside the transaction that makes the change, Postgres delivers
//! notifications in commit order, and every replica (the writer too)
//! `LISTEN`s and publishes what arrives. So every subscriber, on any
//! replica, sees one snapshot's changes in the order they were committed.

use chrono::{DateTime, Utc};
use entity::SnapshotStatus;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Subscribers that fall this far behind skip the oldest changes.
const CAPACITY: usize = 1024;
/// The Postgres channel of snapshot changes.
const CHANNEL: &str = "dcs_snapshot_changes";

/// One change of one snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotChange {
    pub snapshot_id: Uuid,
    pub requested_by: String,
    pub owner: Option<String>,
    pub pod_namespace: Option<String>,
    pub status: SnapshotStatus,
    pub bytes_done: i64,
    pub bytes_total: i64,
    pub at: DateTime<Utc>,
}

/// The change as it travels between replicas.
#[derive(Serialize, Deserialize)]
struct Wire {
    origin: Uuid,
    snapshot_id: Uuid,
    requested_by: String,
    /// Absent from replicas that predate owners.
    #[serde(default)]
    owner: Option<String>,
    pod_namespace: Option<String>,
    status: String,
    bytes_done: i64,
    bytes_total: i64,
    at: DateTime<Utc>,
}

#[derive(Clone, Debug)]
pub struct Bus {
    sender: broadcast::Sender<SnapshotChange>,
    /// This replica, for the logs of whoever reads the channel.
    origin: Uuid,
    /// Set when the database is Postgres: changes also go out by NOTIFY.
    postgres: Option<DatabaseConnection>,
}

impl Bus {
    pub fn new() -> Self {
        let (sender, _) = broadcast::channel(CAPACITY);
        Self {
            sender,
            origin: Uuid::new_v4(),
            postgres: None,
        }
    }

    /// A bus shared with other replicas through this database, when it is
    /// Postgres; a local one otherwise.
    pub fn for_database(db: &DatabaseConnection) -> Self {
        let mut bus = Self::new();
        if db.get_database_backend() == DbBackend::Postgres {
            bus.postgres = Some(db.clone());
        }
        bus
    }

    /// Sends the change to every replica when the transaction `conn`
    /// belongs to commits (Postgres); nothing on SQLite, where `publish`
    /// does the work.
    pub async fn notify<C: ConnectionTrait>(
        &self,
        conn: &C,
        change: &SnapshotChange,
    ) -> Result<(), sea_orm::DbErr> {
        if self.postgres.is_none() {
            return Ok(());
        }
        let wire = Wire {
            origin: self.origin,
            snapshot_id: change.snapshot_id,
            requested_by: change.requested_by.clone(),
            owner: change.owner.clone(),
            pod_namespace: change.pod_namespace.clone(),
            status: change.status.as_str().to_string(),
            bytes_done: change.bytes_done,
            bytes_total: change.bytes_total,
            at: change.at,
        };
        let payload = serde_json::to_string(&wire).unwrap_or_default();
        let statement = Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_notify($1, $2)",
            [CHANNEL.into(), payload.into()],
        );
        conn.execute_raw(statement).await?;
        Ok(())
    }

    /// Publishes a committed change to this process's subscribers; on
    /// Postgres the notification (see `notify`) does it instead, to keep
    /// one order for everyone.
    pub fn publish(&self, change: SnapshotChange) {
        if self.postgres.is_none() {
            // No subscriber is fine.
            let _ = self.sender.send(change);
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<SnapshotChange> {
        self.sender.subscribe()
    }

    /// Publishes the changes every replica commits until `stop`;
    /// reconnects after errors. Does nothing on SQLite (one process).
    ///
    /// Notifications sent while the listener was disconnected (a database
    /// restart or failover) are lost, so after a reconnect the snapshots
    /// changed since shortly before the connection dropped are published
    /// again: subscribers may see a status twice, never miss the last one.
    pub async fn listen(self, stop: CancellationToken) {
        let Some(db) = &self.postgres else {
            return;
        };
        let pool = db.get_postgres_connection_pool().clone();
        let mut lost_since: Option<DateTime<Utc>> = None;
        loop {
            let listener = async {
                let mut listener = sea_orm::sqlx::postgres::PgListener::connect_with(&pool).await?;
                listener.listen(CHANNEL).await?;
                // Listening again: what changed meanwhile goes out now.
                if let Some(since) = lost_since.take()
                    && let Err(e) = self.republish_since(db, since).await
                {
                    tracing::warn!(error = %e, "could not re-read the changes missed while disconnected");
                    lost_since = Some(since);
                }
                loop {
                    // `None`: the connection dropped; notifications may have
                    // been missed, which the outer loop makes up for.
                    let Some(notification) = listener.try_recv().await? else {
                        return Err(sea_orm::sqlx::Error::Protocol(
                            "the listening connection was lost".into(),
                        ));
                    };
                    let Ok(wire) = serde_json::from_str::<Wire>(notification.payload()) else {
                        continue;
                    };
                    let Some(status) = parse_status(&wire.status) else {
                        continue;
                    };
                    let _ = self.sender.send(SnapshotChange {
                        snapshot_id: wire.snapshot_id,
                        requested_by: wire.requested_by,
                        owner: wire.owner,
                        pod_namespace: wire.pod_namespace,
                        status,
                        bytes_done: wire.bytes_done,
                        bytes_total: wire.bytes_total,
                        at: wire.at,
                    });
                }
                #[allow(unreachable_code)]
                Ok::<(), sea_orm::sqlx::Error>(())
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                result = listener => {
                    if let Err(e) = result {
                        tracing::warn!(error = %e, "listening for other replicas' changes failed; retrying");
                    }
                }
            }
            lost_since.get_or_insert(Utc::now() - MISSED_MARGIN);
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    }

    /// Publishes the current state of every snapshot changed since `since`.
    async fn republish_since(
        &self,
        db: &DatabaseConnection,
        since: DateTime<Utc>,
    ) -> Result<(), sea_orm::DbErr> {
        use entity::prelude::Snapshot;
        use entity::snapshot;
        use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
        let changed = Snapshot::find()
            .filter(snapshot::Column::UpdatedAt.gte(since))
            .order_by_asc(snapshot::Column::UpdatedAt)
            .limit(MAX_REPUBLISHED)
            .all(db)
            .await?;
        tracing::info!(
            count = changed.len(),
            "publishing the snapshot changes made while disconnected"
        );
        for row in &changed {
            let _ = self.sender.send(SnapshotChange::of(row));
        }
        Ok(())
    }
}

/// How far before the moment the listener noticed the outage changes are
/// re-read: a notification may have been lost a little before that.
const MISSED_MARGIN: chrono::Duration = chrono::Duration::seconds(30);
/// At most this many changes are published again after an outage.
const MAX_REPUBLISHED: u64 = 10_000;

fn parse_status(text: &str) -> Option<SnapshotStatus> {
    use sea_orm::Iterable as _;
    SnapshotStatus::iter().find(|s| s.as_str() == text)
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
            owner: snapshot.owner.clone(),
            pod_namespace: snapshot.pod_namespace.clone(),
            status: snapshot.status,
            bytes_done: snapshot.phase_bytes_done,
            bytes_total: snapshot.phase_bytes_total,
            at: snapshot.updated_at,
        }
    }
}

impl<'a> From<&'a SnapshotChange> for crate::auth::policy::SnapshotParties<'a> {
    fn from(change: &'a SnapshotChange) -> Self {
        Self {
            requested_by: &change.requested_by,
            owner: change.owner.as_deref(),
            pod_namespace: change.pod_namespace.as_deref(),
        }
    }
}
