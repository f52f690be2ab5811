use async_graphql::{Context, Object, Result};

use crate::graphql::connections::NodeConnection;
use crate::graphql::context::{principal, state};
use crate::service::nodes::{self, NodeCursor};
use crate::service::page;

#[derive(Default, Debug)]
pub(super) struct NodesQuery;

#[Object]
impl NodesQuery {
    /// Nodes with an agent, their versions and when they were last heard
    /// of, by name: at most `first` (default 50, at most 100) after the
    /// cursor `after`.
    #[graphql(complexity = "crate::graphql::complexity::list_complexity(first, child_complexity)")]
    async fn nodes(
        &self,
        ctx: &Context<'_>,
        #[graphql(
            default = 50,
            validator(minimum = 1, maximum = 100),
            desc = "How many nodes, at most."
        )]
        first: i32,
        #[graphql(desc = "The `endCursor` of the previous page.")] after: Option<String>,
    ) -> Result<NodeConnection> {
        principal(ctx)?;
        let after = after
            .as_deref()
            .map(page::decode::<NodeCursor>)
            .transpose()?;
        let first = usize::try_from(first)?;
        Ok(NodeConnection::new(
            nodes::list(state(ctx)?, first, after).await?,
        ))
    }
}
