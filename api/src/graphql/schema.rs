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
