//! `webhook_deliveries`: the transactional outbox. A row is written in the
//! same transaction as the status change it announces, and delivered at
//! least once; every retry carries the same `message_id` (`webhook-id`).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_deliveries")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub endpoint_id: Uuid,
    /// The `webhook-id` header: `msg_<id>`.
    #[sea_orm(column_type = "Text")]
    pub message_id: String,
    #[sea_orm(column_type = "Text")]
    pub event_type: String,
    /// The exact body sent, so retries sign and send the same bytes.
    #[sea_orm(column_type = "Text")]
    pub payload: String,
    pub status: DeliveryStatus,
    pub attempts: i32,
    pub next_attempt_at: Option<DateTimeUtc>,
    pub first_attempt_at: Option<DateTimeUtc>,
    pub last_attempt_at: Option<DateTimeUtc>,
    pub last_status_code: Option<i32>,
    pub completed_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    /// The W3C `traceparent` of the work that enqueued it (for a
    /// snapshot's event, a span of the snapshot's trace), when traces are
    /// exported: each attempt's span continues that trace.
    #[sea_orm(column_type = "Text", nullable)]
    pub trace_parent: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "Text")]
pub enum DeliveryStatus {
    /// Waiting for its first or next attempt.
    #[sea_orm(string_value = "PENDING")]
    Pending,
    #[sea_orm(string_value = "SUCCEEDED")]
    Succeeded,
    /// Out of attempts, or its endpoint was disabled.
    #[sea_orm(string_value = "FAILED")]
    Failed,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::webhook_endpoint::Entity",
        from = "Column::EndpointId",
        to = "super::webhook_endpoint::Column::Id",
        on_update = "NoAction",
        on_delete = "Cascade"
    )]
    WebhookEndpoint,
    #[sea_orm(has_many = "super::webhook_attempt::Entity")]
    WebhookAttempt,
}

impl Related<super::webhook_endpoint::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::WebhookEndpoint.def()
    }
}

impl Related<super::webhook_attempt::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::WebhookAttempt.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
