//! Subscriptions, one object per domain, merged.

mod snapshots;

use async_graphql::MergedSubscription;

/// What can be followed live, over a WebSocket (`graphql-transport-ws`).
#[derive(MergedSubscription, Default, Debug)]
pub struct Subscription(snapshots::SnapshotSubscription);
