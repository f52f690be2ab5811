//! A fresh PostgreSQL database per test, on the server `DATABASE_URL` names.
//! No server is a failure, never a skip.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use sea_orm_migration::sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection};
use uuid::Uuid;

pub(crate) struct TestDatabase {
    server_url: String,
    name: String,
    url: String,
}

impl TestDatabase {
    /// Creates `dcs_migration_<random>` on the server of `DATABASE_URL`.
    pub(crate) async fn create() -> Result<Self> {
        let server_url = std::env::var("DATABASE_URL").map_err(|_| {
            anyhow!(
                "DATABASE_URL is not set: this test needs PostgreSQL \
                 (`scripts/dev-env.sh start && source .dcs-env/env.sh`); it does not skip"
            )
        })?;
        if !(server_url.starts_with("postgres://") || server_url.starts_with("postgresql://")) {
            bail!(
                "DATABASE_URL must be a postgres:// URL for this test, not {}",
                redact(&server_url)
            );
        }
        let name = format!("dcs_migration_{}", Uuid::new_v4().simple());
        let admin = admin_connection(&server_url).await?;
        admin
            .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
            .await
            .with_context(|| format!("creating database {name} (needs CREATEDB)"))?;
        admin.close().await?;
        let url = with_database(&server_url, &name);
        Ok(Self {
            server_url,
            name,
            url,
        })
    }

    pub(crate) async fn connect(&self) -> Result<DatabaseConnection> {
        connect(&self.url)
            .await
            .with_context(|| format!("connecting to {}", redact(&self.url)))
    }

    /// The URL of this database (with its password: never print it).
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// Drops the database; call after closing every connection to it.
    pub(crate) async fn drop(self) -> Result<()> {
        let admin = admin_connection(&self.server_url).await?;
        admin
            .execute_unprepared(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ))
            .await
            .with_context(|| format!("dropping database {}", self.name))?;
        admin.close().await?;
        Ok(())
    }
}

async fn connect(url: &str) -> Result<DatabaseConnection, sea_orm_migration::sea_orm::DbErr> {
    let mut options = ConnectOptions::new(url);
    options
        .max_connections(2)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(5))
        .sqlx_logging(false);
    Database::connect(options).await
}

/// The database of `DATABASE_URL` itself, or else the server's `postgres`.
async fn admin_connection(server_url: &str) -> Result<DatabaseConnection> {
    let first = match connect(server_url).await {
        Ok(db) => return Ok(db),
        Err(err) => err,
    };
    let maintenance = with_database(server_url, "postgres");
    connect(&maintenance).await.map_err(|second| {
        anyhow!(
            "cannot reach PostgreSQL at {} ({first}) nor its `postgres` database ({second}); \
             start it with `scripts/dev-env.sh start`",
            redact(server_url)
        )
    })
}

/// `url` with its database name replaced.
fn with_database(url: &str, database: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (url, None),
    };
    let authority_start = head.find("://").map_or(0, |i| i + 3);
    let server = match head[authority_start..].find('/') {
        Some(slash) => &head[..authority_start + slash],
        None => head,
    };
    match query {
        Some(query) => format!("{server}/{database}?{query}"),
        None => format!("{server}/{database}"),
    }
}

/// `url` without its password, for messages.
fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    match (rest.find('@'), rest.find(':')) {
        (Some(at), Some(colon)) if colon < at => {
            format!(
                "{}{}:***{}",
                &url[..scheme_end],
                &rest[..colon],
                &rest[at..]
            )
        }
        _ => url.to_owned(),
    }
}

#[test]
fn urls_are_rewritten_and_redacted() {
    assert_eq!(
        with_database("postgres://u:p@h:5432/dcs_test?sslmode=disable", "x"),
        "postgres://u:p@h:5432/x?sslmode=disable"
    );
    assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
    assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
    assert_eq!(redact("postgres://h/db"), "postgres://h/db");
}
