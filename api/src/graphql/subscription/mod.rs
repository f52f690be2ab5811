//! Subscriptions, one object per domain, merged.

mod snapshots;

use async_graphql::MergedSubscription;

#[derive(MergedSubscription, Default, Debug)]
pub struct Subscription(snapshots::SnapshotSubscription);
