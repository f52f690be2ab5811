//! The audit log: who did what, with what outcome.

use entity::audit_log;
use sea_orm::{ActiveModelTrait, ConnectionTrait, Set};

use crate::auth::Principal;

/// Records an action; a failure to record is logged, not returned: the
/// action itself already happened (or was refused).
pub async fn record<C: ConnectionTrait>(
    db: &C,
    who: &Principal,
    action: &str,
    target_kind: &str,
    target_id: Option<String>,
    outcome: &str,
    detail: serde_json::Value,
) {
    let role = format!("{:?}", who.role).to_lowercase();
    let entry = Entry {
        action,
        target_kind,
        target_id,
        outcome,
        detail,
    };
    insert(db, &who.sub, &role, entry).await;
}

/// Records an action the service took on its own (retention), as `actor`
/// with the role `system`.
pub async fn record_system<C: ConnectionTrait>(
    db: &C,
    actor: &str,
    action: &str,
    target_kind: &str,
    target_id: Option<String>,
    outcome: &str,
    detail: serde_json::Value,
) {
    let entry = Entry {
        action,
        target_kind,
        target_id,
        outcome,
        detail,
    };
    insert(db, actor, "system", entry).await;
}

struct Entry<'a> {
    action: &'a str,
    target_kind: &'a str,
    target_id: Option<String>,
    outcome: &'a str,
    detail: serde_json::Value,
}

async fn insert<C: ConnectionTrait>(db: &C, actor: &str, role: &str, entry: Entry<'_>) {
    let row = audit_log::ActiveModel {
        at: Set(crate::clock::now()),
        actor: Set(actor.to_string()),
        role: Set(role.to_string()),
        action: Set(entry.action.to_string()),
        target_kind: Set(entry.target_kind.to_string()),
        target_id: Set(entry.target_id),
        outcome: Set(entry.outcome.to_string()),
        detail: Set(entry.detail),
        ..Default::default()
    };
    if let Err(e) = row.insert(db).await {
        tracing::error!(error = %e, action = entry.action, "could not write the audit log");
    }
}

/// Anonymous refusals recorded per second at most: a flood of bad tokens
/// must not flood the audit log.
const ANONYMOUS_PER_SECOND: u64 = 20;
/// The largest request detail kept of an anonymous refusal (JSON bytes): an
/// anonymous caller's arguments can be as large as the body limit.
const ANONYMOUS_DETAIL_BYTES: usize = 1024;

/// Records a refusal of a caller without a valid token.
pub async fn record_unauthenticated<C: ConnectionTrait>(
    db: &C,
    action: &str,
    target_kind: &str,
    reason: &str,
    detail: serde_json::Value,
) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static WINDOW: AtomicU64 = AtomicU64::new(0);
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let second = crate::clock::now().timestamp() as u64;
    if WINDOW.swap(second, Ordering::Relaxed) != second {
        COUNT.store(0, Ordering::Relaxed);
    }
    if COUNT.fetch_add(1, Ordering::Relaxed) >= ANONYMOUS_PER_SECOND {
        tracing::debug!(action, "unauthenticated refusal not audited (rate limit)");
        return;
    }
    let entry = Entry {
        action,
        target_kind,
        target_id: None,
        outcome: "unauthenticated",
        detail: serde_json::json!({"reason": reason, "request": bounded(detail)}),
    };
    insert(db, "anonymous", "none", entry).await;
}

/// `detail`, or only its size when it is larger than an audit row should be.
fn bounded(detail: serde_json::Value) -> serde_json::Value {
    let bytes = detail.to_string().len();
    if bytes <= ANONYMOUS_DETAIL_BYTES {
        detail
    } else {
        serde_json::json!({"omitted": "too large", "bytes": bytes})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_anonymous_details_are_not_kept() {
        let small = serde_json::json!({"id": "abc"});
        assert_eq!(bounded(small.clone()), small);
        let large = serde_json::json!({"id": "9".repeat(100_000)});
        assert_eq!(
            bounded(large),
            serde_json::json!({"omitted": "too large", "bytes": 100_009})
        );
    }
}
