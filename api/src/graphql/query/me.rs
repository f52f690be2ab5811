use async_graphql::{Context, Object, Result};

use crate::graphql::context::principal;
use crate::graphql::types::Me;

#[derive(Default, Debug)]
pub(super) struct MeQuery;

#[Object]
impl MeQuery {
    /// The caller, as their token describes them.
    async fn me(&self, ctx: &Context<'_>) -> Result<Me> {
        let who = principal(ctx)?;
        Ok(Me {
            sub: who.sub.clone(),
            role: who.role,
            namespaces: who.namespaces.clone(),
        })
    }
}
