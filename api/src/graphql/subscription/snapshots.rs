use async_graphql::{Context, ID, Result, Subscription};
use futures::Stream;
use tokio::sync::broadcast::error::RecvError;

use crate::bus::SnapshotChange;
use crate::graphql::context::{principal, state};
use crate::graphql::ids::parse_id;
use crate::graphql::types::SnapshotEvent;
use crate::service::snapshots;

#[derive(Default)]
pub struct SnapshotSubscription;

fn event(change: &SnapshotChange) -> SnapshotEvent {
    SnapshotEvent {
        snapshot_id: ID(change.snapshot_id.to_string()),
        status: change.status.into(),
        bytes_done: change.bytes_done,
        bytes_total: change.bytes_total,
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
        let mut changes = state.bus.subscribe();
        let (only, current) = match id {
            Some(id) => {
                let id = parse_id(&id, "snapshot")?;
                let current = snapshots::get(&state, &who, id).await?;
                (Some(id), Some(SnapshotChange::of(&current)))
            }
            None => (None, None),
        };
        let (sender, receiver) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            if let Some(current) = &current
                && (sender.send(event(current)).await.is_err() || current.status.is_terminal())
            {
                return;
            }
            loop {
                let change = tokio::select! {
                    // The subscriber went away.
                    _ = sender.closed() => return,
                    change = changes.recv() => change,
                };
                let change = match change {
                    Ok(change) => change,
                    Err(RecvError::Lagged(skipped)) => {
                        tracing::warn!(skipped, "a subscriber fell behind");
                        continue;
                    }
                    Err(RecvError::Closed) => return,
                };
                if only.is_some_and(|id| id != change.snapshot_id) {
                    continue;
                }
                if !state.policy.may_see_snapshot(&who, (&change).into()) {
                    continue;
                }
                if sender.send(event(&change)).await.is_err() {
                    return;
                }
                if only.is_some() && change.status.is_terminal() {
                    return;
                }
            }
        });
        Ok(tokio_stream::wrappers::ReceiverStream::new(receiver))
    }
}
