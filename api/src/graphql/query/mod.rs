//! Queries, one object per domain, merged.

mod containers;
mod me;
mod nodes;
mod previews;
mod snapshots;
mod webhooks;

use async_graphql::MergedObject;

/// What can be read: the caller, nodes, containers, snapshots, webhooks.
#[derive(MergedObject, Default, Debug)]
pub struct Query(
    me::MeQuery,
    nodes::NodesQuery,
    containers::ContainersQuery,
    snapshots::SnapshotsQuery,
    previews::PreviewsQuery,
    webhooks::WebhooksQuery,
);
