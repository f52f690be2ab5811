//! How an operator sets persisted queries up (flags and environment in
//! `config`).

use std::time::Duration;

/// Which queries this server runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Any query; a query sent with its hash is stored (automatic
    /// persisted queries), so the client may send the hash alone next time.
    Automatic,
    /// Only registered queries (by the `registerPersistedQuery` mutation or
    /// the manifest), sent by hash or in full; nothing is stored
    /// automatically. Admins are exempt: they register the queries.
    RegisteredOnly,
}

#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub mode: Mode,
    /// Automatic entries kept in the shared table; beyond it the least
    /// recently used go (checked every `cap / 100` inserts, so the table
    /// may hold 1 % more per replica). 0 stores none.
    pub max_automatic_entries: u64,
    /// Longest query text stored (bytes); a longer one sent with its hash
    /// runs but is not kept, and cannot be registered.
    pub max_query_bytes: usize,
    /// A stored query's `last_used_at` is written at most this often per
    /// replica: use is recorded without a write per request, at the price
    /// of an eviction order precise to this interval.
    pub touch_interval: Duration,
}

impl Default for Settings {
    /// The defaults of `ServeArgs`.
    fn default() -> Self {
        Self {
            mode: Mode::Automatic,
            max_automatic_entries: 10_000,
            max_query_bytes: 64 * 1024,
            touch_interval: Duration::from_secs(60),
        }
    }
}
