//! Per-speaker quotas: snapshots in flight, snapshots a day (the last 24
//! hours), and bytes kept in the registry (the compressed layer sizes of
//! the speaker's pushed snapshots). Admins are not limited.
//!
//! The check runs inside the transaction that records the new snapshot,
//! after taking a lock that is the speaker's alone (an advisory lock on
//! Postgres, the write lock on SQLite): two requests at the limit, on one
//! replica or two, cannot both pass.

use chrono::{DateTime, Utc};
use entity::prelude::*;
use entity::{SnapshotStatus, snapshot};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, PaginatorTrait, QueryFilter, QuerySelect,
    Statement,
};
use sha2::{Digest, Sha256};

use crate::auth::Principal;
use crate::auth::policy::Quotas;
use crate::errors::{ApiError, ApiResult, Code};

/// What a speaker uses of each quota now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Snapshots not yet PUSHED, FAILED or CANCELLED.
    pub in_flight: u64,
    /// Snapshots requested in the last 24 hours, whatever became of them.
    pub last_day: u64,
    /// Compressed layer bytes of their PUSHED snapshots.
    pub bytes: u64,
}

const DAY: chrono::Duration = chrono::Duration::hours(24);

/// What `sub` uses, as `conn` sees it.
pub async fn usage<C: ConnectionTrait>(
    conn: &C,
    sub: &str,
    now: DateTime<Utc>,
) -> ApiResult<Usage> {
    let mine = || Snapshot::find().filter(snapshot::Column::RequestedBy.eq(sub));
    let in_flight = mine()
        .filter(snapshot::Column::Status.is_in([
            SnapshotStatus::Queued,
            SnapshotStatus::Diffing,
            SnapshotStatus::Pushing,
        ]))
        .count(conn)
        .await?;
    let last_day = mine()
        .filter(snapshot::Column::CreatedAt.gt(now - DAY))
        .count(conn)
        .await?;
    // Postgres sums a bigint as numeric: cast back, on both databases.
    let bytes: Option<i64> = mine()
        .filter(snapshot::Column::Status.eq(SnapshotStatus::Pushed))
        .select_only()
        .column_as(
            Expr::cust("CAST(COALESCE(SUM(layer_size), 0) AS BIGINT)"),
            "bytes",
        )
        .into_tuple::<i64>()
        .one(conn)
        .await?;
    Ok(Usage {
        in_flight,
        last_day,
        bytes: u64::try_from(bytes.unwrap_or(0)).unwrap_or(0),
    })
}

/// Refuses a new snapshot for `who` when it would pass a quota. Call it in
/// the transaction that inserts the snapshot: it first takes the
/// speaker's lock, held until that transaction ends.
pub async fn check<C: ConnectionTrait>(
    txn: &C,
    quotas: &Quotas,
    who: &Principal,
    now: DateTime<Utc>,
) -> ApiResult<()> {
    if who.is_admin() || *quotas == Quotas::default() {
        return Ok(());
    }
    lock_speaker(txn, &who.sub).await?;
    let used = usage(txn, &who.sub, now).await?;
    let refuse = |what: String| Err(ApiError::new(Code::QuotaExceeded, what));
    if let Some(limit) = quotas.in_flight
        && used.in_flight >= limit
    {
        return refuse(format!(
            "quota exceeded: {} of your snapshots are in progress (at most {limit} at once); wait for one to finish",
            used.in_flight
        ));
    }
    if let Some(limit) = quotas.per_day
        && used.last_day >= limit
    {
        return refuse(format!(
            "quota exceeded: you requested {} snapshots in the last 24 hours (at most {limit})",
            used.last_day
        ));
    }
    if let Some(limit) = quotas.bytes
        && used.bytes >= limit
    {
        return refuse(format!(
            "quota exceeded: your pushed snapshots hold {} bytes (at most {limit}); delete some first",
            used.bytes
        ));
    }
    Ok(())
}

/// Serialises the quota checks of one speaker until the transaction ends.
async fn lock_speaker<C: ConnectionTrait>(txn: &C, sub: &str) -> ApiResult<()> {
    let statement = match txn.get_database_backend() {
        DbBackend::Postgres => {
            let hash = Sha256::digest(format!("dcs-quota\0{sub}"));
            let key = i64::from_be_bytes(hash[..8].try_into().expect("eight bytes"));
            Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT pg_advisory_xact_lock($1)",
                [key.into()],
            )
        }
        // A write, even of no row, takes SQLite's one write lock for the
        // rest of the transaction: every other writer waits.
        backend => Statement::from_string(backend, "UPDATE snapshots SET id = id WHERE 1 = 0"),
    };
    txn.execute_raw(statement).await?;
    Ok(())
}
