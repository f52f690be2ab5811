//! What the API server (`dcs-api`) and the node agent (`dcs-agent`) both
//! need around their own logic, written once: how an error and its causes
//! read in one line, how logs and traces are set up and a trace is carried
//! from one process to the next, how a Kubernetes service-account token is
//! checked (TokenReview, with a short cache), and how registry credentials
//! are read from a `dockerconfigjson` file.

pub mod errors;
pub mod logging;
pub mod registry_credentials;
pub mod telemetry;
pub mod token_review;
pub mod trace_context;

pub use errors::describe_chain;
