//! The persisted query gate and its store on the local default, SQLite
//! (the end-to-end suite `tests/tests/persisted_queries.rs` runs them on
//! Postgres, across replicas): every path through the gate, the cap and
//! its least-recently-used order, and what a hit costs in SQL statements
//! (counted with SeaORM's metric callback), which must be none.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::errors::Code;
use api::persisted::{
    Admitted, Mode, PersistedQueries, QueryHash, Registration, Requester, Settings,
};
use entity::PersistedQueryKind;
use entity::persisted_query::{self, Column};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter};
use serde_json::{Value, json};

/// Every statement SeaORM executes while `on` is set.
#[derive(Clone, Default)]
struct SqlLog {
    on: Arc<AtomicBool>,
    statements: Arc<Mutex<Vec<String>>>,
}

impl SqlLog {
    fn start(&self) {
        self.statements.lock().unwrap().clear();
        self.on.store(true, Ordering::SeqCst);
    }

    fn stop(&self) -> Vec<String> {
        self.on.store(false, Ordering::SeqCst);
        std::mem::take(&mut *self.statements.lock().unwrap())
    }
}

struct Fixture {
    db: DatabaseConnection,
    persisted: PersistedQueries,
    sql: SqlLog,
    _dir: tempfile::TempDir,
}

async fn fixture(settings: Settings) -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut db = api::db::connect(None, dir.path())
        .await
        .expect("SQLite database with migrations");
    let sql = SqlLog::default();
    {
        let sql = sql.clone();
        db.set_metric_callback(move |info| {
            if sql.on.load(Ordering::SeqCst) {
                sql.statements
                    .lock()
                    .unwrap()
                    .push(info.statement.sql.clone());
            }
        });
    }
    Fixture {
        persisted: PersistedQueries::new(db.clone(), settings, Default::default()),
        db,
        sql,
        _dir: dir,
    }
}

fn automatic(cap: u64) -> Settings {
    Settings {
        mode: Mode::Automatic,
        max_automatic_entries: cap,
        ..Settings::default()
    }
}

fn extension(hash: QueryHash) -> Value {
    json!({"version": 1, "sha256Hash": hash.to_hex()})
}

fn query(i: usize) -> String {
    format!("query Q{i} {{ me {{ sub }} }}")
}

/// Sends `text` with its hash, as an Apollo client does after a miss.
async fn send_in_full(f: &Fixture, text: &str, who: Requester) -> Result<Admitted, Code> {
    let ext = extension(QueryHash::of(text));
    f.persisted
        .admit(text, Some(&ext), who)
        .await
        .map_err(|r| r.code)
}

/// Sends the hash of `text` alone.
async fn send_hash(f: &Fixture, text: &str, who: Requester) -> Result<Admitted, Code> {
    let ext = extension(QueryHash::of(text));
    f.persisted
        .admit("", Some(&ext), who)
        .await
        .map_err(|r| r.code)
}

async fn automatic_hashes(db: &DatabaseConnection) -> Vec<String> {
    let mut rows: Vec<String> = persisted_query::Entity::find()
        .filter(Column::Kind.eq(PersistedQueryKind::Automatic))
        .all(db)
        .await
        .expect("rows")
        .into_iter()
        .map(|row| row.hash)
        .collect();
    rows.sort();
    rows
}

fn hex_of(texts: &[String]) -> Vec<String> {
    let mut hashes: Vec<String> = texts.iter().map(|t| QueryHash::of(t).to_hex()).collect();
    hashes.sort();
    hashes
}

#[tokio::test]
async fn miss_then_register_then_hit_and_a_hit_costs_no_sql() {
    let f = fixture(automatic(100)).await;
    let text = query(1);
    assert_eq!(
        send_hash(&f, &text, Requester::User).await,
        Err(Code::PersistedQueryNotFound)
    );
    assert_eq!(
        send_in_full(&f, &text, Requester::User).await,
        Ok(Admitted::AsSent)
    );
    assert_eq!(
        send_hash(&f, &text, Requester::User).await,
        Ok(Admitted::Stored(text.as_str().into()))
    );
    // Anyone may run a stored query by its hash (the resolvers decide
    // what the caller sees).
    assert_eq!(
        send_hash(&f, &text, Requester::Anonymous).await,
        Ok(Admitted::Stored(text.as_str().into()))
    );

    f.sql.start();
    for _ in 0..1_000 {
        assert!(matches!(
            send_hash(&f, &text, Requester::User).await,
            Ok(Admitted::Stored(_))
        ));
        // A request without the extension is not looked at.
        assert_eq!(
            f.persisted.admit(&text, None, Requester::User).await,
            Ok(Admitted::AsSent)
        );
    }
    // Sending it in full again is no new insert either.
    assert!(send_in_full(&f, &text, Requester::User).await.is_ok());
    let statements = f.sql.stop();
    assert!(statements.is_empty(), "{statements:?}");
}

