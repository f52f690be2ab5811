use async_graphql::{Context, Object, Result};

use crate::graphql::context::{principal, state};
use crate::graphql::types::Node;
use crate::service::nodes;

#[derive(Default, Debug)]
pub(super) struct NodesQuery;

#[Object]
impl NodesQuery {
    /// Nodes with an agent, their versions and when they were last heard of.
    #[graphql(complexity = "crate::graphql::complexity::unpaged_list_complexity(child_complexity)")]
    async fn nodes(&self, ctx: &Context<'_>) -> Result<Vec<Node>> {
        principal(ctx)?;
        Ok(nodes::list(state(ctx)?)
            .await?
            .into_iter()
            .map(Node)
            .collect())
    }
}
