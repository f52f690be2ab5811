//! The database: Postgres from `DATABASE_URL`, or a SQLite file in the
//! data directory when none is given, so the service starts with nothing
//! set up. Migrations run at start-up.

mod one_connection;

use std::path::Path;
use std::time::Duration;

use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbBackend};

pub use self::one_connection::OneConnection;

pub async fn connect(url: Option<&str>, data_dir: &Path) -> anyhow::Result<DatabaseConnection> {
    connect_with(url, data_dir, &PoolSettings::default()).await
}

/// How the process uses its database connections.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Connections kept at most, shared by requests, the dispatcher, the
    /// webhook worker and the change listener.
    pub max_connections: u32,
    /// How long a caller waits for a free (or re-established) connection;
    /// while the database is away, requests fail after this, not later.
    pub acquire_timeout: Duration,
    /// On Postgres, the server stops any statement running longer (set to
    /// the request deadline: no statement outlives the request that
    /// started it, even one blocked on a lock, whose client-side future
    /// was dropped long ago). Migrations run before, without it.
    pub statement_timeout: Option<Duration>,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: None,
        }
    }
}

/// Like `connect`, with these pool settings.
pub async fn connect_with(
    url: Option<&str>,
    data_dir: &Path,
    settings: &PoolSettings,
) -> anyhow::Result<DatabaseConnection> {
    let url = match url {
        Some(url) if !url.is_empty() => url.to_string(),
        _ => {
            let file = private_sqlite_file(data_dir)?;
            format!("sqlite://{}?mode=rwc", file.display())
        }
    };
    let migrating = PoolSettings {
        statement_timeout: None,
        ..settings.clone()
    };
    let db = open(&url, &migrating).await?;
    if db.get_database_backend() == DbBackend::Sqlite {
        // Readers do not block the writer (sqlx already enables foreign
        // keys and a busy timeout on each connection).
        use sea_orm::ConnectionTrait;
        db.execute_unprepared("PRAGMA journal_mode=WAL;").await?;
    }
    migration::run_migrations(&db).await?;
    match settings.statement_timeout {
        Some(_) if db.get_database_backend() == DbBackend::Postgres => {
            let _ = db.close().await;
            open(&url, settings).await
        }
        _ => Ok(db),
    }
}

async fn open(url: &str, settings: &PoolSettings) -> anyhow::Result<DatabaseConnection> {
    let mut options = ConnectOptions::new(url.to_string());
    options
        .max_connections(settings.max_connections.max(1))
        .connect_timeout(Duration::from_secs(10))
        .acquire_timeout(settings.acquire_timeout)
        // A connection the server dropped (restart, failover) is noticed
        // before it is handed out, not by the request that gets it: one
        // idle for a second or more is pinged first (a failed ping closes
        // it and the pool takes another). One back in the pool for less
        // has just passed sqlx's ping on release; pinging it again would
        // cost every request a round trip under load.
        .test_before_acquire_if_idle_for(Duration::from_secs(1))
        .sqlx_logging(false);
    let statement_timeout = settings
        .statement_timeout
        .map(|timeout| format!("{}ms", timeout.as_millis().max(1)));
    options.map_sqlx_postgres_opts(move |pg| {
        // This process wakes its own webhook worker when it writes a
        // delivery; a notification from the outbox trigger would cost a
        // serialized commit (see the `webhook_outbox_notify` migration).
        let pg = pg
            .application_name("dcs-api")
            .options([(migration::OUTBOX_NOTIFY_SETTING, "off")]);
        match &statement_timeout {
            Some(value) => pg.options([("statement_timeout", value.as_str())]),
            None => pg,
        }
    });
    Ok(Database::connect(options).await?)
}

/// The data directory (0700) and the SQLite file in it (0600): the file
/// holds every snapshot and webhook secret; other local users must not
/// read it. Its `-wal` and `-shm` files take the database file's mode.
fn private_sqlite_file(data_dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    std::fs::create_dir_all(data_dir)?;
    std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))?;
    let file = data_dir.join("dcs.db");
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&file)?;
    // An older file may have been created with the umask's mode.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
    Ok(file)
}