#[tokio::test]
async fn a_replica_with_a_cold_cache_reads_the_shared_table_once() {
    let f = fixture(automatic(100)).await;
    let text = query(7);
    send_in_full(&f, &text, Requester::User).await.unwrap();
    // Another replica: the same database, its own in-process cache.
    let other = PersistedQueries::new(f.db.clone(), automatic(100), Default::default());
    let ext = extension(QueryHash::of(&text));
    f.sql.start();
    for _ in 0..10 {
        let admitted = other.admit("", Some(&ext), Requester::User).await;
        assert_eq!(admitted, Ok(Admitted::Stored(text.as_str().into())));
    }
    let statements = f.sql.stop();
    assert_eq!(statements.len(), 1, "{statements:?}");
    assert!(statements[0].starts_with("SELECT"), "{statements:?}");
}

#[tokio::test]
async fn a_wrong_hash_is_refused_and_stores_nothing() {
    let f = fixture(automatic(100)).await;
    let ext = extension(QueryHash::of(&query(2)));
    let refused = f
        .persisted
        .admit(&query(3), Some(&ext), Requester::User)
        .await
        .unwrap_err();
    assert_eq!(refused.code, Code::BadUserInput);
    assert!(
        refused.message.contains("not the SHA-256"),
        "{}",
        refused.message
    );
    assert!(automatic_hashes(&f.db).await.is_empty());
}

#[tokio::test]
async fn anonymous_callers_and_oversized_queries_run_but_are_not_kept() {
    let f = fixture(Settings {
        max_query_bytes: 1_000,
        ..automatic(100)
    })
    .await;
    let anonymous = query(4);
    assert_eq!(
        send_in_full(&f, &anonymous, Requester::Anonymous).await,
        Ok(Admitted::AsSent)
    );
    let big = format!("{} #{}", query(5), "x".repeat(1_000));
    assert_eq!(
        send_in_full(&f, &big, Requester::User).await,
        Ok(Admitted::AsSent)
    );
    assert!(automatic_hashes(&f.db).await.is_empty());
    for text in [&anonymous, &big] {
        assert_eq!(
            send_hash(&f, text, Requester::User).await,
            Err(Code::PersistedQueryNotFound)
        );
    }
    // A cap of 0 keeps nothing at all.
    let none = fixture(automatic(0)).await;
    send_in_full(&none, &query(6), Requester::User)
        .await
        .unwrap();
    assert!(automatic_hashes(&none.db).await.is_empty());
}

#[tokio::test]
async fn thousands_of_registrations_leave_the_newest_up_to_the_cap() {
    let f = fixture(automatic(20)).await;
    let texts: Vec<String> = (0..2_000).map(query).collect();
    for text in &texts {
        send_in_full(&f, text, Requester::User).await.unwrap();
    }
    assert_eq!(automatic_hashes(&f.db).await, hex_of(&texts[1_980..]));
    // Registered queries are not counted and never evicted.
    let registered = Registration {
        hash: QueryHash::of(&query(99_999)),
        name: "Kept".into(),
        query: query(99_999),
    };
    f.persisted.register(&[registered], "admin").await.unwrap();
    for text in (3_000..3_100).map(query) {
        send_in_full(&f, &text, Requester::User).await.unwrap();
    }
    assert_eq!(automatic_hashes(&f.db).await.len(), 20);
    assert!(matches!(
        send_hash(&f, &query(99_999), Requester::User).await,
        Ok(Admitted::Stored(_))
    ));
}

/// A large cap is checked every `cap / 100` inserts: the table may pass it
/// by that much, never more.
#[tokio::test]
async fn a_large_cap_is_held_within_one_percent() {
    let f = fixture(automatic(500)).await;
    let mut most = 0;
    for i in 0..700 {
        send_in_full(&f, &query(i), Requester::User).await.unwrap();
        if i % 7 == 0 || i >= 690 {
            most = most.max(automatic_hashes(&f.db).await.len());
        }
    }
    assert!((500..=505).contains(&most), "{most} rows at the most");
    let left = automatic_hashes(&f.db).await;
    assert!((500..=505).contains(&left.len()), "{} rows", left.len());
    // The newest 500 are all there.
    let newest: Vec<String> = (200..700).map(query).collect();
    for hash in hex_of(&newest) {
        assert!(left.contains(&hash), "{hash} was evicted");
    }
}

