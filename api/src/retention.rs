//! Retention: per repository, keep the newest N pushed snapshots and
//! delete the older ones (`--retention-keep N`; off by default).
//!
//! A snapshot whose image a desktop runs (a container reports its image,
//! by digest or by reference) is never deleted, whatever its age: the next
//! snapshot of that desktop names it as parent, and a restarted pod pulls
//! it again. Older snapshots stay harmless for the kept ones: a kept
//! image's manifest lists every layer it needs, so the registry keeps
//! those blobs whatever happens to the manifests below it.
//!
//! Nor is a snapshot whose image is the lineage base of a pushed one (a
//! desktop started from a snapshot image outside the service's lineage,
//! or rows from before lineage bases were recorded, whose base is their
//! parent's image): flattening that lineage later reads the base's
//! manifest from the registry.
//!
//! One replica at a time runs a pass (an advisory lock on Postgres; SQLite
//! has one process). Every deletion goes through the same path as
//! `deleteSnapshot` (registry, `DELETED` row, event, webhook) and is
//! audited as the actor `retention`.

use std::collections::HashSet;
use std::time::Duration;

use entity::prelude::*;
use entity::{SnapshotStatus, container, snapshot};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait, ExprTrait,
    QueryFilter, QueryOrder, QuerySelect, Statement, TransactionTrait,
};
use tokio_util::sync::CancellationToken;

use crate::errors::ApiResult;
use crate::service::{audit, deletion};
use crate::state::AppState;

/// Who retention's deletions are by, in rows, events and the audit log.
pub const ACTOR: &str = "retention";
/// Snapshots one pass deletes at most: a first pass over a large backlog
/// must not hold the lock (or the registry) for long.
const MAX_PER_PASS: usize = 200;
/// The advisory lock that makes one replica's pass the only one.
const LOCK_KEY: i64 = 0x6463_735f_7265_746e; // "dcs_retn"

#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Pushed snapshots kept per repository, newest first.
    pub keep: u64,
    pub interval: Duration,
}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassReport {
    /// Another replica held the lock: nothing was looked at.
    pub skipped: bool,
    pub deleted: Vec<uuid::Uuid>,
    /// Older than the newest N, but a desktop runs their image, or it is
    /// the lineage base a pushed snapshot would flatten onto.
    pub kept_in_use: usize,
    pub failed: usize,
}

/// Runs a pass every `interval` until `stop`.
pub async fn run(state: AppState, settings: Settings, stop: CancellationToken) {
    tracing::info!(
        keep = settings.keep,
        interval_s = settings.interval.as_secs(),
        "retention on"
    );
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(settings.interval) => {}
        }
        match pass(&state, settings.keep).await {
            Ok(report) if !report.deleted.is_empty() || report.failed > 0 => tracing::info!(
                deleted = report.deleted.len(),
                kept_in_use = report.kept_in_use,
                failed = report.failed,
                "retention pass"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e.message, "retention pass failed; next one later"),
        }
    }
}

/// One pass over every repository holding more than `keep` pushed
/// snapshots.
pub async fn pass(state: &AppState, keep: u64) -> ApiResult<PassReport> {
    // Held until the pass ends: dropping the transaction releases it.
    let lease = state.db.begin().await?;
    if !take_lock(&lease).await? {
        return Ok(PassReport {
            skipped: true,
            ..Default::default()
        });
    }
    let mut report = PassReport::default();
    let candidates = candidates(state, keep).await?;
    let mut in_use = images_in_use(state, &candidates).await?;
    in_use.extend(lineage_bases(state, &candidates).await?);
    for old in candidates {
        if report.deleted.len() + report.failed >= MAX_PER_PASS {
            break;
        }
        let runs = old
            .manifest_digest
            .as_ref()
            .is_some_and(|d| in_use.contains(d))
            || in_use.contains(&old.target);
        if runs {
            report.kept_in_use += 1;
            continue;
        }
        let result = deletion::delete_pushed(state, &old, ACTOR).await;
        let (outcome, detail) = match &result {
            Ok(deleted) => {
                report.deleted.push(old.id);
                let manifest = deletion::manifest_text(deleted);
                (
                    "deleted",
                    serde_json::json!({"keep": keep, "manifest": manifest}),
                )
            }
            Err(e) => {
                report.failed += 1;
                tracing::warn!(snapshot_id = %old.id, error = %e.message, "retention could not delete");
                let error = serde_json::json!({"code": e.code.as_str(), "reason": e.message});
                ("failed", serde_json::json!({"keep": keep, "error": error}))
            }
        };
        audit::record_system(
            &state.db,
            ACTOR,
            "deleteSnapshot",
            "snapshot",
            Some(old.id.to_string()),
            outcome,
            detail,
        )
        .await;
    }
    lease.commit().await?;
    Ok(report)
}

