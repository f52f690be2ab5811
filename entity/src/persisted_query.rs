//! `persisted_queries`: GraphQL documents known by the SHA-256 of their
//! text, shared by every API replica. Automatic entries (stored by the
//! automatic persisted query protocol) are a bounded cache, evicted least
//! recently used first; registered entries (by an admin or a manifest) are
//! an allow-list and are never evicted.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "persisted_queries")]
pub struct Model {
    /// The lower-case hex SHA-256 of `query`'s UTF-8 bytes.
    #[sea_orm(primary_key, auto_increment = false, column_type = "Text")]
    pub hash: String,
    #[sea_orm(column_type = "Text")]
    pub query: String,
    pub kind: PersistedQueryKind,
    /// The operation's name as registered; `None` for automatic entries.
    #[sea_orm(column_type = "Text", nullable)]
    pub name: Option<String>,
    /// Who registered it: an admin's JWT `sub`, or `manifest`.
    #[sea_orm(column_type = "Text", nullable)]
    pub registered_by: Option<String>,
    pub created_at: DateTimeUtc,
    /// Refreshed on use, at most about once a minute (see the API's
    /// `persisted` module): the eviction order of automatic entries.
    pub last_used_at: DateTimeUtc,
}

/// How an entry came to be stored. Stored as upper-case text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "Text")]
pub enum PersistedQueryKind {
    /// Sent by a client with its hash; evictable.
    #[sea_orm(string_value = "AUTOMATIC")]
    Automatic,
    /// Registered by an admin or a manifest; kept.
    #[sea_orm(string_value = "REGISTERED")]
    Registered,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