#[tokio::test]
async fn eviction_takes_the_least_recently_used() {
    // Every use is recorded at once here; the server records one a minute.
    let f = fixture(Settings {
        touch_interval: Duration::ZERO,
        ..automatic(3)
    })
    .await;
    let texts: Vec<String> = (0..4).map(query).collect();
    for text in &texts[..3] {
        send_in_full(&f, text, Requester::User).await.unwrap();
        // Distinct microseconds in `last_used_at`.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Another replica uses the oldest (its cache is cold: it reads the
    // row, and records the use in the background).
    let other = PersistedQueries::new(
        f.db.clone(),
        Settings {
            touch_interval: Duration::ZERO,
            ..automatic(3)
        },
        Default::default(),
    );
    let ext = extension(QueryHash::of(&texts[0]));
    other.admit("", Some(&ext), Requester::User).await.unwrap();
    let oldest = QueryHash::of(&texts[0]).to_hex();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let row = persisted_query::Entity::find_by_id(oldest.clone())
            .one(&f.db)
            .await
            .unwrap()
            .unwrap();
        if row.last_used_at > row.created_at {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the use was never recorded"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    send_in_full(&f, &texts[3], Requester::User).await.unwrap();
    let kept = [texts[0].clone(), texts[2].clone(), texts[3].clone()];
    assert_eq!(automatic_hashes(&f.db).await, hex_of(&kept));
}

#[tokio::test]
async fn registered_only_mode_runs_registered_queries_alone() {
    let f = fixture(Settings {
        mode: Mode::RegisteredOnly,
        ..Settings::default()
    })
    .await;
    let allowed = query(1);
    let registration = Registration {
        hash: QueryHash::of(&allowed),
        name: "Allowed".into(),
        query: allowed.clone(),
    };
    f.persisted
        .register(&[registration], "manifest")
        .await
        .unwrap();
    let other = query(2);
    for who in [Requester::User, Requester::Anonymous] {
        // By hash, in full with its hash, in full alone: all run.
        assert_eq!(
            send_hash(&f, &allowed, who).await,
            Ok(Admitted::Stored(allowed.as_str().into()))
        );
        assert_eq!(send_in_full(&f, &allowed, who).await, Ok(Admitted::AsSent));
        assert_eq!(
            f.persisted.admit(&allowed, None, who).await,
            Ok(Admitted::AsSent)
        );
        // Anything else is refused, however it is sent, and never kept.
        assert_eq!(
            send_hash(&f, &other, who).await,
            Err(Code::PersistedQueryNotAllowed)
        );
        assert_eq!(
            send_in_full(&f, &other, who).await,
            Err(Code::PersistedQueryNotAllowed)
        );
        let plain = f
            .persisted
            .admit(&other, None, who)
            .await
            .map_err(|r| r.code);
        assert_eq!(plain, Err(Code::PersistedQueryNotAllowed));
        let empty = f.persisted.admit("", None, who).await.map_err(|r| r.code);
        assert_eq!(empty, Err(Code::PersistedQueryNotAllowed));
    }
    // Same text with other spacing is another query.
    let respaced = allowed.replace(' ', "  ");
    assert_eq!(
        f.persisted
            .admit(&respaced, None, Requester::User)
            .await
            .map_err(|r| r.code),
        Err(Code::PersistedQueryNotAllowed)
    );
    // Admins send anything, and still store nothing.
    assert_eq!(
        send_in_full(&f, &other, Requester::Admin).await,
        Ok(Admitted::AsSent)
    );
    assert_eq!(
        send_hash(&f, &other, Requester::Admin).await,
        Err(Code::PersistedQueryNotFound)
    );
    assert!(automatic_hashes(&f.db).await.is_empty());
}

#[tokio::test]
async fn an_automatic_entry_is_not_a_registration() {
    // Stored automatically while the server ran in automatic mode...
    let f = fixture(automatic(100)).await;
    let text = query(1);
    send_in_full(&f, &text, Requester::User).await.unwrap();
    // ...it does not run once the server is restarted registered-only.
    let strict = PersistedQueries::new(
        f.db.clone(),
        Settings {
            mode: Mode::RegisteredOnly,
            ..Settings::default()
        },
        Default::default(),
    );
    let ext = extension(QueryHash::of(&text));
    let refused = strict.admit("", Some(&ext), Requester::User).await;
    assert_eq!(
        refused.map_err(|r| r.code),
        Err(Code::PersistedQueryNotAllowed)
    );
    // Registering it (same hash) turns the row into a registration.
    let registration = Registration {
        hash: QueryHash::of(&text),
        name: "Now".into(),
        query: text.clone(),
    };
    let rows = strict.register(&[registration], "alice").await.unwrap();
    assert_eq!(rows[0].kind, PersistedQueryKind::Registered);
    assert_eq!(rows[0].name.as_deref(), Some("Now"));
    assert_eq!(
        strict.admit("", Some(&ext), Requester::User).await,
        Ok(Admitted::Stored(text.as_str().into()))
    );
    assert!(automatic_hashes(&f.db).await.is_empty());
}
