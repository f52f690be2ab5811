//! Lineage lists: each is ONE recursive SQL statement (`WITH RECURSIVE`,
//! the same text on Postgres and SQLite) for any number of starting
//! snapshots, bounded by `first`. Walking the parent links one generation
//! per query cost 3.0 s for 500 generations on Postgres (one round trip
//! and one plan per step); see `scripts/bench-lineage.sh`.
//!
//! The statements run through `db::query_cancellable`: an abandoned
//! request's walk stops in the database too. Who may see which snapshot is
//! decided by the caller (the GraphQL resolvers), with the one visibility
//! rule of the service.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use entity::snapshot;
use sea_orm::{DbBackend, FromQueryResult, IdenStatic, Iterable};
use uuid::Uuid;

use crate::errors::{ApiError, ApiResult};
use crate::state::AppState;

/// `first` when a lineage field does not give one.
pub const DEFAULT_FIRST: usize = 100;
/// The longest list one lineage field returns.
pub const MAX_FIRST: usize = 1_000;

/// Parameter placeholders, numbered from `from`: `$n` on Postgres, `?` on
/// SQLite (each parameter is used exactly once, in order).
fn placeholders(backend: DbBackend, from: usize, count: usize) -> Vec<String> {
    (from..from + count)
        .map(|n| match backend {
            DbBackend::Postgres => format!("${n}"),
            _ => "?".to_string(),
        })
        .collect()
}

/// `s."id", s."requested_by", ...`: the columns of `snapshot::Model` by
/// name. Never `s.*`, which would read the scan columns too (a report of a
/// thousand paths per row; see `entity::snapshot_findings`).
static SNAPSHOT_COLUMNS: LazyLock<String> = LazyLock::new(|| {
    snapshot::Column::iter()
        .map(|c| format!("s.\"{}\"", c.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
});

/// Ancestors of each root: parent, grandparent, ... nearest first, at most
/// `first` generations.
#[tracing::instrument(level = "debug", skip_all, fields(roots = roots.len(), first = first))]
pub async fn ancestors(
    state: &AppState,
    roots: &[Uuid],
    first: usize,
) -> ApiResult<HashMap<Uuid, Vec<snapshot::Model>>> {
    if roots.is_empty() || first == 0 {
        return Ok(HashMap::new());
    }
    let backend = state.db.get_database_backend();
    let ids = placeholders(backend, 1, roots.len()).join(", ");
    let limit = placeholders(backend, roots.len() + 1, 1).join("");
    // `lineage.id` is the next ancestor to read; the walk stops at a root
    // of the lineage or after `first` generations (so a cycle, which the
    // API never writes, cannot loop either).
    let sql = format!(
        "WITH RECURSIVE lineage(root, id, depth) AS (\
           SELECT s.id, s.parent_id, CAST(1 AS BIGINT) FROM snapshots s \
           WHERE s.id IN ({ids}) AND s.parent_id IS NOT NULL \
           UNION ALL \
           SELECT l.root, s.parent_id, l.depth + 1 FROM lineage l \
           JOIN snapshots s ON s.id = l.id \
           WHERE l.depth < {limit} AND s.parent_id IS NOT NULL) \
         SELECT l.root AS lineage_root, l.depth AS lineage_depth, {columns} \
         FROM lineage l JOIN snapshots s ON s.id = l.id \
         ORDER BY l.root, l.depth",
        columns = *SNAPSHOT_COLUMNS
    );
    let mut values: Vec<sea_orm::Value> = roots.iter().map(|id| (*id).into()).collect();
    values.push((first as i64).into());
    rows(state, &sql, values).await
}

/// Descendants of each root: children, grandchildren, ... breadth first
/// (by generation, then creation time), at most `first` in all.
#[tracing::instrument(level = "debug", skip_all, fields(roots = roots.len(), first = first))]
pub async fn descendants(
    state: &AppState,
    roots: &[Uuid],
    first: usize,
) -> ApiResult<HashMap<Uuid, Vec<snapshot::Model>>> {
    if roots.is_empty() || first == 0 {
        return Ok(HashMap::new());
    }
    let backend = state.db.get_database_backend();
    let ids = placeholders(backend, 1, roots.len()).join(", ");
    let depth = placeholders(backend, roots.len() + 1, 1).join("");
    let count = placeholders(backend, roots.len() + 2, 1).join("");
    // The n-th descendant is at most n generations down, so `first` bounds
    // the depth; the rank keeps the first `first` of each root.
    let sql = format!(
        "WITH RECURSIVE lineage(root, id, depth) AS (\
           SELECT s.parent_id, s.id, CAST(1 AS BIGINT) FROM snapshots s \
           WHERE s.parent_id IN ({ids}) \
           UNION ALL \
           SELECT l.root, s.id, l.depth + 1 FROM lineage l \
           JOIN snapshots s ON s.parent_id = l.id \
           WHERE l.depth < {depth}) \
         SELECT * FROM (\
           SELECT l.root AS lineage_root, l.depth AS lineage_depth, \
             ROW_NUMBER() OVER (PARTITION BY l.root \
               ORDER BY l.depth, s.created_at, s.id) AS lineage_rank, {columns} \
           FROM lineage l JOIN snapshots s ON s.id = l.id) ranked \
         WHERE lineage_rank <= {count} \
         ORDER BY lineage_root, lineage_rank",
        columns = *SNAPSHOT_COLUMNS
    );
    let mut values: Vec<sea_orm::Value> = roots.iter().map(|id| (*id).into()).collect();
    values.push((first as i64).into());
    values.push((first as i64).into());
    rows(state, &sql, values).await
}

/// The rows by root, in the statement's order, each snapshot once per root.
async fn rows(
    state: &AppState,
    sql: &str,
    values: Vec<sea_orm::Value>,
) -> ApiResult<HashMap<Uuid, Vec<snapshot::Model>>> {
    let results = crate::db::query_cancellable(&state.db, sql, values).await?;
    let mut lists: HashMap<Uuid, Vec<snapshot::Model>> = HashMap::new();
    let mut seen: HashSet<(Uuid, Uuid)> = HashSet::new();
    for row in results {
        // Thousands of rows decode without a pause: yield now and then so
        // that an abandoned request's task is dropped here, not at the end.
        tokio::task::consume_budget().await;
        let root: Uuid = row.try_get("", "lineage_root")?;
        let model = snapshot::Model::from_query_result(&row, "")
            .map_err(|e| ApiError::internal("reading a lineage row", &e))?;
        if seen.insert((root, model.id)) {
            lists.entry(root).or_default().push(model);
        }
    }
    Ok(lists)
}
