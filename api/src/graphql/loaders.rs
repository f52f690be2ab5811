//! DataLoaders, created per request: a list of snapshots with their
//! parents or children costs one query per level, not one per row. Each is
//! made when a resolver first asks for it ([`RequestLoaders`]): most
//! requests use one or none of them.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_graphql::dataloader::{DataLoader, HashMapCache, Loader};
use dcs_protocol::ScanReport;
use entity::{snapshot, webhook_attempt};
use futures::future::BoxFuture;
use uuid::Uuid;

use crate::db::OneConnection;
use crate::errors::ApiError;
use crate::service::containers::{self, ContainerKey};
use crate::service::{findings, snapshots};
use crate::state::AppState;

/// How long a DataLoader gathers keys before it queries: long enough that
/// the rows of one list land in one batch even on a busy machine.
const LOADER_DELAY: Duration = Duration::from_millis(5);

/// Starts a loader's batch as a task of the request (see `http::TaskScope`).
pub type Spawner = Arc<dyn Fn(BoxFuture<'static, ()>) + Send + Sync>;

/// A request's DataLoaders, each made on first use, cached for the request.
pub struct RequestLoaders {
    app: AppState,
    spawn: Spawner,
    snapshots: OnceLock<SnapshotsById>,
    snapshot_refs: OnceLock<SnapshotRefsById>,
    children: OnceLock<ChildrenById>,
    ancestors: OnceLock<AncestorsOf>,
    descendants: OnceLock<DescendantsOf>,
    last_snapshots: OnceLock<LastSnapshotByContainer>,
    attempts: OnceLock<AttemptsByDelivery>,
    reports: OnceLock<ReportsById>,
}

impl std::fmt::Debug for RequestLoaders {
    // The loaders hold no Debug; which were made says enough.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestLoaders")
            .field("snapshots", &self.snapshots.get().is_some())
            .field("snapshot_refs", &self.snapshot_refs.get().is_some())
            .field("children", &self.children.get().is_some())
            .field("ancestors", &self.ancestors.get().is_some())
            .field("descendants", &self.descendants.get().is_some())
            .field("last_snapshots", &self.last_snapshots.get().is_some())
            .field("attempts", &self.attempts.get().is_some())
            .field("reports", &self.reports.get().is_some())
            .finish_non_exhaustive()
    }
}

impl RequestLoaders {
    pub fn new(app: AppState, spawn: Spawner) -> Self {
        Self {
            app,
            spawn,
            snapshots: OnceLock::new(),
            snapshot_refs: OnceLock::new(),
            children: OnceLock::new(),
            ancestors: OnceLock::new(),
            descendants: OnceLock::new(),
            last_snapshots: OnceLock::new(),
            attempts: OnceLock::new(),
            reports: OnceLock::new(),
        }
    }

    /// The request's loader of type `T`, made now if it is the first ask.
    pub fn get<T: RequestLoader>(&self) -> &T {
        T::slot(self).get_or_init(|| {
            let spawn = self.spawn.clone();
            T::from_parts(
                DataLoader::with_cache(
                    T::Inner::from_app(self.app.clone()),
                    move |task| spawn(task),
                    HashMapCache::default(),
                )
                .delay(LOADER_DELAY),
            )
        })
    }
}

/// A loader a request may hold: where [`RequestLoaders`] keeps it.
pub trait RequestLoader: Sized {
    type Inner: FromApp;
    fn slot(loaders: &RequestLoaders) -> &OnceLock<Self>;
    /// The loader as its alias (they are one type; generic code cannot
    /// see that).
    fn from_parts(loader: DataLoader<Self::Inner, HashMapCache>) -> Self;
}

/// A loader made from the shared state.
pub trait FromApp: Send + Sync + 'static {
    fn from_app(app: AppState) -> Self;
}

macro_rules! request_loaders {
    ($($alias:ident = $inner:ident in $field:ident;)*) => {$(
        impl FromApp for $inner {
            fn from_app(app: AppState) -> Self {
                Self(app)
            }
        }
        impl RequestLoader for $alias {
            type Inner = $inner;
            fn slot(loaders: &RequestLoaders) -> &OnceLock<Self> {
                &loaders.$field
            }
            fn from_parts(loader: DataLoader<$inner, HashMapCache>) -> Self {
                loader
            }
        }
    )*};
}

request_loaders! {
    SnapshotsById = SnapshotLoader in snapshots;
    SnapshotRefsById = SnapshotRefLoader in snapshot_refs;
    ChildrenById = ChildrenLoader in children;
    AncestorsOf = AncestorLoader in ancestors;
    DescendantsOf = DescendantLoader in descendants;
    LastSnapshotByContainer = LastSnapshotLoader in last_snapshots;
    AttemptsByDelivery = AttemptsLoader in attempts;
    ReportsById = ReportLoader in reports;
}

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
        snapshots::by_ids(&mut OneConnection::new(&self.0.db), keys).await
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
        snapshots::refs_by_ids(&mut OneConnection::new(&self.0.db), keys).await
    }
}

/// Children by parent id.
#[derive(Debug)]
pub struct ChildrenLoader(pub AppState);

impl Loader<Uuid> for ChildrenLoader {
    type Value = Vec<snapshot::Model>;
    type Error = ApiError;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, Self::Value>, Self::Error> {
        snapshots::children_of(&mut OneConnection::new(&self.0.db), keys).await
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
