use async_graphql::{Context, InputObject, Object, Result};

use crate::graphql::context::{audited_principal, state};
use crate::graphql::persisted_queries::PersistedQuery;
use crate::service::persisted_queries::{self, NewRegistration};

#[derive(Default, Debug)]
pub(super) struct PersistedQueryMutation;

/// A query to register.
#[derive(InputObject)]
pub(super) struct RegisterPersistedQueryInput {
    /// A name for people reading the list, e.g. the operation's name.
    pub name: String,
    /// The query's exact text: clients send its SHA-256, or this text byte
    /// for byte (another spacing is another query).
    pub query: String,
}

#[Object]
impl PersistedQueryMutation {
    /// Registers a query (admins only): its SHA-256 then runs it, on every
    /// replica, in every mode. Registering the same text again renames it.
    async fn register_persisted_query(
        &self,
        ctx: &Context<'_>,
        input: RegisterPersistedQueryInput,
    ) -> Result<PersistedQuery> {
        let name: String = input.name.chars().take(200).collect();
        let detail = serde_json::json!({ "name": name });
        let who =
            audited_principal(ctx, "registerPersistedQuery", "persisted_query", detail).await?;
        let registration = NewRegistration {
            name: input.name,
            query: input.query,
        };
        Ok(PersistedQuery(
            persisted_queries::register(state(ctx)?, who, registration).await?,
        ))
    }
}
