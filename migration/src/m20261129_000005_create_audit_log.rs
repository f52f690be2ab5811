use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

const AT_INDEX: &str = "idx_audit_log_at";
const ACTOR_INDEX: &str = "idx_audit_log_actor";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(AuditLog::Table)
                    .col(big_pk_auto(AuditLog::Id))
                    .col(timestamp_with_time_zone(AuditLog::At))
                    .col(text(AuditLog::Actor))
                    .col(text(AuditLog::Role))
                    .col(text(AuditLog::Action))
                    .col(text(AuditLog::TargetKind))
                    .col(text_null(AuditLog::TargetId))
                    .col(text(AuditLog::Outcome))
                    .col(json(AuditLog::Detail))
                    .to_owned(),
            )
            .await?;
        for (name, column) in [(AT_INDEX, AuditLog::At), (ACTOR_INDEX, AuditLog::Actor)] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(AuditLog::Table)
                        .col(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for name in [AT_INDEX, ACTOR_INDEX] {
            manager
                .drop_index(Index::drop().name(name).table(AuditLog::Table).to_owned())
                .await?;
        }
        manager
            .drop_table(Table::drop().table(AuditLog::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum AuditLog {
    Table,
    Id,
    At,
    Actor,
    Role,
    Action,
    TargetKind,
    TargetId,
    Outcome,
    Detail,
}
