//! The scan columns of `snapshots`, read apart from the rest of the row.
//!
//! A scan report and a request's acknowledgements can each name a thousand
//! paths. `snapshot::Model` leaves these two columns out, so that lists,
//! lineage walks and status changes never carry them; they are read and
//! written here, one snapshot (or one page's worth) at a time, only when a
//! report is asked for or a job is sent. The counts that lists and
//! webhooks show (`finding_count`, `secret_finding_count`) are on
//! `snapshot::Model`.
//!
//! This entity maps a part of the same table: it has no relations, and a
//! row exists exactly when its snapshot does.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "snapshots")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The agent's scan report (protocol `ScanReport`: paths, rules,
    /// severities, lines; never a matched value); null until an agent
    /// reports one.
    pub findings: Option<Json>,
    /// The `{rule, path}` pairs the request accepts (protocol
    /// `Acknowledgement`s), sent with the job; null when there are none.
    pub acknowledged_findings: Option<Json>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
