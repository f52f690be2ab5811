use async_graphql::{Context, ID, InputObject, Object, Result};

use crate::graphql::context::{principal, state};
use crate::graphql::ids::parse_id;
use crate::graphql::webhooks::{
    WebhookDelivery, WebhookEndpoint, WebhookEndpointWithSecret, WebhookEventType,
};
use crate::webhooks::EventType;
use crate::webhooks::endpoints::{self, EndpointChanges, NewEndpoint};

#[derive(Default, Debug)]
pub(super) struct WebhookMutation;

/// A new webhook endpoint.
#[derive(InputObject)]
pub(super) struct CreateWebhookEndpointInput {
    /// HTTPS URL of the receiver.
    pub url: String,
    /// The events to send to it.
    pub event_types: Vec<WebhookEventType>,
    /// What it is for (at most 500 bytes).
    pub description: Option<String>,
}

/// Changes to a webhook endpoint; what is left out stays as it is.
#[derive(InputObject)]
pub(super) struct UpdateWebhookEndpointInput {
    /// A new HTTPS URL of the receiver.
    pub url: Option<String>,
    /// The events to send to it from now on.
    pub event_types: Option<Vec<WebhookEventType>>,
    /// Re-enabling clears the reason and the failing streak.
    pub enabled: Option<bool>,
    /// A new description (at most 500 bytes).
    pub description: Option<String>,
}

fn typed(types: Vec<WebhookEventType>) -> Vec<EventType> {
    types.into_iter().map(EventType::from).collect()
}

#[Object]
impl WebhookMutation {
    /// Creates an endpoint; its secret is returned this once.
    async fn create_webhook_endpoint(
        &self,
        ctx: &Context<'_>,
        input: CreateWebhookEndpointInput,
    ) -> Result<WebhookEndpointWithSecret> {
        let who = principal(ctx)?;
        let (endpoint, secret) = endpoints::create(
            state(ctx)?,
            who,
            NewEndpoint {
                url: input.url,
                event_types: typed(input.event_types),
                description: input.description,
            },
        )
        .await?;
        Ok(WebhookEndpointWithSecret {
            endpoint: WebhookEndpoint(endpoint),
            secret,
        })
    }

    /// Changes an endpoint (admins).
    async fn update_webhook_endpoint(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdateWebhookEndpointInput,
    ) -> Result<WebhookEndpoint> {
        let who = principal(ctx)?;
        let id = parse_id(&id, "webhook endpoint")?;
        let changes = EndpointChanges {
            url: input.url,
            event_types: input.event_types.map(typed),
            enabled: input.enabled,
            description: input.description,
        };
        Ok(WebhookEndpoint(
            endpoints::update(state(ctx)?, who, id, changes).await?,
        ))
    }

    /// A new secret; the old one keeps signing alongside it for 24 hours.
    async fn rotate_webhook_secret(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> Result<WebhookEndpointWithSecret> {
        let who = principal(ctx)?;
        let id = parse_id(&id, "webhook endpoint")?;
        let (endpoint, secret) = endpoints::rotate(state(ctx)?, who, id).await?;
        Ok(WebhookEndpointWithSecret {
            endpoint: WebhookEndpoint(endpoint),
            secret,
        })
    }

    /// Deletes an endpoint and its deliveries (admins); true when done,
    /// `NOT_FOUND` when there is no such endpoint.
    async fn delete_webhook_endpoint(&self, ctx: &Context<'_>, id: ID) -> Result<bool> {
        let who = principal(ctx)?;
        let id = parse_id(&id, "webhook endpoint")?;
        Ok(endpoints::delete(state(ctx)?, who, id).await?)
    }

    /// Queues a `ping` event to the endpoint.
    async fn send_test_webhook(&self, ctx: &Context<'_>, id: ID) -> Result<WebhookDelivery> {
        let who = principal(ctx)?;
        let id = parse_id(&id, "webhook endpoint")?;
        Ok(WebhookDelivery(
            endpoints::send_test(state(ctx)?, who, id).await?,
        ))
    }

    /// Sends a finished delivery again, with the same `webhook-id`.
    async fn redeliver_webhook(&self, ctx: &Context<'_>, id: ID) -> Result<WebhookDelivery> {
        let who = principal(ctx)?;
        let id = parse_id(&id, "webhook delivery")?;
        Ok(WebhookDelivery(
            endpoints::redeliver(state(ctx)?, who, id).await?,
        ))
    }
}
