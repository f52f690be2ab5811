use async_graphql::{Context, ID, Result, Subscription};
use futures::Stream;
use tokio::sync::broadcast::error::RecvError;

use crate::bus::SnapshotChange;
use crate::graphql::context::{principal, state};
use crate::graphql::ids::parse_id;
use crate::graphql::types::SnapshotEvent;
use crate::service::snapshots;

#[derive(Default, Debug)]
pub(super) struct SnapshotSubscription;

fn event(change: &SnapshotChange) -> SnapshotEvent {
    SnapshotEvent {
        snapshot_id: ID(change.snapshot_id.to_string()),
        status: change.status.into(),
        bytes_done: change.bytes_done.into(),
        bytes_total: change.bytes_total.into(),
        at: change.at,
    }
}

#[Subscription]
impl SnapshotSubscription {
    /// Status changes and progress: of one snapshot when `id` is given
    /// (starting with its current state), else of every snapshot the caller
    /// may see.
    async fn snapshot_events(
        &self,
        ctx: &Context<'_>,
        id: Option<ID>,
    ) -> Result<impl Stream<Item = SnapshotEvent> + use<>> {
        let who = principal(ctx)?.clone();
        let state = state(ctx)?.clone();
        // Subscribe before reading the current state, so nothing falls in
        // between.
        let changes = state.bus.subscribe();
        let (only, current) = match id {
            Some(id) => {
                let id = parse_id(&id, "snapshot")?;
                let current = snapshots::get(&state, &who, id).await?;
                (Some(id), Some(SnapshotChange::of(&current)))
            }
            None => (None, None),
        };
        // A stream polled by the WebSocket's own task: no task or channel
        // per subscriber in between, so an event costs one wake-up per
        // subscriber (500 subscribers means 500 of them per event). Dropped
        // with the subscription.
        let feed = Feed {
            current,
            changes,
            only,
            who,
            state,
            ended: false,
        };
        Ok(futures::stream::unfold(feed, |mut feed| async move {
            let change = feed.next().await?;
            feed.ended = feed.only.is_some() && change.status.is_terminal();
            Some((event(&change), feed))
        }))
    }
}

/// What one subscription has yet to send.
struct Feed {
    /// The state at subscription time, sent first (subscriptions to one
    /// snapshot).
    current: Option<SnapshotChange>,
    changes: tokio::sync::broadcast::Receiver<SnapshotChange>,
    only: Option<uuid::Uuid>,
    who: crate::auth::Principal,
    state: crate::state::AppState,
    /// A subscription to one snapshot ends with its terminal status.
    ended: bool,
}

impl Feed {
    async fn next(&mut self) -> Option<SnapshotChange> {
        if self.ended {
            return None;
        }
        if let Some(current) = self.current.take() {
            return Some(current);
        }
        loop {
            let change = match self.changes.recv().await {
                Ok(change) => change,
                Err(RecvError::Lagged(skipped)) => {
                    tracing::warn!(skipped, "a subscriber fell behind");
                    continue;
                }
                Err(RecvError::Closed) => return None,
            };
            if self.only.is_some_and(|id| id != change.snapshot_id) {
                continue;
            }
            if !self
                .state
                .policy
                .may_see_snapshot(&self.who, (&change).into())
            {
                continue;
            }
            return Some(change);
        }
    }
}
