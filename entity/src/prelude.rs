//! The entities under their usual names: `use entity::prelude::*;`.

pub use crate::audit_log::Entity as AuditLog;
pub use crate::container::Entity as Container;
pub use crate::node::{Entity as Node, NodeState};
pub use crate::persisted_query::{Entity as PersistedQuery, PersistedQueryKind};
pub use crate::snapshot::{Entity as Snapshot, SnapshotStatus};
pub use crate::snapshot_event::Entity as SnapshotEvent;
pub use crate::snapshot_findings::Entity as SnapshotFindings;
pub use crate::webhook_attempt::Entity as WebhookAttempt;
pub use crate::webhook_delivery::{DeliveryStatus, Entity as WebhookDelivery};
pub use crate::webhook_endpoint::Entity as WebhookEndpoint;
