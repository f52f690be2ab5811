//! `migration [up|down|status|fresh|refresh|reset] ...` against `DATABASE_URL`
//! (e.g. `postgres://user:pass@host/db` or `sqlite://./dcs.db?mode=rwc`).

use sea_orm_migration::prelude::*;

#[tokio::main]
async fn main() {
    cli::run_cli(migration::Migrator).await;
}
