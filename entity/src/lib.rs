//! SeaORM entities: one module per table, the models and their relations.
//! The schema itself is written by the `migration` crate; keep both in step.
//!
//! Types as stored (the same Rust types on both backends):
//!
//! | Rust | PostgreSQL | SQLite |
//! |---|---|---|
//! | `Uuid` | `uuid` | 16-byte BLOB |
//! | `DateTimeUtc` | `timestamptz` (microseconds) | RFC 3339 TEXT |
//! | `Json` | `json` | TEXT |
//! | `i64` / `i32` | `bigint` / `integer` | INTEGER |
//! | [`SnapshotStatus`], [`ManifestDeletion`], [`NodeState`], [`PersistedQueryKind`] | `text` | TEXT |
//!
//! `snapshot_findings` maps the scan columns of `snapshots` (see there).

pub mod audit_log;
pub mod container;
mod db_error;
pub mod node;
pub mod persisted_query;
pub mod prelude;
pub mod snapshot;
pub mod snapshot_event;
pub mod snapshot_findings;
pub mod webhook_attempt;
pub mod webhook_delivery;
pub mod webhook_endpoint;

pub use db_error::{is_foreign_key_violation, is_unique_violation};
pub use node::NodeState;
pub use persisted_query::PersistedQueryKind;
pub use snapshot::{ManifestDeletion, SnapshotStatus};
pub use webhook_delivery::DeliveryStatus;
