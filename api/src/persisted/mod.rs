//! Persisted queries: GraphQL documents named by the SHA-256 of their text.
//!
//! - **Automatic** (Apollo's automatic persisted queries, the default
//!   mode): a request whose `extensions.persistedQuery` is
//!   `{"version": 1, "sha256Hash": H}` and that has no `query` runs the
//!   query stored under H, or is answered `PERSISTED_QUERY_NOT_FOUND`
//!   (message `PersistedQueryNotFound`), on which an Apollo client sends
//!   the query again with its text. A query sent with H must hash to H; it
//!   runs, and is stored for the next time if the caller is authenticated
//!   (anonymous callers cannot fill the shared cache).
//! - **Registered only** (`--persisted-queries registered-only`): only
//!   queries registered by an admin (`registerPersistedQuery`) or by the
//!   manifest read at start-up run, sent by hash or in full (the full text
//!   is hashed and looked up); anything else is refused with
//!   `PERSISTED_QUERY_NOT_ALLOWED`, and nothing is stored automatically.
//!   Admins are exempt: they are the ones who register queries.
//!
//! The gate runs in the HTTP and WebSocket layers before a query is parsed:
//! a request without the extension in automatic mode costs one map look-up.
//! The store is one table shared by all replicas, with an LRU in each
//! process in front of it (`store`, `local_cache`).

mod extension;
mod gate;
mod hash;
mod local_cache;
pub mod manifest;
mod refusal;
pub mod settings;
mod store;

pub use self::gate::{Admitted, PersistedQueries, Requester};
pub use self::hash::QueryHash;
pub use self::manifest::operation_types;
pub use self::refusal::Refusal;
pub use self::settings::{Mode, Settings};
pub use self::store::Registration;
