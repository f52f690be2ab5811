//! The node agent of the desktop customisation service.
//!
//! It runs next to a node's containerd and turns a running container into a
//! normal OCI image: base layers plus one new layer holding the container's
//! changes, pushed to a registry.
//!
//! Error policy: every module has its own `thiserror` enum whose messages are
//! one sentence a user can act on; `anyhow` appears only in the command
//! line (`cli`, which prints an error as one line) and in the service's
//! start-up and background tasks. Registry credentials never reach an
//! error message or a log.

pub mod cli;
pub mod commit;
pub mod containerd;
pub mod image;
pub mod layer;
pub mod lock;
pub mod registry;
pub mod serve;

/// The messages of an error and its sources, joined: transport errors keep
/// the useful part ("connection refused") in their sources.
pub fn describe_error(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = s.source();
    }
    message
}
