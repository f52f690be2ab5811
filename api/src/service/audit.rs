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
    let row = audit_log::ActiveModel {
        at: Set(crate::clock::now()),
        actor: Set(who.sub.clone()),
        role: Set(format!("{:?}", who.role).to_lowercase()),
        action: Set(action.to_string()),
        target_kind: Set(target_kind.to_string()),
        target_id: Set(target_id),
        outcome: Set(outcome.to_string()),
        detail: Set(detail),
        ..Default::default()
    };
    if let Err(e) = row.insert(db).await {
        tracing::error!(error = %e, action, "could not write the audit log");
    }
}

/// Anonymous refusals recorded per second at most: a flood of bad tokens
/// must not flood the audit log.
const ANONYMOUS_PER_SECOND: u64 = 20;

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
    let row = audit_log::ActiveModel {
        at: Set(crate::clock::now()),
        actor: Set("anonymous".into()),
        role: Set("none".into()),
        action: Set(action.to_string()),
        target_kind: Set(target_kind.to_string()),
        target_id: Set(None),
        outcome: Set("unauthenticated".into()),
        detail: Set(serde_json::json!({"reason": reason, "request": detail})),
        ..Default::default()
    };
    if let Err(e) = row.insert(db).await {
        tracing::error!(error = %e, action, "could not write the audit log");
    }
}
