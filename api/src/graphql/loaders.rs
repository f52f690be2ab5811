//! DataLoaders, created per request: a list of snapshots with their
//! parents or children costs one query per level, not one per row.

use std::collections::HashMap;

use async_graphql::dataloader::{DataLoader, HashMapCache, Loader};
use entity::snapshot;
use uuid::Uuid;

use crate::errors::ApiError;
use crate::service::snapshots;
use crate::state::AppState;

/// The loaders as requests hold them (cached per request).
pub type SnapshotsById = DataLoader<SnapshotLoader, HashMapCache>;
pub type ChildrenById = DataLoader<ChildrenLoader, HashMapCache>;

pub struct SnapshotLoader(pub AppState);

impl Loader<Uuid> for SnapshotLoader {
    type Value = snapshot::Model;
    type Error = ApiError;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, Self::Value>, Self::Error> {
        snapshots::by_ids(&self.0, keys).await
    }
}

/// Children by parent id.
pub struct ChildrenLoader(pub AppState);

impl Loader<Uuid> for ChildrenLoader {
    type Value = Vec<snapshot::Model>;
    type Error = ApiError;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, Self::Value>, Self::Error> {
        snapshots::children_of(&self.0, keys).await
    }
}
