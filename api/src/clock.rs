//! The one source of "now" for stored times.

use chrono::{DateTime, SubsecRound, Utc};

/// Now, truncated to microseconds: Postgres keeps microseconds and SQLite
/// would keep nanoseconds, so stored times (and the pagination cursors
/// built from them) compare the same on both.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}
