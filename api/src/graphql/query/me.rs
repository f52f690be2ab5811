use async_graphql::{Context, Object, Result};

use crate::graphql::context::{principal, state};
use crate::graphql::types::Me;

#[derive(Default, Debug)]
pub(super) struct MeQuery;

#[Object]
impl MeQuery {
    /// The caller, as their token describes them.
    async fn me(&self, ctx: &Context<'_>) -> Result<Me> {
        let who = principal(ctx)?;
        let repository_prefixes = state(ctx)?.policy.push_prefixes(who);
        Ok(Me {
            sub: who.sub.clone(),
            role: who.role,
            namespaces: who.namespaces.clone(),
            repository_prefixes,
        })
    }
}
