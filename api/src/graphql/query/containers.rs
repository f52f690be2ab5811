use async_graphql::{Context, Object, Result};

use crate::graphql::connections::ContainerConnection;
use crate::graphql::context::{principal, state};
use crate::service::containers::{self, ContainerCursor, ContainerFilter};
use crate::service::page;

#[derive(Default, Debug)]
pub(super) struct ContainersQuery;

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
        Ok(ContainerConnection::new(page, filter))
    }
}
