//! Several reads of one request on one pooled connection.
//!
//! Each statement SeaORM runs takes a connection from the pool and gives it
//! back, and sqlx pings every connection on its way back (a task and a
//! round trip to Postgres, which the server has to answer too). A request
//! that reads several times in a row, a page of snapshots and then its
//! parents, pays that once per statement; on one connection it pays once.
//!
//! Holding a connection while waiting for another could exhaust the pool
//! (every holder waiting for a second one): whoever holds a
//! `OneConnection` must drop it before any read that does not go through
//! it. On SQLite (the local default, and unit tests) reads go to the pool
//! as usual.

use std::sync::Arc;

use sea_orm::sqlx::pool::PoolConnection;
use sea_orm::sqlx::{self, Postgres};
use sea_orm::{
    ConnAcquireErr, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, FromQueryResult,
    QueryResult, QueryTrait, RuntimeErr, Statement,
};
use sea_query_sqlx::SqlxValues;

pub struct OneConnection<'a> {
    db: &'a DatabaseConnection,
    /// Taken on the first read, on Postgres; back to the pool on drop.
    postgres: Option<PoolConnection<Postgres>>,
}

impl std::fmt::Debug for OneConnection<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OneConnection")
            .field("holds_a_connection", &self.postgres.is_some())
            .finish_non_exhaustive()
    }
}

impl<'a> OneConnection<'a> {
    /// Takes no connection yet: a request that reads nothing takes none.
    pub fn new(db: &'a DatabaseConnection) -> Self {
        Self { db, postgres: None }
    }

    pub fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    /// The rows `query` selects, as `M`.
    pub async fn all<M: FromQueryResult>(
        &mut self,
        query: &impl QueryTrait,
    ) -> Result<Vec<M>, DbErr> {
        let statement = query.build(self.backend());
        self.query_all(statement)
            .await?
            .iter()
            .map(|row| M::from_query_result(row, ""))
            .collect()
    }

    /// The rows of `statement`.
    pub async fn query_all(&mut self, statement: Statement) -> Result<Vec<QueryResult>, DbErr> {
        if self.backend() != DbBackend::Postgres {
            return self.db.query_all_raw(statement).await;
        }
        let connection = match &mut self.postgres {
            Some(connection) => connection,
            None => {
                let pool = self.db.get_postgres_connection_pool();
                let connection = pool.acquire().await.map_err(acquire_error)?;
                self.postgres.insert(connection)
            }
        };
        let values = SqlxValues(statement.values.unwrap_or(sea_orm::Values(Vec::new())));
        let rows = sqlx::query_with(sqlx::AssertSqlSafe(statement.sql), values)
            .fetch_all(&mut **connection)
            .await
            .map_err(|e| DbErr::Query(RuntimeErr::SqlxError(Arc::new(e))))?;
        Ok(rows.into_iter().map(QueryResult::from).collect())
    }
}

/// As SeaORM reports a connection the pool could not give.
fn acquire_error(error: sqlx::Error) -> DbErr {
    match error {
        sqlx::Error::PoolTimedOut => DbErr::ConnectionAcquire(ConnAcquireErr::Timeout),
        sqlx::Error::PoolClosed => DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed),
        other => DbErr::Conn(RuntimeErr::SqlxError(Arc::new(other))),
    }
}