/// Describes the database for logs without credentials: no user, no
/// password (which may itself hold `@`), no query parameters (which may
/// hold `password=`).
pub fn describe(url: Option<&str>) -> String {
    let Some(url) = url.filter(|u| !u.is_empty()) else {
        return "SQLite (embedded default)".to_string();
    };
    let (scheme, rest) = url.split_once("://").unwrap_or(("db", url));
    let (location, query) = match rest.split_once('?') {
        Some((location, _)) => (location, "?…"),
        None => (rest, ""),
    };
    // The host follows the last `@`: a password may contain `@`.
    match location.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://…@{host}{query}"),
        None => format!("{scheme}://{location}{query}"),
    }
}

/// Runs one query whose server-side work ends with its caller: on
/// Postgres, if the future is dropped before the answer arrives (the
/// request's deadline passed, its client went away, the server is
/// stopping), the statement is cancelled with `pg_cancel_backend`. Without
/// this, sqlx would let it run to the end: a dropped connection is only
/// returned to the pool after it has drained the answer.
///
/// The statement is found in `pg_stat_activity` by a unique comment at its
/// start, so the normal path costs no extra statement. (SQLite runs the
/// statement in its worker thread to the end; the local default does not
/// need more.)
pub async fn query_cancellable(
    db: &DatabaseConnection,
    sql: &str,
    values: Vec<sea_orm::Value>,
) -> Result<Vec<sea_orm::QueryResult>, sea_orm::DbErr> {
    use sea_orm::{ConnectionTrait, Statement};
    let backend = db.get_database_backend();
    if backend != DbBackend::Postgres {
        return db
            .query_all_raw(Statement::from_sql_and_values(backend, sql, values))
            .await;
    }
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let tagged = format!("/* dcs-query:{tag} */ {sql}");
    let mut guard = CancelOnDrop {
        db: Some(db.clone()),
        tag,
    };
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(backend, tagged, values))
        .await;
    guard.db = None;
    rows
}

struct CancelOnDrop {
    /// `None` once the statement has answered.
    db: Option<DatabaseConnection>,
    tag: String,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let Some(db) = self.db.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let pattern = format!("/* dcs-query:{} */%", self.tag);
        runtime.spawn(async move {
            use sea_orm::{ConnectionTrait, Statement};
            let cancel = Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT pg_cancel_backend(pid) FROM pg_stat_activity \
                 WHERE query LIKE $1 AND pid <> pg_backend_pid()",
                [pattern.into()],
            );
            match db.execute_raw(cancel).await {
                Ok(_) => tracing::debug!("cancelled an abandoned statement"),
                Err(e) => tracing::warn!(error = %e, "cannot cancel an abandoned statement"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_hold_no_credentials() {
        for (url, expected) in [
            (
                "postgres://dcs:s3cret@db:5432/dcs",
                "postgres://…@db:5432/dcs",
            ),
            ("postgres://dcs:p@ss@word@db/dcs", "postgres://…@db/dcs"),
            (
                "postgres://db/dcs?user=dcs&password=s3cret",
                "postgres://db/dcs?…",
            ),
            ("postgres://localhost/dcs", "postgres://localhost/dcs"),
        ] {
            let described = describe(Some(url));
            assert_eq!(described, expected);
            assert!(!described.contains("s3cret") && !described.contains("word"));
        }
        assert_eq!(describe(None), "SQLite (embedded default)");
    }

    #[tokio::test]
    async fn the_sqlite_default_is_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
        connect(None, &data).await.unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&data.join("dcs.db")), 0o600);
        for extra in ["dcs.db-wal", "dcs.db-shm"] {
            let path = data.join(extra);
            if path.exists() {
                assert_eq!(mode(&path) & 0o077, 0, "{extra} is readable by others");
            }
        }
    }
}
