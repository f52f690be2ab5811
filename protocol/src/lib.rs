//! What the API server and the node agents say to each other.
//!
//! Both directions are authenticated with short-lived tokens signed with a
//! shared secret (`token`); the bodies are the JSON types below (`messages`).

pub mod changes;
pub mod messages;
pub mod token;

pub use messages::*;

/// HTTP paths of the API that agents call.
pub mod api_paths {
    pub const REGISTER: &str = "/agent/v1/register";
    pub const HEARTBEAT: &str = "/agent/v1/heartbeat";
    pub const INVENTORY: &str = "/agent/v1/inventory";
    pub const EVENTS: &str = "/agent/v1/events";
}

/// HTTP paths of an agent that the API calls.
pub mod agent_paths {
    pub const JOBS: &str = "/v1/jobs";
    pub const HEALTHZ: &str = "/healthz";
    pub const READYZ: &str = "/readyz";
    pub const METRICS: &str = "/metrics";
}
