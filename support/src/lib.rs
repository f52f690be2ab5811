//! What the API server (`dcs-api`) and the node agent (`dcs-agent`) both
//! need around their own logic, written once: how an error and its causes
//! read in one line, how logging is set up, and how a Kubernetes
//! service-account token is checked (TokenReview, with a short cache).

pub mod errors;
pub mod logging;
pub mod token_review;

pub use errors::describe_chain;
