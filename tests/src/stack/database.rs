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
        psql(&server_url, &format!("CREATE DATABASE {name}"));
        let (base, _) = server_url
            .rsplit_once('/')
            .expect("DATABASE_URL ends with /<database>");
        Self {
            url: format!("{base}/{name}"),
            name,
            server_url,
        }
    }

    /// Runs SQL in this database; returns the output rows (unaligned),
    /// and only them: `INSERT ... RETURNING` gives its rows without the
    /// command's `INSERT 0 1` line.
    pub fn query(&self, sql: &str) -> String {
        psql(&self.url, sql)
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

fn psql(url: &str, sql: &str) -> String {
    let output = Command::new("psql")
        .arg(url)
        .args(["-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql])
        .output()
        .expect("run psql (PostgreSQL client)");
    assert!(
        output.status.success(),
        "psql failed ({sql}): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}
