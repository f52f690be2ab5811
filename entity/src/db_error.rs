//! Recognising constraint violations the same way on PostgreSQL and SQLite.

use sea_orm::{DbErr, SqlErr};

/// True when a statement failed on a unique constraint or unique index
/// (PostgreSQL `23505`; SQLite `SQLITE_CONSTRAINT_UNIQUE` or
/// `SQLITE_CONSTRAINT_PRIMARYKEY`). Inserting a second in-flight snapshot of
/// one container fails this way.
pub fn is_unique_violation(err: &DbErr) -> bool {
    matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}

/// True when a statement failed on a foreign key (PostgreSQL `23503`;
/// SQLite `SQLITE_CONSTRAINT_FOREIGNKEY`), e.g. a container of an unknown
/// node.
pub fn is_foreign_key_violation(err: &DbErr) -> bool {
    matches!(
        err.sql_err(),
        Some(SqlErr::ForeignKeyConstraintViolation(_))
    )
}
