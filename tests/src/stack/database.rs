//! A fresh Postgres database per test, dropped at its end.

use std::fmt;
use std::process::Command;

use crate::unique;

/// A fresh Postgres database, dropped at the end of the test.
pub struct Database {
    pub url: String,
    name: String,
    server_url: String,
}

impl Database {
    pub fn fresh() -> Self {
        let server_url = std::env::var("DATABASE_URL").unwrap_or_else(|_| {
            panic!(
                "DATABASE_URL is not set: the tests need PostgreSQL; run \
                 `scripts/dev-env.sh start && source .dcs-env/env.sh`"
            )
        });
        let name = unique("dcs_e2e").replace('-', "_");
        psql(&server_url, &[&format!("CREATE DATABASE {name}")]);
        let (base, _) = server_url
            .rsplit_once('/')
            .expect("DATABASE_URL ends with /<database>");
        Self {
            url: format!("{base}/{name}"),
            name,
            server_url,
        }
    }

    /// The database's name (for `ALTER DATABASE`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs SQL in this database; returns the output rows (unaligned),
    /// and only them: `INSERT ... RETURNING` gives its rows without the
    /// command's `INSERT 0 1` line.
    pub fn query(&self, sql: &str) -> String {
        psql(&self.url, &[sql])
    }

    /// Runs each statement in turn, each in its own transaction, on one
    /// connection (for steps that must not open another, or must see the
    /// previous one committed); returns all output rows.
    pub fn session(&self, statements: &[&str]) -> String {
        psql(&self.url, statements)
    }
}

/// By name only: both URLs carry the password of `DATABASE_URL`.
impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Database")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .arg(&self.server_url)
            .args([
                "-c",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .output();
    }
}

fn psql(url: &str, statements: &[&str]) -> String {
    let mut command = Command::new("psql");
    command.arg(url).args(["-v", "ON_ERROR_STOP=1", "-qAt"]);
    for sql in statements {
        command.args(["-c", sql]);
    }
    let output = command.output().expect("run psql (PostgreSQL client)");
    assert!(
        output.status.success(),
        "psql failed ({statements:?}): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}
