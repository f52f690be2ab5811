//! Mutations, one object per domain, merged.

mod snapshots;
mod webhooks;

use async_graphql::MergedObject;

#[derive(MergedObject, Default, Debug)]
pub struct Mutation(snapshots::SnapshotMutation, webhooks::WebhookMutation);
