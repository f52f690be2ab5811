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

/// What a list field counts in the query's complexity: its length times
/// what each element asks for. So lists nested in lists multiply, and
/// aliases add up, and the complexity limit refuses such a query before
/// anything runs: `ancestors { ancestors { id } }` with the default length
/// counts 100 x 100. Capped so that no sum of such numbers can overflow.
pub fn list_complexity(first: i32, child_complexity: usize) -> usize {
    let length = first.clamp(0, MAX_LIST_LENGTH) as usize;
    length
        .saturating_mul(child_complexity.max(1))
        .min(MAX_FIELD_COMPLEXITY)
}

/// A list without `first` (containers, nodes, webhook endpoints) counts as
/// this many elements: a guess at a big workshop, so that aliasing it
/// adds up too.
const UNPAGED_LIST_LENGTH: i32 = 50;

pub fn unpaged_list_complexity(child_complexity: usize) -> usize {
    list_complexity(UNPAGED_LIST_LENGTH, child_complexity)
}

/// No list field returns more (the lineage fields' `first` maximum).
const MAX_LIST_LENGTH: i32 = 1_000;

/// The most one field may count: far above any limit, far below overflow
/// however many fields a 1 MiB query holds.
const MAX_FIELD_COMPLEXITY: usize = 1_000_000_000;

/// The SDL, as committed in `schema.graphql`.
pub fn sdl() -> String {
    build_schema(None, SchemaLimits::default()).sdl()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_complexity_multiplies_and_never_overflows() {
        assert_eq!(list_complexity(100, 1), 100);
        assert_eq!(list_complexity(100, 100), 10_000);
        assert_eq!(list_complexity(-5, 10), 0);
        // `first` beyond the maximum counts as the maximum.
        assert_eq!(list_complexity(i32::MAX, 1), 1_000);
        assert_eq!(list_complexity(1_000, usize::MAX), MAX_FIELD_COMPLEXITY);
    }

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
