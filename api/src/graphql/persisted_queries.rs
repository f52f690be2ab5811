//! GraphQL types of persisted queries (admins register them).

use async_graphql::Object;
use chrono::{DateTime, Utc};
use entity::persisted_query;

#[derive(Debug)]
pub struct PersistedQuery(pub persisted_query::Model);

/// A query registered to run by its SHA-256. In registered-only mode
/// (`--persisted-queries registered-only`) only registered queries run for
/// callers other than admins.
#[Object]
impl PersistedQuery {
    /// The SHA-256 of the query's text in 64 lower-case hex digits: what a
    /// client sends as `extensions.persistedQuery.sha256Hash`.
    async fn sha256_hash(&self) -> &str {
        &self.0.hash
    }

    /// The name it was registered under.
    async fn name(&self) -> Option<&str> {
        self.0.name.as_deref()
    }

    /// The query's text, exactly as registered.
    async fn query(&self) -> &str {
        &self.0.query
    }

    /// Who registered it: an admin's subject, or `manifest` for the
    /// manifest read at start-up.
    async fn registered_by(&self) -> Option<&str> {
        self.0.registered_by.as_deref()
    }

    /// When the text was first stored (automatically or registered).
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}
