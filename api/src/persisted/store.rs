//! The shared table (`persisted_queries`) behind the in-process LRU.
//!
//! Automatic entries are a cache bounded by `max_automatic_entries`. The
//! least recently used beyond the cap are deleted after an insert: one
//! look-up of the first row past the cap in the eviction index, and a
//! delete only when there is one. That look-up walks `cap` index entries
//! (1.5 ms for 10,000 on Postgres here, 5-8 ms when the planner sorts a
//! narrow table instead), so it runs after every `cap / 100`-th insert of a
//! replica (at most every 100th, at least every one): the table holds at
//! most the cap plus 1 % per replica (plus inserts racing on other
//! replicas), and a flood of new queries costs the database an insert each.
//! Uses are recorded in `last_used_at` at most once per touch interval per
//! replica, off the request's path: a hit costs no write.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use entity::persisted_query::{self, Column};
use entity::{PersistedQueryKind, prelude::PersistedQuery};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ColumnTrait as _, Condition, DatabaseConnection, DbErr, EntityTrait as _, QueryFilter as _,
    QueryOrder as _, QuerySelect as _, Set, TransactionTrait as _,
};

use super::hash::QueryHash;
use super::local_cache::LocalCache;
use super::settings::Settings;

/// A query to register: by an admin or from a manifest.
#[derive(Debug, Clone)]
pub struct Registration {
    pub hash: QueryHash,
    pub name: String,
    pub query: String,
}

#[derive(Debug)]
pub(super) struct Store {
    db: DatabaseConnection,
    local: LocalCache,
    settings: Settings,
    /// Rows this replica added, for `evict_every`.
    inserted: AtomicU64,
}

impl Store {
    pub(super) fn new(db: DatabaseConnection, settings: Settings) -> Self {
        Self {
            db,
            local: LocalCache::new(settings.touch_interval),
            settings,
            inserted: AtomicU64::new(0),
        }
    }

    /// Evict after every this many inserts (see the module's header).
    fn evict_every(&self) -> u64 {
        (self.settings.max_automatic_entries / 100).clamp(1, 100)
    }

    /// The text of `hash`: any stored entry, or a registered one only.
    pub(super) async fn find(
        &self,
        hash: QueryHash,
        registered_only: bool,
    ) -> Result<Option<Arc<str>>, DbErr> {
        if let Some(cached) = self.local.get(&hash)
            && (cached.registered || !registered_only)
        {
            if cached.touch_due {
                self.touch_later(hash);
            }
            return Ok(Some(cached.query));
        }
        // Not here, or here as automatic while only registered ones count
        // (an admin may have registered it since, on any replica).
        let Some(row) = PersistedQuery::find_by_id(hash.to_hex())
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        let registered = row.kind == PersistedQueryKind::Registered;
        if registered_only && !registered {
            return Ok(None);
        }
        if self.touch_is_due(row.last_used_at) {
            self.touch_later(hash);
        }
        let query: Arc<str> = row.query.into();
        self.local.insert(hash, query.clone(), registered);
        Ok(Some(query))
    }

    /// Stores a query sent with its (checked) hash as an automatic entry,
    /// unless it is known already; evicts beyond the cap.
    pub(super) async fn remember(&self, hash: QueryHash, query: &str) -> Result<(), DbErr> {
        if self.local.contains(&hash) {
            return Ok(());
        }
        let now = crate::clock::now();
        let row = persisted_query::ActiveModel {
            hash: Set(hash.to_hex()),
            query: Set(query.to_string()),
            kind: Set(PersistedQueryKind::Automatic),
            name: Set(None),
            registered_by: Set(None),
            created_at: Set(now),
            last_used_at: Set(now),
        };
        let inserted = PersistedQuery::insert(row)
            .on_conflict(OnConflict::column(Column::Hash).do_nothing().to_owned())
            .exec_without_returning(&self.db)
            .await?;
        if inserted > 0 {
            let count = self.inserted.fetch_add(1, Ordering::Relaxed) + 1;
            if count.is_multiple_of(self.evict_every()) {
                self.evict_beyond_cap().await?;
            }
        }
        self.local.insert(hash, query.into(), false);
        Ok(())
    }

