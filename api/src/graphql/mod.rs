//! The GraphQL API: queries, mutations and subscriptions over the
//! services, merged per domain, with the schema built once in `schema`.

pub mod complexity;
pub mod connections;
pub mod context;
pub mod findings;
pub mod ids;
pub mod int64;
pub mod loaders;
pub mod mutation;
pub mod persisted_queries;
pub mod previews;
pub mod query;
pub mod schema;
pub(crate) mod snapshot_columns;
pub mod subscription;
pub mod types;
pub mod webhooks;

pub use schema::{ApiSchema, SchemaLimits, build_schema, sdl};
