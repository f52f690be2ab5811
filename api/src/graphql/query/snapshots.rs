use async_graphql::{Context, ID, InputObject, Object, Result};

use crate::db::OneConnection;
use crate::graphql::connections::SnapshotConnection;
use crate::graphql::context::{loader, principal, state};
use crate::graphql::ids::parse_id;
use crate::graphql::snapshot_columns;
use crate::graphql::types::{Snapshot, SnapshotStatus};
use crate::service::snapshots::{self, Cursor, SnapshotFilter};
use crate::service::{lineage, page};

#[derive(Default, Debug)]
pub(super) struct SnapshotsQuery;

/// Filters of `snapshots`; all optional, combined with AND.
#[derive(InputObject, Default)]
pub(super) struct SnapshotsFilter {
    /// The `sub` of who requested them.
    pub owner: Option<String>,
    /// Only those in this status.
    pub status: Option<SnapshotStatus>,
    /// `registry/path`, without tag.
    pub repository: Option<String>,
    /// Only those of containers on this node.
    pub node: Option<String>,
}

/// Loads the page's parents and children, each in one query and only when
/// the query asks for them, and hands them to the request's DataLoaders, so
/// `parent` and `children` of every row cost no further query, whatever the
/// timing. A `parent` that asks for nothing but its `id` is answered from
/// the id and the visibility columns ([`snapshots::SnapshotRef`]), not the
/// whole row.
async fn prefetch_lineage(
    ctx: &Context<'_>,
    reads: &mut OneConnection<'_>,
    rows: &[entity::snapshot::Model],
) -> Result<()> {
    use crate::graphql::loaders::{ChildrenById, SnapshotRefsById, SnapshotsById};
    use crate::graphql::types::asks_only_id;
    let node = ctx.look_ahead().field("edges").field("node");
    let direct = node.field("parent").selection_fields();
    // A `parent` deeper down (`children { parent }`, `descendants
    // { parent }`, ...) may be a row of the page: hand them all over.
    let nested = node.selection_fields().iter().any(|n| {
        n.selection_set()
            .any(|f| f.selection_set().any(|g| has_field_below(g, "parent")))
    });
    let mut parent_ids: Vec<uuid::Uuid> = Vec::new();
    if !direct.is_empty() {
        parent_ids = rows.iter().filter_map(|r| r.parent_id).collect();
        // Siblings share a parent: ask for each once.
        parent_ids.sort_unstable();
        parent_ids.dedup();
    }
    // The page's rows the loaders need: its rows' parents, or all of
    // them. Parents on the page itself are already here.
    let on_page: Vec<&entity::snapshot::Model> = rows
        .iter()
        .filter(|r| nested || parent_ids.binary_search(&r.id).is_ok())
        .collect();
    parent_ids.retain(|id| !rows.iter().any(|r| r.id == *id));
    let full = nested || direct.iter().any(|f| !asks_only_id(*f));
    let refs = nested || direct.iter().any(|f| asks_only_id(*f));
    let full_loader = if full {
        Some(loader::<SnapshotsById>(ctx)?)
    } else {
        None
    };
    let ref_loader = if refs {
        Some(loader::<SnapshotRefsById>(ctx)?)
    } else {
        None
    };
    if let Some(loader) = full_loader {
        let parents = snapshots::by_ids(reads, &parent_ids).await?;
        if let Some(refs) = ref_loader {
            let all = on_page.iter().copied().chain(parents.values());
            refs.feed_many(all.map(|r| (r.id, r.into()))).await;
        }
        let page = on_page.iter().map(|r| (r.id, (*r).clone()));
        loader.feed_many(page.chain(parents)).await;
    } else if let Some(loader) = ref_loader {
        let parents = snapshots::refs_by_ids(reads, &parent_ids).await?;
        let page = on_page.iter().map(|r| (r.id, (*r).into()));
        loader.feed_many(page.chain(parents)).await;
    }
    if node.field("children").exists() {
        let loader = loader::<ChildrenById>(ctx)?;
        let ids: Vec<uuid::Uuid> = rows.iter().map(|r| r.id).collect();
        let mut children = snapshots::children_of(reads, &ids).await?;
        // Rows without children are fed too: "none" is an answer.
        let all = ids
            .iter()
            .map(|id| (*id, children.remove(id).unwrap_or_default()));
        loader.feed_many(all).await;
    }
    Ok(())
}

/// Loads the scan reports of the page's rows that have one, in one query,
/// only when the query asks for what is read from a report (`truncated`,
/// the `findings` list), and hands them to the request's loader: left to
/// its batching window, a page on a busy machine asks in several batches.
async fn prefetch_reports(ctx: &Context<'_>, rows: &[entity::snapshot::Model]) -> Result<()> {
    use crate::graphql::loaders::ReportsById;
    let findings = ctx
        .look_ahead()
        .field("edges")
        .field("node")
        .field("findings");
    if !(findings.field("truncated").exists() || findings.field("findings").exists()) {
        return Ok(());
    }
    let ids: Vec<uuid::Uuid> = rows
        .iter()
        .filter(|r| r.finding_count.is_some())
        .map(|r| r.id)
        .collect();
    let reports = crate::service::findings::reports(state(ctx)?, &ids).await?;
    let all = reports
        .into_iter()
        .map(|(id, report)| (id, std::sync::Arc::new(report)));
    loader::<ReportsById>(ctx)?.feed_many(all).await;
    Ok(())
}