    /// Registers queries (an automatic entry of the same hash becomes
    /// registered; a registered one takes the new name), in one
    /// transaction; returns the rows as stored.
    pub(super) async fn register(
        &self,
        registrations: &[Registration],
        registered_by: &str,
    ) -> Result<Vec<persisted_query::Model>, DbErr> {
        let now = crate::clock::now();
        let txn = self.db.begin().await?;
        let mut rows = Vec::with_capacity(registrations.len());
        for registration in registrations {
            let row = persisted_query::ActiveModel {
                hash: Set(registration.hash.to_hex()),
                query: Set(registration.query.clone()),
                kind: Set(PersistedQueryKind::Registered),
                name: Set(Some(registration.name.clone())),
                registered_by: Set(Some(registered_by.to_string())),
                created_at: Set(now),
                last_used_at: Set(now),
            };
            PersistedQuery::insert(row)
                .on_conflict(
                    OnConflict::column(Column::Hash)
                        .update_columns([Column::Kind, Column::Name, Column::RegisteredBy])
                        .to_owned(),
                )
                .exec_without_returning(&txn)
                .await?;
            let stored = PersistedQuery::find_by_id(registration.hash.to_hex())
                .one(&txn)
                .await?
                .ok_or_else(|| DbErr::RecordNotFound("the registered query".into()))?;
            rows.push(stored);
        }
        txn.commit().await?;
        for registration in registrations {
            self.local
                .insert(registration.hash, registration.query.as_str().into(), true);
        }
        Ok(rows)
    }

    /// Deletes the automatic entries beyond the cap, least recently used
    /// first. The cut-off is the first row past the cap in the eviction
    /// index's order (`last_used_at`, then `hash`, newest first).
    async fn evict_beyond_cap(&self) -> Result<(), DbErr> {
        let cutoff = PersistedQuery::find()
            .select_only()
            .column(Column::LastUsedAt)
            .column(Column::Hash)
            .filter(Column::Kind.eq(PersistedQueryKind::Automatic))
            .order_by_desc(Column::LastUsedAt)
            .order_by_desc(Column::Hash)
            .offset(self.settings.max_automatic_entries)
            .limit(1)
            .into_tuple::<(DateTime<Utc>, String)>()
            .one(&self.db)
            .await?;
        let Some((used, hash)) = cutoff else {
            return Ok(());
        };
        let evicted = PersistedQuery::delete_many()
            .filter(Column::Kind.eq(PersistedQueryKind::Automatic))
            .filter(
                Condition::any().add(Column::LastUsedAt.lt(used)).add(
                    Condition::all()
                        .add(Column::LastUsedAt.eq(used))
                        .add(Column::Hash.lte(hash)),
                ),
            )
            .exec(&self.db)
            .await?;
        tracing::debug!(
            evicted = evicted.rows_affected,
            "persisted queries evicted beyond the cap"
        );
        Ok(())
    }

    fn touch_is_due(&self, last_used_at: DateTime<Utc>) -> bool {
        let age = crate::clock::now() - last_used_at;
        age.to_std()
            .is_ok_and(|age| age >= self.settings.touch_interval)
    }

    /// Records a use of `hash` in the table, in the background: the
    /// request does not wait for a write, and a failure costs only
    /// eviction precision.
    fn touch_later(&self, hash: QueryHash) {
        let db = self.db.clone();
        let interval = chrono::Duration::from_std(self.settings.touch_interval)
            .unwrap_or(chrono::Duration::MAX);
        tokio::spawn(async move {
            let now = crate::clock::now();
            // Only if no replica recorded a use within the interval.
            let stale_before = now.checked_sub_signed(interval).unwrap_or(now);
            let touched = PersistedQuery::update_many()
                .col_expr(Column::LastUsedAt, Expr::value(now))
                .filter(Column::Hash.eq(hash.to_hex()))
                .filter(Column::LastUsedAt.lte(stale_before))
                .exec(&db)
                .await;
            if let Err(e) = touched {
                tracing::warn!(error = %e, %hash, "could not record a persisted query's use");
            }
        });
    }
}