/// Takes the pass's lock for the transaction's life; false when another
/// replica holds it.
async fn take_lock(lease: &DatabaseTransaction) -> ApiResult<bool> {
    if lease.get_database_backend() != DbBackend::Postgres {
        return Ok(true);
    }
    let row = lease
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_try_advisory_xact_lock($1) AS taken",
            [LOCK_KEY.into()],
        ))
        .await?;
    Ok(row.is_some_and(|r| r.try_get::<bool>("", "taken").unwrap_or(false)))
}

/// The pushed snapshots beyond the newest `keep` of their repository,
/// oldest repository first.
async fn candidates(state: &AppState, keep: u64) -> ApiResult<Vec<snapshot::Model>> {
    let crowded: Vec<String> = Snapshot::find()
        .select_only()
        .column(snapshot::Column::Repository)
        .filter(snapshot::Column::Status.eq(SnapshotStatus::Pushed))
        .group_by(snapshot::Column::Repository)
        .having(Expr::cust("COUNT(*)").gt(keep as i64))
        .order_by_asc(snapshot::Column::Repository)
        .into_tuple()
        .all(&state.db)
        .await?;
    let mut old = Vec::new();
    for repository in crowded {
        let rows = Snapshot::find()
            .filter(snapshot::Column::Repository.eq(repository))
            .filter(snapshot::Column::Status.eq(SnapshotStatus::Pushed))
            .order_by_desc(snapshot::Column::CreatedAt)
            .order_by_desc(snapshot::Column::Id)
            .offset(keep)
            .limit(MAX_PER_PASS as u64)
            .all(&state.db)
            .await?;
        old.extend(rows);
        if old.len() >= MAX_PER_PASS {
            break;
        }
    }
    Ok(old)
}

/// The candidates' digests that a pushed or unfinished snapshot has as
/// its lineage base.
async fn lineage_bases(
    state: &AppState,
    candidates: &[snapshot::Model],
) -> ApiResult<HashSet<String>> {
    let digests: Vec<String> = candidates
        .iter()
        .filter_map(|s| s.manifest_digest.clone())
        .collect();
    if digests.is_empty() {
        return Ok(HashSet::new());
    }
    let bases: Vec<Option<String>> = Snapshot::find()
        .select_only()
        .column(snapshot::Column::LineageBaseDigest)
        .filter(snapshot::Column::LineageBaseDigest.is_in(digests))
        // A flatten in flight reads its base too.
        .filter(snapshot::Column::Status.is_in([
            SnapshotStatus::Pushed,
            SnapshotStatus::Queued,
            SnapshotStatus::Diffing,
            SnapshotStatus::Pushing,
        ]))
        .distinct()
        .into_tuple()
        .all(&state.db)
        .await?;
    Ok(bases.into_iter().flatten().collect())
}

/// The candidates' digests and references that some container runs.
async fn images_in_use(
    state: &AppState,
    candidates: &[snapshot::Model],
) -> ApiResult<HashSet<String>> {
    if candidates.is_empty() {
        return Ok(HashSet::new());
    }
    let digests: Vec<String> = candidates
        .iter()
        .filter_map(|s| s.manifest_digest.clone())
        .collect();
    let targets: Vec<String> = candidates.iter().map(|s| s.target.clone()).collect();
    let running: Vec<(String, Option<String>)> = Container::find()
        .select_only()
        .column(container::Column::Image)
        .column(container::Column::ImageDigest)
        .filter(
            container::Column::ImageDigest
                .is_in(digests)
                .or(container::Column::Image.is_in(targets)),
        )
        .into_tuple()
        .all(&state.db)
        .await?;
    Ok(running
        .into_iter()
        .flat_map(|(image, digest)| std::iter::once(image).chain(digest))
        .collect())
}
