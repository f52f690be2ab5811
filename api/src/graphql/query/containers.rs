use async_graphql::{Context, Object, Result};

use crate::graphql::connections::ContainerConnection;
use crate::graphql::context::{loader, principal, state};
use crate::graphql::loaders::LastSnapshotByContainer;
use crate::service::containers::{self, ContainerCursor, ContainerFilter, ContainerKey};
use crate::service::page;

#[derive(Default, Debug)]
pub(super) struct ContainersQuery;

/// Loads the newest snapshot of every container of the page in one query,
/// only when the query asks for `lastSnapshot`, and hands them to the
/// request's loader. Left to the loader's batching window, the rows of a
/// page on a busy machine ask in several batches (one query each).
async fn prefetch_last_snapshots(
    ctx: &Context<'_>,
    rows: &[entity::container::Model],
) -> Result<()> {
    let asked = ctx
        .look_ahead()
        .field("edges")
        .field("node")
        .field("lastSnapshot")
        .exists();
    if !asked {
        return Ok(());
    }
    let loader = loader::<LastSnapshotByContainer>(ctx)?;
    let keys: Vec<ContainerKey> = rows
        .iter()
        .map(|c| (c.node.clone(), c.id.clone()))
        .collect();
    let mut found = containers::last_snapshots(state(ctx)?, &keys).await?;
    // Containers without snapshots are fed too: "none" is an answer.
    let all = keys.into_iter().map(|key| {
        let last = found.remove(&key);
        (key, last)
    });
    loader.feed_many(all).await;
    Ok(())
}

#[Object]
impl ContainersQuery {
    /// Containers the caller may snapshot, as the agents last reported them,
    /// by node, then container id: at most `first` (default 50, at most
    /// 100) after the cursor `after`.
    #[graphql(complexity = "crate::graphql::complexity::list_complexity(first, child_complexity)")]
    async fn containers(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only those on this node.")] node: Option<String>,
        #[graphql(desc = "Only those of pods in this namespace.")] pod_namespace: Option<String>,
        #[graphql(desc = "Only those of pods of this name.")] pod_name: Option<String>,
        #[graphql(
            default = 50,
            validator(minimum = 1, maximum = 100),
            desc = "How many containers, at most."
        )]
        first: i32,
        #[graphql(desc = "The `endCursor` of the previous page.")] after: Option<String>,
    ) -> Result<ContainerConnection> {
        let who = principal(ctx)?;
        let after = after
            .as_deref()
            .map(page::decode::<ContainerCursor>)
            .transpose()?;
        let filter = ContainerFilter {
            node,
            pod_namespace,
            pod_name,
        };
        let first = usize::try_from(first)?;
        let page = containers::list(state(ctx)?, who, filter.clone(), first, after).await?;
        prefetch_last_snapshots(ctx, &page.rows).await?;
        Ok(ContainerConnection::new(page, filter))
    }
}
