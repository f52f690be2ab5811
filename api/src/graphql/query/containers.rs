use async_graphql::{Context, Object, Result};

use crate::graphql::context::{principal, state};
use crate::graphql::types::Container;
use crate::service::containers::{self, ContainerFilter};

#[derive(Default, Debug)]
pub(super) struct ContainersQuery;

#[Object]
impl ContainersQuery {
    /// Containers the caller may snapshot, as the agents last reported them.
    #[graphql(complexity = "crate::graphql::complexity::unpaged_list_complexity(child_complexity)")]
    async fn containers(
        &self,
        ctx: &Context<'_>,
        node: Option<String>,
        pod_namespace: Option<String>,
        pod_name: Option<String>,
    ) -> Result<Vec<Container>> {
        let who = principal(ctx)?;
        let filter = ContainerFilter {
            node,
            pod_namespace,
            pod_name,
        };
        Ok(containers::list(state(ctx)?, who, filter)
            .await?
            .into_iter()
            .map(Container)
            .collect())
    }
}
