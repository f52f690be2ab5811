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
pub mod preview;
pub mod registry;
pub mod scan;
pub mod serve;
pub mod spool;
