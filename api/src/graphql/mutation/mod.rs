//! Mutations, one object per domain, merged.

mod persisted_queries;
mod snapshots;
mod webhooks;

use async_graphql::MergedObject;

/// What can be changed: snapshots and webhook endpoints.
#[derive(MergedObject, Default, Debug)]
pub struct Mutation(
    snapshots::SnapshotMutation,
    webhooks::WebhookMutation,
    persisted_queries::PersistedQueryMutation,
);
