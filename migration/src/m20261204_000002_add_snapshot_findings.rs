//! What the agent's secret scan found, on the snapshot row:
//!
//! - `findings`: the scan report (paths, rules, severities, lines; never a
//!   matched value), as JSON; null until an agent reports one.
//! - `acknowledged_findings`: the `{rule, path}` pairs the request accepts,
//!   as JSON, sent to the agent with the job; null when there are none.
//! - `finding_count`, `secret_finding_count`: how many findings the report
//!   lists, and how many of them are secrets, for lists and webhooks.
//!
//! The two JSON columns can hold a thousand paths each: the entity
//! `snapshot_findings` reads them apart from the rest of the row, so that
//! lists and lineage walks never carry them. No statistics on any of the
//! four: no query selects by them, and an ANALYZE would otherwise read the
//! reports (see the statistics migrations).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

const COLUMNS: [&str; 4] = [
    "findings",
    "acknowledged_findings",
    "finding_count",
    "secret_finding_count",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite adds one column per ALTER TABLE.
        for column in [
            json_null(Snapshots::Findings),
            json_null(Snapshots::AcknowledgedFindings),
            integer_null(Snapshots::FindingCount),
            integer_null(Snapshots::SecretFindingCount),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Snapshots::Table)
                        .add_column(column)
                        .to_owned(),
                )
                .await?;
        }
        crate::set_snapshot_statistics(manager, &COLUMNS, 0).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [
            Snapshots::SecretFindingCount,
            Snapshots::FindingCount,
            Snapshots::AcknowledgedFindings,
            Snapshots::Findings,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Snapshots::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Snapshots {
    Table,
    Findings,
    AcknowledgedFindings,
    FindingCount,
    SecretFindingCount,
}
