//! `webhook_endpoints`: where event platforms receive webhooks.
//!
//! Secrets are kept as given (`whsec_` + base64): signing needs them. During
//! a rotation the previous secret keeps signing until it expires.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_endpoints")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    #[sea_orm(column_type = "Text")]
    pub url: String,
    #[sea_orm(column_type = "Text", nullable)]
    pub description: Option<String>,
    /// Event types (`snapshot.pushed`, `snapshot.failed`), a JSON array.
    pub event_types: Json,
    pub enabled: bool,
    #[sea_orm(column_type = "Text")]
    pub secret: SigningSecret,
    #[sea_orm(column_type = "Text", nullable)]
    pub previous_secret: Option<SigningSecret>,
    pub previous_secret_expires_at: Option<DateTimeUtc>,
    #[sea_orm(column_type = "Text")]
    pub created_by: String,
    /// Why the endpoint was disabled automatically (410, failing for days).
    #[sea_orm(column_type = "Text", nullable)]
    pub disabled_reason: Option<String>,
    /// Since when every attempt has failed; `None` after a success.
    pub failing_since: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

/// A signing secret (`whsec_...`). Its `Debug` never shows it, so a model
/// or an active model logged by mistake leaks nothing.
#[derive(Clone, PartialEq, Eq, DeriveValueType)]
pub struct SigningSecret(pub String);

impl SigningSecret {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(<redacted>)")
    }
}

impl From<String> for SigningSecret {
    fn from(secret: String) -> Self {
        Self(secret)
    }
}

impl From<&str> for SigningSecret {
    fn from(secret: &str) -> Self {
        Self(secret.to_string())
    }
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::webhook_delivery::Entity")]
    WebhookDelivery,
}

impl Related<super::webhook_delivery::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::WebhookDelivery.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_a_secret() {
        let now = ChronoUtc::now();
        let model = Model {
            id: Uuid::nil(),
            url: "https://events.example/h".into(),
            description: None,
            event_types: Json::Array(Vec::new()),
            enabled: true,
            secret: "whsec_current".into(),
            previous_secret: Some("whsec_previous".into()),
            previous_secret_expires_at: None,
            created_by: "root".into(),
            disabled_reason: None,
            failing_since: None,
            created_at: now,
            updated_at: now,
        };
        let active: ActiveModel = model.clone().into();
        for text in [format!("{model:?}"), format!("{active:?}")] {
            assert!(!text.contains("whsec_"), "{text}");
            assert!(text.contains("<redacted>"), "{text}");
        }
    }
}
