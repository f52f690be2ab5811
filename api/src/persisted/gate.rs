//! `PersistedQueries`, and the gate every GraphQL request passes before it
//! is parsed: it resolves a hash to its stored text, stores what the
//! automatic protocol sends, and in registered-only mode refuses what is
//! not registered.

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use sea_orm::{DatabaseConnection, DbErr};
use serde_json::Value;

use super::extension;
use super::hash::QueryHash;
use super::refusal::Refusal;
use super::settings::{Mode, Settings};
use super::store::{Registration, Store};
use crate::errors::Code;
use crate::metrics::OutcomeLabel;

/// Who sends a request, as far as the gate cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requester {
    /// Exempt from registered-only mode: admins register the queries.
    Admin,
    /// Any other authenticated caller.
    User,
    /// No token, or a refused one: may run queries (their resolvers refuse
    /// what needs a caller) but never stores one.
    Anonymous,
}

/// What the gate lets through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admitted {
    /// Run the query as the client sent it.
    AsSent,
    /// Run this stored text (the client sent its hash alone).
    Stored(Arc<str>),
}

/// The persisted queries of this server: its settings and the shared store.
#[derive(Debug)]
pub struct PersistedQueries {
    settings: Settings,
    store: Store,
    /// Requests through the gate by outcome (`/metrics`).
    outcomes: Family<OutcomeLabel, Counter>,
}

impl PersistedQueries {
    pub fn new(
        db: DatabaseConnection,
        settings: Settings,
        outcomes: Family<OutcomeLabel, Counter>,
    ) -> Self {
        Self {
            store: Store::new(db, settings),
            settings,
            outcomes,
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Registers queries under their names (`registered_by`: an admin's
    /// `sub`, or `manifest`); returns the rows as stored.
    pub async fn register(
        &self,
        registrations: &[Registration],
        registered_by: &str,
    ) -> Result<Vec<entity::persisted_query::Model>, DbErr> {
        self.store.register(registrations, registered_by).await
    }

    fn count(&self, outcome: &'static str) {
        self.outcomes
            .get_or_create(&OutcomeLabel {
                outcome: outcome.into(),
            })
            .inc();
    }

    /// The text stored under `hash`, if any (registered ones only in
    /// registered-only mode); for tests and tools.
    pub async fn find(&self, hash: QueryHash) -> Result<Option<Arc<str>>, DbErr> {
        self.store
            .find(hash, self.settings.mode == Mode::RegisteredOnly)
            .await
    }
}

impl PersistedQueries {
    /// Lets a request through, with the text it is to run, or refuses it.
    /// `query` is the request's `query` ("" when absent), `extension` its
    /// `extensions.persistedQuery`.
    pub async fn admit(
        &self,
        query: &str,
        extension: Option<&Value>,
        requester: Requester,
    ) -> Result<Admitted, Refusal> {
        let outcome = self.decide(query, extension, requester).await;
        self.count(match &outcome {
            Ok(Admitted::AsSent) if extension.is_none() => "plain",
            Ok(Admitted::AsSent) => "sent_in_full",
            Ok(Admitted::Stored(_)) => "hit",
            Err(refusal) => match refusal.code {
                Code::PersistedQueryNotFound => "miss",
                Code::PersistedQueryNotAllowed => "not_allowed",
                Code::Unavailable => "unavailable",
                _ => "invalid",
            },
        });
        outcome
    }

    async fn decide(
        &self,
        query: &str,
        extension: Option<&Value>,
        requester: Requester,
    ) -> Result<Admitted, Refusal> {
        let claimed = extension.map(extension::read).transpose()?;
        let registered_only = self.settings.mode == Mode::RegisteredOnly;
        if registered_only && requester != Requester::Admin {
            return self.admit_registered(query, claimed).await;
        }
        let Some(hash) = claimed else {
            return Ok(Admitted::AsSent);
        };
        if query.is_empty() {
            return match self.store.find(hash, registered_only).await {
                Ok(Some(text)) => Ok(Admitted::Stored(text)),
                Ok(None) => Err(Refusal::not_found()),
                Err(e) => Err(store_failed(&e)),
            };
        }
        check_hash(query, hash)?;
        if !registered_only && self.may_store(query, requester) {
            // The query runs whether or not it could be stored.
            if let Err(e) = self.store.remember(hash, query).await {
                tracing::warn!(error = %e, %hash, "could not store a persisted query");
            } else {
                self.count("stored");
            }
        }
        Ok(Admitted::AsSent)
    }

    /// Registered-only mode, for everyone but admins.
    async fn admit_registered(
        &self,
        query: &str,
        claimed: Option<QueryHash>,
    ) -> Result<Admitted, Refusal> {
        // Nothing longer can have been registered: no need to hash it.
        if query.len() > self.settings.max_query_bytes {
            return Err(Refusal::not_allowed());
        }
        let hash = match claimed {
            Some(hash) if query.is_empty() => hash,
            Some(hash) => {
                check_hash(query, hash)?;
                hash
            }
            None => QueryHash::of(query),
        };
        match self.store.find(hash, true).await {
            Ok(Some(text)) if query.is_empty() => Ok(Admitted::Stored(text)),
            Ok(Some(_)) => Ok(Admitted::AsSent),
            Ok(None) => Err(Refusal::not_allowed()),
            Err(e) => Err(store_failed(&e)),
        }
    }

    fn may_store(&self, query: &str, requester: Requester) -> bool {
        requester != Requester::Anonymous
            && self.settings.max_automatic_entries > 0
            && query.len() <= self.settings.max_query_bytes
    }
}

fn check_hash(query: &str, hash: QueryHash) -> Result<(), Refusal> {
    if QueryHash::of(query) == hash {
        Ok(())
    } else {
        Err(Refusal::invalid(
            "extensions.persistedQuery.sha256Hash is not the SHA-256 of the query",
        ))
    }
}

fn store_failed(error: &sea_orm::DbErr) -> Refusal {
    tracing::warn!(%error, "persisted query look-up failed");
    Refusal::unavailable()
}
