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