/// Does a field named `name` appear anywhere under `field`?
fn has_field_below(field: async_graphql::SelectionField<'_>, name: &str) -> bool {
    field.name() == name || field.selection_set().any(|f| has_field_below(f, name))
}

/// The `first` of each `ancestors` / `descendants` the page's nodes ask
/// for (aliases may ask with several), from the query itself.
fn lineage_lengths(ctx: &Context<'_>, field: &str) -> Vec<usize> {
    let mut lengths: Vec<usize> = ctx
        .look_ahead()
        .field("edges")
        .field("node")
        .field(field)
        .selection_fields()
        .iter()
        .map(|f| {
            f.arguments()
                .ok()
                .and_then(|args| {
                    args.iter()
                        .find(|(name, _)| name.as_str() == "first")
                        .and_then(|(_, value)| match value {
                            async_graphql::Value::Number(n) => n.as_u64(),
                            _ => None,
                        })
                })
                .map_or(lineage::DEFAULT_FIRST, |n| n as usize)
        })
        .filter(|n| (1..=lineage::MAX_FIRST).contains(n))
        .collect();
    lengths.sort_unstable();
    lengths.dedup();
    lengths
}

/// Loads the lineage lists the page's nodes will ask for, one recursive
/// query per field and length, and hands them to the request's loaders:
/// left to the loaders' batching window, the rows of a page on a busy
/// machine ask in several batches (one query each).
async fn prefetch_lineage_lists(ctx: &Context<'_>, ids: &[uuid::Uuid]) -> Result<()> {
    use crate::graphql::loaders::{AncestorsOf, DescendantsOf, LineageKey};
    let state = state(ctx)?;
    let keyed = |first: usize, mut lists: std::collections::HashMap<uuid::Uuid, _>| {
        ids.iter()
            .map(|id| {
                let key = LineageKey { root: *id, first };
                (key, lists.remove(id).unwrap_or_default())
            })
            .collect::<Vec<(LineageKey, Vec<entity::snapshot::Model>)>>()
    };
    for first in lineage_lengths(ctx, "ancestors") {
        let lists = lineage::ancestors(state, ids, first).await?;
        loader::<AncestorsOf>(ctx)?
            .feed_many(keyed(first, lists))
            .await;
    }
    for first in lineage_lengths(ctx, "descendants") {
        let lists = lineage::descendants(state, ids, first).await?;
        loader::<DescendantsOf>(ctx)?
            .feed_many(keyed(first, lists))
            .await;
    }
    Ok(())
}

#[Object]
impl SnapshotsQuery {
    /// One snapshot the caller may see, by id; `NOT_FOUND` otherwise.
    async fn snapshot(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The snapshot's id.")] id: ID,
    ) -> Result<Snapshot> {
        let who = principal(ctx)?;
        let id = parse_id(&id, "snapshot")?;
        Ok(Snapshot(snapshots::get(state(ctx)?, who, id).await?))
    }

    /// Snapshots the caller may see, newest first: at most `first`
    /// (default 20, at most 100) after the cursor `after`.
    #[graphql(complexity = "crate::graphql::complexity::list_complexity(first, child_complexity)")]
    async fn snapshots(
        &self,
        ctx: &Context<'_>,
        #[graphql(
            default = 20,
            validator(minimum = 1, maximum = 100),
            desc = "How many snapshots, at most."
        )]
        first: i32,
        #[graphql(desc = "The `endCursor` of the previous page.")] after: Option<String>,
        #[graphql(desc = "Only the snapshots that match.")] filter: Option<SnapshotsFilter>,
    ) -> Result<SnapshotConnection> {
        let who = principal(ctx)?;
        let filter = filter.unwrap_or_default();
        let after = after.as_deref().map(page::decode::<Cursor>).transpose()?;
        let columns = snapshot_columns::for_rows(ctx.look_ahead().field("edges").field("node"));
        let state = state(ctx)?;
        // The page and its lineage rows on one connection, given back
        // before the lineage lists, which read on their own.
        let mut reads = OneConnection::new(&state.db);
        let page = snapshots::list(
            state,
            &mut reads,
            who,
            SnapshotFilter {
                requested_by: filter.owner,
                status: filter.status.map(Into::into),
                repository: filter.repository,
                node: filter.node,
            },
            usize::try_from(first)?,
            after,
            &columns,
        )
        .await?;
        prefetch_lineage(ctx, &mut reads, &page.rows).await?;
        drop(reads);
        prefetch_reports(ctx, &page.rows).await?;
        let ids: Vec<uuid::Uuid> = page.rows.iter().map(|r| r.id).collect();
        prefetch_lineage_lists(ctx, &ids).await?;
        Ok(SnapshotConnection::new(page))
    }
}
