use async_graphql::{Context, ID, Object, Result};

use crate::graphql::connections::WebhookDeliveryConnection;
use crate::graphql::context::{loader, principal, state};
use crate::graphql::ids::parse_id;
use crate::graphql::loaders::AttemptsByDelivery;
use crate::graphql::webhooks::{WebhookDeliveryStatus, WebhookEndpoint};
use crate::service::page;
use crate::webhooks::endpoints::{self, DeliveryCursor, DeliveryFilter};

#[derive(Default, Debug)]
pub(super) struct WebhooksQuery;

/// Loads the attempts of every delivery of the page in one query, only when
/// the query asks for them, and hands them to the request's loader. Left
/// to the loader's batching window, the rows of a page on a busy machine
/// ask in several batches (one query each).
async fn prefetch_attempts(
    ctx: &Context<'_>,
    rows: &[entity::webhook_delivery::Model],
) -> Result<()> {
    let asked = ctx
        .look_ahead()
        .field("edges")
        .field("node")
        .field("attempts")
        .exists();
    if !asked {
        return Ok(());
    }
    let ids: Vec<uuid::Uuid> = rows.iter().map(|d| d.id).collect();
    let mut attempts = endpoints::attempts_of(state(ctx)?, &ids).await?;
    // Deliveries without attempts are fed too: "none" is an answer.
    let all = ids
        .iter()
        .map(|id| (*id, attempts.remove(id).unwrap_or_default()));
    loader::<AttemptsByDelivery>(ctx)?.feed_many(all).await;
    Ok(())
}

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

    /// Deliveries, newest first (admins): at most `first` (default 50, at
    /// most 500) after the cursor `after`.
    #[graphql(complexity = "crate::graphql::complexity::list_complexity(first, child_complexity)")]
    async fn webhook_deliveries(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only the deliveries to this endpoint.")] endpoint: Option<ID>,
        #[graphql(desc = "Only the deliveries in this status.")] status: Option<
            WebhookDeliveryStatus,
        >,
        #[graphql(
            default = 50,
            validator(minimum = 1, maximum = 500),
            desc = "How many deliveries, at most."
        )]
        first: i32,
        #[graphql(desc = "The `endCursor` of the previous page.")] after: Option<String>,
    ) -> Result<WebhookDeliveryConnection> {
        let who = principal(ctx)?;
        let endpoint = endpoint
            .as_ref()
            .map(|id| parse_id(id, "webhook endpoint"))
            .transpose()?;
        let after = after
            .as_deref()
            .map(page::decode::<DeliveryCursor>)
            .transpose()?;
        let filter = DeliveryFilter {
            endpoint,
            status: status.map(Into::into),
        };
        let page =
            endpoints::deliveries(state(ctx)?, who, filter, usize::try_from(first)?, after).await?;
        prefetch_attempts(ctx, &page.rows).await?;
        Ok(WebhookDeliveryConnection::new(page))
    }
}
