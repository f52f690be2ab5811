//! DataLoaders, created per request: a list of snapshots with their
//! parents or children costs one query per level, not one per row.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::{DataLoader, HashMapCache, Loader};
use dcs_protocol::ScanReport;
use entity::{snapshot, webhook_attempt};
use uuid::Uuid;

use crate::errors::ApiError;
use crate::service::containers::{self, ContainerKey};
use crate::service::{findings, snapshots};
use crate::state::AppState;

/// The loaders as requests hold them (cached per request).
pub type SnapshotsById = DataLoader<SnapshotLoader, HashMapCache>;
pub type ChildrenById = DataLoader<ChildrenLoader, HashMapCache>;
pub type LastSnapshotByContainer = DataLoader<LastSnapshotLoader, HashMapCache>;
pub type AttemptsByDelivery = DataLoader<AttemptsLoader, HashMapCache>;
pub type ReportsById = DataLoader<ReportLoader, HashMapCache>;

#[derive(Debug)]
pub struct SnapshotLoader(pub AppState);

impl Loader<Uuid> for SnapshotLoader {
    type Value = snapshot::Model;
    type Error = ApiError;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, Self::Value>, Self::Error> {
        snapshots::by_ids(&self.0, keys).await
    }
}

/// What `parent { id }` needs of a snapshot, by id (see
/// [`snapshots::SnapshotRef`]).
pub type SnapshotRefsById = DataLoader<SnapshotRefLoader, HashMapCache>;

#[derive(Debug)]
pub struct SnapshotRefLoader(pub AppState);

impl Loader<Uuid> for SnapshotRefLoader {
    type Value = snapshots::SnapshotRef;
    type Error = ApiError;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, Self::Value>, Self::Error> {
        snapshots::refs_by_ids(&self.0, keys).await
    }
}

/// Children by parent id.
#[derive(Debug)]
pub struct ChildrenLoader(pub AppState);

impl Loader<Uuid> for ChildrenLoader {
    type Value = Vec<snapshot::Model>;
    type Error = ApiError;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, Self::Value>, Self::Error> {
        snapshots::children_of(&self.0, keys).await
    }
}

/// The newest snapshot of each container, by (node, container id). Every
/// key gets an answer, `None` for a container without snapshots, so that
/// "none" is cached too and a page fed by `containers` asks nothing more.
#[derive(Debug)]
pub struct LastSnapshotLoader(pub AppState);

impl Loader<ContainerKey> for LastSnapshotLoader {
    type Value = Option<snapshot::Model>;
    type Error = ApiError;

    async fn load(
        &self,
        keys: &[ContainerKey],
    ) -> Result<HashMap<ContainerKey, Self::Value>, Self::Error> {
        let mut found = containers::last_snapshots(&self.0, keys).await?;
        Ok(keys
            .iter()
            .map(|key| (key.clone(), found.remove(key)))
            .collect())
    }
}

/// Webhook delivery attempts by delivery id.
#[derive(Debug)]
pub struct AttemptsLoader(pub AppState);

impl Loader<Uuid> for AttemptsLoader {
    type Value = Vec<webhook_attempt::Model>;
    type Error = ApiError;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, Self::Value>, Self::Error> {
        crate::webhooks::endpoints::attempts_of(&self.0, keys).await
    }
}

/// Scan reports by snapshot id (only snapshots that have one): a page's
/// reports in one query, and only when a report's list is asked for.
#[derive(Debug)]
pub struct ReportLoader(pub AppState);

impl Loader<Uuid> for ReportLoader {
    type Value = Arc<ScanReport>;
    type Error = ApiError;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, Self::Value>, Self::Error> {
        Ok(findings::reports(&self.0, keys)
            .await?
            .into_iter()
            .map(|(id, report)| (id, Arc::new(report)))
            .collect())
    }
}

/// A lineage list: whose, and how long at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LineageKey {
    pub root: Uuid,
    pub first: usize,
}

/// Groups keys by `first`: one recursive query per distinct length (one in
/// practice) for all the roots of a list.
fn by_first(keys: &[LineageKey]) -> HashMap<usize, Vec<Uuid>> {
    let mut groups: HashMap<usize, Vec<Uuid>> = HashMap::new();
    for key in keys {
        groups.entry(key.first).or_default().push(key.root);
    }
    groups
}

pub type AncestorsOf = DataLoader<AncestorLoader, HashMapCache>;
pub type DescendantsOf = DataLoader<DescendantLoader, HashMapCache>;

/// Ancestors, nearest first (`service::lineage::ancestors`).
#[derive(Debug)]
pub struct AncestorLoader(pub AppState);

impl Loader<LineageKey> for AncestorLoader {
    type Value = Vec<snapshot::Model>;
    type Error = ApiError;

    async fn load(
        &self,
        keys: &[LineageKey],
    ) -> Result<HashMap<LineageKey, Self::Value>, Self::Error> {
        let mut all = HashMap::new();
        for (first, roots) in by_first(keys) {
            let mut lists = crate::service::lineage::ancestors(&self.0, &roots, first).await?;
            for root in roots {
                let list = lists.remove(&root).unwrap_or_default();
                all.insert(LineageKey { root, first }, list);
            }
        }
        Ok(all)
    }
}

/// Descendants, breadth first (`service::lineage::descendants`).
#[derive(Debug)]
pub struct DescendantLoader(pub AppState);

impl Loader<LineageKey> for DescendantLoader {
    type Value = Vec<snapshot::Model>;
    type Error = ApiError;

    async fn load(
        &self,
        keys: &[LineageKey],
    ) -> Result<HashMap<LineageKey, Self::Value>, Self::Error> {
        let mut all = HashMap::new();
        for (first, roots) in by_first(keys) {
            let mut lists = crate::service::lineage::descendants(&self.0, &roots, first).await?;
            for root in roots {
                let list = lists.remove(&root).unwrap_or_default();
                all.insert(LineageKey { root, first }, list);
            }
        }
        Ok(all)
    }
}
