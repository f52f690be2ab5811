//! Every change of a snapshot's status is written here, as a compare-and-set:
//! the row changes only if it still is what the writer read (status, and
//! where it matters the agent instance and event sequence). Two writers that
//! race (an agent's result and the lost-agent check, a cancel and the
//! dispatcher, two API replicas) cannot both win, so a terminal status
//! never changes and each snapshot ends exactly once, with one terminal
//! event and one terminal webhook.
//!
//! The one exception to "terminal never changes" is `PUSHED -> DELETED`
//! ([`mark_deleted`]), which nothing else can write.

use std::sync::LazyLock;

use entity::prelude::*;
use entity::{SnapshotStatus, snapshot};
use sea_orm::{ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, QueryFilter};
use uuid::Uuid;

/// Test-only: `DCS_TEST_UNGUARDED_TRANSITIONS=1` drops the guards, so the
/// chaos harness can prove that its checker sees the violations the guards
/// prevent. Never set in production; the API logs a warning when it is.
pub static UNGUARDED: LazyLock<bool> =
    LazyLock::new(|| std::env::var("DCS_TEST_UNGUARDED_TRANSITIONS").is_ok_and(|v| v == "1"));

/// What the row must still be for a transition to happen.
#[derive(Debug, Clone)]
pub struct Expected {
    condition: Condition,
}

impl Expected {
    /// The row has one of these statuses.
    pub fn status_in(statuses: &[SnapshotStatus]) -> Self {
        Self {
            condition: Condition::all().add(snapshot::Column::Status.is_in(statuses.to_vec())),
        }
    }

    /// Any status that is not terminal.
    pub fn in_flight() -> Self {
        Self::status_in(&SnapshotStatus::IN_FLIGHT)
    }

    /// Exactly what `row` was when it was read: same status, same last
    /// event, same dispatch and agent instance.
    pub fn unchanged(row: &snapshot::Model) -> Self {
        let mut condition = Condition::all()
            .add(snapshot::Column::Status.eq(row.status))
            .add(snapshot::Column::LastEventSeq.eq(row.last_event_seq));
        condition = match row.agent_instance_id {
            Some(instance) => condition.add(snapshot::Column::AgentInstanceId.eq(instance)),
            None => condition.add(snapshot::Column::AgentInstanceId.is_null()),
        };
        Self { condition }
    }

    /// And this further condition.
    pub fn and(mut self, condition: impl Into<Condition>) -> Self {
        self.condition = self.condition.add(condition.into());
        self
    }

    /// And the job is (not) recorded as dispatched.
    pub fn dispatched(self, dispatched: bool) -> Self {
        let column = snapshot::Column::DispatchedAt;
        self.and(if dispatched {
            column.is_not_null()
        } else {
            column.is_null()
        })
    }

    /// And the job runs on this agent instance.
    pub fn on_instance(self, instance: Uuid) -> Self {
        self.and(snapshot::Column::AgentInstanceId.eq(instance))
    }
}

/// Writes `change` to snapshot `id` if the row is still as `expected`;
/// returns the new row, or `None` when another writer got there first.
/// A terminal status is never left, whatever `expected` says.
pub async fn compare_and_set<C: ConnectionTrait>(
    db: &C,
    id: Uuid,
    expected: Expected,
    change: snapshot::ActiveModel,
) -> Result<Option<snapshot::Model>, DbErr> {
    let mut update = Snapshot::update_many()
        .set(change)
        .filter(snapshot::Column::Id.eq(id));
    if !*UNGUARDED {
        update = update
            .filter(expected.condition)
            .filter(snapshot::Column::Status.is_not_in([
                SnapshotStatus::Pushed,
                SnapshotStatus::Failed,
                SnapshotStatus::Cancelled,
                SnapshotStatus::Deleted,
            ]));
    }
    Ok(update.exec_with_returning(db).await?.into_iter().next())
}

/// `PUSHED -> DELETED`, the one change of a terminal status: writes
/// `change` (which sets `DELETED`) only if the row is still `PUSHED`, so of
/// two deletes (a speaker's and retention's, on two replicas) one wins.
pub async fn mark_deleted<C: ConnectionTrait>(
    db: &C,
    id: Uuid,
    change: snapshot::ActiveModel,
) -> Result<Option<snapshot::Model>, DbErr> {
    let updated = Snapshot::update_many()
        .set(change)
        .filter(snapshot::Column::Id.eq(id))
        .filter(snapshot::Column::Status.eq(SnapshotStatus::Pushed))
        .exec_with_returning(db)
        .await?;
    Ok(updated.into_iter().next())
}
