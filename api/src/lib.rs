//! The API server of the desktop customisation service: GraphQL for
//! speakers and tools, authenticated callbacks for node agents, and the
//! dispatcher that hands snapshot jobs to agents.
//!
//! Error policy: services return [`errors::ApiError`], whose `code` is stable
//! and whose message a user can act on; internal details are logged, never
//! sent. `anyhow` appears only in `cli` and background tasks.

pub mod agent_api;
pub mod agents;
pub mod auth;
pub mod bus;
pub mod cli;
pub mod clock;
pub mod config;
pub mod console;
pub mod db;
pub mod dispatch;
pub mod errors;
#[cfg(test)]
mod fixtures;
pub mod graphql;
pub mod http;
pub mod kubernetes;
pub mod metrics;
pub mod persisted;
pub mod random;
pub mod registry;
pub mod retention;
pub mod service;
pub mod startup;
pub mod state;
pub mod webhooks;
