use async_graphql::{Context, ID, Object, Result};

use crate::graphql::context::{principal, state};
use crate::graphql::ids::parse_id;
use crate::graphql::webhooks::{WebhookDelivery, WebhookDeliveryStatus, WebhookEndpoint};
use crate::webhooks::endpoints;

#[derive(Default, Debug)]
pub(super) struct WebhooksQuery;

#[Object]
impl WebhooksQuery {
    /// Webhook endpoints (admins).
    #[graphql(complexity = "crate::graphql::complexity::unpaged_list_complexity(child_complexity)")]
    async fn webhook_endpoints(&self, ctx: &Context<'_>) -> Result<Vec<WebhookEndpoint>> {
        let who = principal(ctx)?;
        Ok(endpoints::list(state(ctx)?, who)
            .await?
            .into_iter()
            .map(WebhookEndpoint)
            .collect())
    }

    /// Deliveries, newest first (admins).
    async fn webhook_deliveries(
        &self,
        ctx: &Context<'_>,
        endpoint: Option<ID>,
        status: Option<WebhookDeliveryStatus>,
        #[graphql(default = 50, validator(minimum = 1, maximum = 500))] first: i32,
    ) -> Result<Vec<WebhookDelivery>> {
        let who = principal(ctx)?;
        let endpoint = endpoint
            .as_ref()
            .map(|id| parse_id(id, "webhook endpoint"))
            .transpose()?;
        Ok(endpoints::deliveries(
            state(ctx)?,
            who,
            endpoint,
            status.map(Into::into),
            first as u64,
        )
        .await?
        .into_iter()
        .map(WebhookDelivery)
        .collect())
    }
}
