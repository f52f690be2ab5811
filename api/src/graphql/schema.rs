//! The schema, built once at start-up.

use async_graphql::Schema;

use super::mutation::Mutation;
use super::query::Query;
use super::subscription::Subscription;
use crate::state::AppState;

pub type ApiSchema = Schema<Query, Mutation, Subscription>;

/// Limits on what one query may ask for.
#[derive(Debug, Clone, Copy)]
pub struct SchemaLimits {
    pub max_depth: usize,
    pub max_complexity: usize,
    pub introspection: bool,
}

impl Default for SchemaLimits {
    fn default() -> Self {
        Self {
            max_depth: 12,
            max_complexity: 2_000,
            introspection: true,
        }
    }
}

pub fn build_schema(state: Option<AppState>, limits: SchemaLimits) -> ApiSchema {
    let mut builder = Schema::build(
        Query::default(),
        Mutation::default(),
        Subscription::default(),
    )
    .limit_depth(limits.max_depth)
    .limit_complexity(limits.max_complexity);
    if !limits.introspection {
        builder = builder.disable_introspection();
    }
    if let Some(state) = state {
        builder = builder.data(state);
    }
    builder.finish()
}

/// The SDL, as committed in `schema.graphql`.
pub fn sdl() -> String {
    build_schema(None, SchemaLimits::default()).sdl()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Refused by validation, before any resolver runs (this schema has no
    /// state: a resolver would answer UNAVAILABLE instead).
    #[tokio::test]
    async fn nested_and_aliased_lists_are_too_complex() {
        let schema = build_schema(None, SchemaLimits::default());
        let id = "00000000-0000-0000-0000-000000000000";
        let aliased: String = (0..50)
            .map(|i| format!("a{i}: snapshot(id: \"{id}\") {{ ancestors(first: 1000) {{ id }} }} "))
            .collect();
        for query in [
            format!("{{ snapshot(id: \"{id}\") {{ ancestors {{ ancestors {{ id }} }} }} }}"),
            format!(
                "{{ snapshot(id: \"{id}\") {{ descendants(first: 1000) {{ ancestors(first: 3) {{ id }} }} }} }}"
            ),
            format!("{{ {aliased} }}"),
        ] {
            let response = schema.execute(query.as_str()).await;
            let message = response
                .errors
                .first()
                .map(|e| e.message.clone())
                .unwrap_or_default();
            assert!(message.contains("too complex"), "{query}: {message}");
        }
        // A flat list of the maximum length is fine.
        let flat = format!("{{ snapshot(id: \"{id}\") {{ ancestors(first: 1000) {{ id }} }} }}");
        let response = schema.execute(flat.as_str()).await;
        assert!(
            response
                .errors
                .iter()
                .all(|e| !e.message.contains("too complex")),
            "{:?}",
            response.errors
        );
    }
}
