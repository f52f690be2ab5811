//! The operations behind the GraphQL resolvers and the agent callbacks.
//! Each takes the shared state and returns domain errors with stable codes.

pub mod agent_calls;
pub mod agent_events;
pub mod audit;
pub mod containers;
pub mod deletion;
pub mod event_log;
pub mod findings;
pub mod layers;
pub mod lineage;
pub mod nodes;
pub mod page;
pub mod persisted_queries;
pub mod previews;
pub mod quotas;
pub mod snapshot_rows;
pub mod snapshots;
pub mod transitions;
