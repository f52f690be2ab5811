//! The database: Postgres from `DATABASE_URL`, or a SQLite file in the
//! data directory when none is given, so the service starts with nothing
//! set up. Migrations run at start-up.

use std::path::Path;
use std::time::Duration;

use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbBackend};

pub async fn connect(url: Option<&str>, data_dir: &Path) -> anyhow::Result<DatabaseConnection> {
    let url = match url {
        Some(url) if !url.is_empty() => url.to_string(),
        _ => {
            std::fs::create_dir_all(data_dir)?;
            format!("sqlite://{}?mode=rwc", data_dir.join("dcs.db").display())
        }
    };
    let mut options = ConnectOptions::new(url);
    options
        .connect_timeout(Duration::from_secs(10))
        .acquire_timeout(Duration::from_secs(10))
        .sqlx_logging(false);
    let db = Database::connect(options).await?;
    if db.get_database_backend() == DbBackend::Sqlite {
        // Readers do not block the writer (sqlx already enables foreign
        // keys and a busy timeout on each connection).
        use sea_orm::ConnectionTrait;
        db.execute_unprepared("PRAGMA journal_mode=WAL;").await?;
    }
    migration::run_migrations(&db).await?;
    Ok(db)
}

/// Describes the database for logs without credentials.
pub fn describe(url: Option<&str>) -> String {
    match url {
        Some(url) if !url.is_empty() => match url.split_once('@') {
            Some((scheme_and_user, rest)) => {
                let scheme = scheme_and_user.split("://").next().unwrap_or("db");
                format!("{scheme}://…@{rest}")
            }
            None => url.to_string(),
        },
        _ => "SQLite (embedded default)".to_string(),
    }
}
