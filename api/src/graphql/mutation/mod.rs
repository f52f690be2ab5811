//! Mutations, one object per domain, merged.

mod snapshots;

use async_graphql::MergedObject;

#[derive(MergedObject, Default)]
pub struct Mutation(snapshots::SnapshotMutation);
