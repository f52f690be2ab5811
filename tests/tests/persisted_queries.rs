//! Persisted queries through real `dcs-api` processes on Postgres (and on
//! the SQLite default): Apollo's automatic protocol across two replicas
//! sharing one database, over POST and GET; the bounded shared cache; the
//! registered-only mode over HTTP and WebSocket, with a manifest and the
//! admin mutation; and hostile requests, each refused with a code.

use std::time::{Duration, Instant};

use e2e_tests::stack::persisted::{by_hash, extension, get_by_hash, in_full, sha256_hex};
use e2e_tests::stack::{Api, ApiOptions, Database, Subscription, error_code};
use serde_json::{Value, json};

const REGISTRY: &str = "127.0.0.1:5999";

const ME: &str = "query Me { me { sub } }";
const ROLE: &str = "query Role { me { role } }";

/// Replica A and replica B (A's secrets) on one fresh Postgres database,
/// with these extra arguments each.
async fn two_replicas(db: &Database, args: &[&str]) -> (Api, Api) {
    let options = || ApiOptions::postgres(db, REGISTRY, 30);
    let a = Api::builder(options()).args(args).start().await;
    let b = Api::builder(options())
        .replica_of(&a)
        .args(args)
        .start()
        .await;
    (a, b)
}

fn speaker(api: &Api) -> String {
    api.token("alice", "speaker", &["workshop"])
}

fn admin(api: &Api) -> String {
    api.token("root", "admin", &[])
}

/// Asserts a `PERSISTED_QUERY_NOT_FOUND` answer as Apollo's link reads it:
/// status 200, the message and the code.
fn assert_not_found(status: u16, body: &Value) {
    assert_eq!(status, 200, "{body}");
    assert_eq!(error_code(body), "PERSISTED_QUERY_NOT_FOUND", "{body}");
    assert_eq!(
        body["errors"][0]["message"], "PersistedQueryNotFound",
        "{body}"
    );
}

fn assert_sub(body: &Value, sub: &str) {
    assert_eq!(body["data"]["me"]["sub"], sub, "{body}");
    assert!(body["errors"].is_null(), "{body}");
}

fn automatic_rows(db: &Database) -> usize {
    db.query("SELECT count(*) FROM persisted_queries WHERE kind = 'AUTOMATIC'")
        .parse()
        .expect("a count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automatic_persisted_queries_round_trip_across_two_replicas() {
    let db = Database::fresh();
    let (a, b) = two_replicas(&db, &[]).await;
    let alice = speaker(&a);

    // POST: a miss on A, the full query on A, a hit on B.
    let (status, body) = a.post_graphql(Some(&alice), &by_hash(ME)).await;
    assert_not_found(status, &body);
    let (status, body) = a.post_graphql(Some(&alice), &in_full(ME)).await;
    assert_eq!(status, 200);
    assert_sub(&body, "alice");
    let (status, body) = b.post_graphql(Some(&alice), &by_hash(ME)).await;
    assert_eq!(status, 200);
    assert_sub(&body, "alice");
    // And on B by GET, as `useGETForHashedQueries` sends it.
    let (status, body) = b.get_graphql(Some(&alice), &get_by_hash(ME)).await;
    assert_eq!(status, 200);
    assert_sub(&body, "alice");

    // GET all along: a miss on B, the full query (GET, query string) on
    // B, a hit on A; variables and the operation name travel too.
    let mine = "query Mine($first: Int!) { me { sub role } snapshots(first: $first) { edges { cursor } } }";
    let (status, body) = b.get_graphql(Some(&alice), &get_by_hash(mine)).await;
    assert_not_found(status, &body);
    let full = vec![
        ("query", mine.to_string()),
        ("operationName", "Mine".to_string()),
        ("variables", json!({"first": 1}).to_string()),
        (
            "extensions",
            json!({"persistedQuery": extension(mine)}).to_string(),
        ),
    ];
    let (status, body) = b.get_graphql(Some(&alice), &full).await;
    assert_eq!(
        (status, &body["data"]["me"]["role"]),
        (200, &json!("SPEAKER")),
        "{body}"
    );
    let mut hashed = get_by_hash(mine);
    hashed.push(("operationName", "Mine".into()));
    hashed.push(("variables", json!({"first": 2}).to_string()));
    let (status, body) = a.get_graphql(Some(&alice), &hashed).await;
    assert_eq!(
        (status, &body["data"]["me"]["sub"]),
        (200, &json!("alice")),
        "{body}"
    );

    // Stored for everyone: another speaker's hit runs as them.
    let bob = a.token("bob", "speaker", &["workshop"]);
    let (_, body) = a.post_graphql(Some(&bob), &by_hash(ME)).await;
    assert_sub(&body, "bob");
    assert_eq!(automatic_rows(&db), 2);

    // GET runs queries only, in full or by hash: a stored mutation too.
    let cancel =
        "mutation Cancel { cancelSnapshot(id: \"00000000-0000-0000-0000-000000000000\") { id } }";
    let (status, body) = a.post_graphql(Some(&alice), &in_full(cancel)).await;
    assert_eq!((status, error_code(&body)), (200, "NOT_FOUND"), "{body}");
    for params in [vec![("query", cancel.to_string())], get_by_hash(cancel)] {
        let (status, body) = b.get_graphql(Some(&alice), &params).await;
        assert_eq!(
            (status, error_code(&body)),
            (405, "BAD_USER_INPUT"),
            "{body}"
        );
    }

    // Registering is for admins, and audited.
    let register = "mutation($input: RegisterPersistedQueryInput!) { registerPersistedQuery(input: $input) { sha256Hash name registeredBy } }";
    let input = json!({"input": {"name": "Role", "query": ROLE}});
    let refused = a.graphql(Some(&alice), register, input.clone()).await;
    assert_eq!(error_code(&refused), "FORBIDDEN", "{refused}");
    let root = admin(&a);
    let registered = a.data(&root, register, input).await;
    assert_eq!(
        registered["registerPersistedQuery"],
        json!({"sha256Hash": sha256_hex(ROLE), "name": "Role", "registeredBy": "root"})
    );
    let (_, body) = b.post_graphql(Some(&alice), &by_hash(ROLE)).await;
    assert_eq!(body["data"]["me"]["role"], "SPEAKER", "{body}");
    let audit = db.query(
        "SELECT actor || ':' || outcome FROM audit_log \
         WHERE action = 'registerPersistedQuery' ORDER BY id",
    );
    assert_eq!(audit, "alice:forbidden\nroot:ok");

    let metrics = a.metrics().await;
    for outcome in ["miss", "hit", "sent_in_full", "stored"] {
        assert!(
            metrics.contains(&format!(
                "dcs_api_persisted_queries_total{{outcome=\"{outcome}\"}}"
            )),
            "{outcome} not counted:\n{metrics}"
        );
    }
}

/// The local default: the same protocol on the embedded SQLite database.
#[tokio::test]
async fn automatic_persisted_queries_work_on_the_sqlite_default() {
    let mut api = Api::start(ApiOptions::sqlite(REGISTRY, 30)).await;
    let alice = speaker(&api);
    let (status, body) = api.post_graphql(Some(&alice), &by_hash(ME)).await;
    assert_not_found(status, &body);
    let (_, body) = api.post_graphql(Some(&alice), &in_full(ME)).await;
    assert_sub(&body, "alice");
    let (_, body) = api.get_graphql(Some(&alice), &get_by_hash(ME)).await;
    assert_sub(&body, "alice");
    api.restart().await;
    let (_, body) = api.post_graphql(Some(&alice), &by_hash(ME)).await;
    assert_sub(&body, "alice");
}

/// Thousands of distinct queries sent with their hashes by eight clients
/// at once: the table never holds more than the cap (plus the inserts in
/// flight) and ends at the cap exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_automatic_registrations_stay_within_the_cap() {
    const CAP: usize = 50;
    const QUERIES: usize = 2_000;
    const CLIENTS: usize = 8;
    let db = Database::fresh();
    let cap = CAP.to_string();
    let (a, b) = two_replicas(&db, &["--persisted-query-cache-entries", &cap]).await;
    let alice = speaker(&a);
    let started = Instant::now();
    let mut most = 0;
    for batch in 0..QUERIES / 500 {
        let mut clients = tokio::task::JoinSet::new();
        for client in 0..CLIENTS {
            let api = if client % 2 == 0 {
                a.url.clone()
            } else {
                b.url.clone()
            };
            let token = alice.clone();
            clients.spawn(async move {
                let http = e2e_tests::stack::http_client();
                for i in (client..500).step_by(CLIENTS) {
                    let query = format!("query Q{batch}x{i} {{ me {{ sub }} }}");
                    let answer: Value = http
                        .post(format!("{api}/graphql"))
                        .bearer_auth(&token)
                        .json(&in_full(&query))
                        .send()
                        .await
                        .expect("POST")
                        .json()
                        .await
                        .expect("JSON");
                    assert_eq!(answer["data"]["me"]["sub"], "alice", "{answer}");
                }
            });
        }
        // Sampled while the clients run.
        while !clients.is_empty() {
            most = most.max(automatic_rows(&db));
            tokio::select! {
                joined = clients.join_next() => joined.expect("a client").expect("client task"),
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
        assert!(
            automatic_rows(&db) <= CAP,
            "batch {batch}: {} rows",
            automatic_rows(&db)
        );
    }
    let elapsed = started.elapsed();
    assert!(most <= CAP + CLIENTS, "{most} rows at the most");
    assert_eq!(automatic_rows(&db), CAP);
    println!(
        "{QUERIES} distinct queries stored by {CLIENTS} clients on two replicas in {:.1} s \
         ({:.0}/s); at most {most} automatic rows seen, {CAP} at the end",
        elapsed.as_secs_f64(),
        QUERIES as f64 / elapsed.as_secs_f64()
    );
    // The newest survive: the last query sent is still a hit.
    let last = format!("query Q3x{} {{ me {{ sub }} }}", 500 - 1);
    let (_, body) = b.post_graphql(Some(&alice), &by_hash(&last)).await;
    assert_sub(&body, "alice");
}

/// On Postgres, a use moves an entry to the back of the eviction queue
/// (uses are recorded at once here: `--persisted-query-touch-seconds 0`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_on_postgres_takes_the_least_recently_used() {
    let db = Database::fresh();
    let (a, b) = two_replicas(
        &db,
        &[
            "--persisted-query-cache-entries",
            "3",
            "--persisted-query-touch-seconds",
            "0",
        ],
    )
    .await;
    let alice = speaker(&a);
    let queries: Vec<String> = (0..4)
        .map(|i| format!("query Q{i} {{ me {{ sub }} }}"))
        .collect();
    for query in &queries[..3] {
        a.post_graphql(Some(&alice), &in_full(query)).await;
    }
    // B has not seen Q0: it reads the row and records the use.
    let (_, body) = b.post_graphql(Some(&alice), &by_hash(&queries[0])).await;
    assert_sub(&body, "alice");
    let oldest = sha256_hex(&queries[0]);
    e2e_tests::poll(
        Duration::from_secs(10),
        Duration::from_millis(20),
        async || {
            let moved = db.query(&format!(
                "SELECT last_used_at > created_at FROM persisted_queries WHERE hash = '{oldest}'"
            ));
            if moved == "t" { Ok(()) } else { Err(moved) }
        },
        |moved| format!("the use of Q0 was never recorded: {moved}"),
    )
    .await;
    a.post_graphql(Some(&alice), &in_full(&queries[3])).await;
    let mut kept: Vec<String> = db
        .query("SELECT hash FROM persisted_queries ORDER BY hash")
        .lines()
        .map(str::to_string)
        .collect();
    kept.sort();
    let mut expected: Vec<String> = [&queries[0], &queries[2], &queries[3]]
        .iter()
        .map(|q| sha256_hex(q))
        .collect();
    expected.sort();
    assert_eq!(kept, expected, "Q1, the least recently used, goes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_persisted_query_requests_are_refused_with_codes() {
    let db = Database::fresh();
    let api = Api::builder(ApiOptions::postgres(&db, REGISTRY, 30))
        .start()
        .await;
    let alice = speaker(&api);
    let bad = |status: u16, body: &Value, why: &str| {
        assert_eq!(
            (status, error_code(body)),
            (400, "BAD_USER_INPUT"),
            "{why}: {body}"
        );
        let message = body["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(message.len() < 300, "{why}: the message echoes the input");
    };

    // A 10 MB query with its hash: refused by the body limit, unread.
    let huge = format!("query Huge {{ me {{ sub }} }} #{}", "x".repeat(10 << 20));
    // The API answers from the Content-Length and closes without reading:
    // the client sees the 413, or, when the close wins the race with its
    // write, a broken pipe. Either way nothing was read or stored (checked
    // below with the table).
    let sent = e2e_tests::stack::http_client()
        .post(format!("{}/graphql", api.url))
        .bearer_auth(&alice)
        .json(&in_full(&huge))
        .send()
        .await;
    match sent {
        Ok(response) => {
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or_default();
            assert_eq!(
                (status, error_code(&body)),
                (413, "PAYLOAD_TOO_LARGE"),
                "{body}"
            );
        }
        Err(e) => assert!(
            e.is_request() || e.is_body(),
            "the 10 MB POST failed otherwise than by the server's early close: {e:?}"
        ),
    }
    // The same in a GET's query string is refused too, one way or another.
    let mut url = reqwest::Url::parse(&format!("{}/graphql", api.url)).unwrap();
    url.query_pairs_mut().append_pair("query", &huge);
    let answered = e2e_tests::stack::http_client().get(url).send().await;
    if let Ok(response) = answered {
        assert!(response.status().as_u16() >= 400, "{}", response.status());
    }

    // Larger than the largest stored query (64 KiB), within the body
    // limit: it runs, and is not kept.
    let big = format!("query Big {{ me {{ sub }} }} #{}", "x".repeat(200_000));
    let (_, body) = api.post_graphql(Some(&alice), &in_full(&big)).await;
    assert_sub(&body, "alice");
    let (status, body) = api.post_graphql(Some(&alice), &by_hash(&big)).await;
    assert_not_found(status, &body);

    // Hashes that are not 64 hex digits, a 900 KB one among them.
    for hash in [
        json!("abc"),
        json!("z".repeat(64)),
        json!(format!("{}0", sha256_hex(ME))),
        json!("f".repeat(900_000)),
        json!(12),
        json!(null),
    ] {
        let request = json!({"query": ME, "extensions": {"persistedQuery": {"version": 1, "sha256Hash": hash}}});
        let (status, body) = api.post_graphql(Some(&alice), &request).await;
        bad(status, &body, "hash");
    }
    // `persistedQuery` of the wrong JSON type, or the wrong version.
    for extension in [
        json!("sha256"),
        json!(1),
        json!(true),
        json!(null),
        json!([extension(ME)]),
        json!({"sha256Hash": sha256_hex(ME)}),
        json!({"version": "1", "sha256Hash": sha256_hex(ME)}),
        json!({"version": 2, "sha256Hash": sha256_hex(ME)}),
    ] {
        for body in [
            json!({"query": ME, "extensions": {"persistedQuery": extension}}),
            json!({"extensions": {"persistedQuery": extension}}),
        ] {
            let (status, answer) = api.post_graphql(Some(&alice), &body).await;
            bad(status, &answer, &extension.to_string());
        }
    }
    // A hash of another text.
    let request = json!({"query": ROLE, "extensions": {"persistedQuery": extension(ME)}});
    let (status, body) = api.post_graphql(Some(&alice), &request).await;
    bad(status, &body, "mismatch");
    // `extensions` that is not an object, over POST and GET.
    let (status, body) = api
        .post_graphql(Some(&alice), &json!({"query": ME, "extensions": "x"}))
        .await;
    bad(status, &body, "extensions");
    for params in [
        vec![("extensions", "{not json".to_string())],
        vec![("extensions", "[1]".to_string())],
        vec![("query", ME.to_string()), ("variables", "[1]".to_string())],
    ] {
        let (status, body) = api.get_graphql(Some(&alice), &params).await;
        bad(status, &body, "GET");
    }
    // Nothing of the above was stored, and the server is fine.
    assert_eq!(automatic_rows(&db), 0);
    let (_, body) = api.post_graphql(Some(&alice), &in_full(ME)).await;
    assert_sub(&body, "alice");
    assert_eq!(automatic_rows(&db), 1);
}

/// Registered-only mode on two replicas: a manifest at start-up, the admin
/// mutation, and everything else refused over HTTP and WebSocket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_only_mode_runs_registered_queries_alone() {
    let db = Database::fresh();
    let dir = std::env::temp_dir().join(e2e_tests::unique("dcs-manifest"));
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = dir.join("manifest.json");
    let events = "subscription Events { snapshotEvents { snapshotId status } }";
    let operation = |name: &str, kind: &str, body: &str| json!({"id": sha256_hex(body), "name": name, "type": kind, "body": body});
    std::fs::write(
        &manifest,
        json!({
            "format": "apollo-persisted-query-manifest",
            "version": 1,
            "operations": [operation("Me", "query", ME), operation("Events", "subscription", events)],
        })
        .to_string(),
    )
    .unwrap();
    let manifest_arg = manifest.to_string_lossy().to_string();
    let (a, b) = two_replicas(
        &db,
        &[
            "--persisted-queries",
            "registered-only",
            "--persisted-query-manifest",
            &manifest_arg,
        ],
    )
    .await;
    let alice = speaker(&a);
    let not_allowed = |status: u16, body: &Value, what: &str| {
        assert_eq!(
            (status, error_code(body)),
            (403, "PERSISTED_QUERY_NOT_ALLOWED"),
            "{what}: {body}"
        );
    };

    // From the manifest: by hash, in full, over GET, on either replica.
    for api in [&a, &b] {
        let (_, body) = api.post_graphql(Some(&alice), &by_hash(ME)).await;
        assert_sub(&body, "alice");
        let (_, body) = api.post_graphql(Some(&alice), &json!({"query": ME})).await;
        assert_sub(&body, "alice");
        let (_, body) = api.get_graphql(Some(&alice), &get_by_hash(ME)).await;
        assert_sub(&body, "alice");
    }

    // Anything else is refused however it comes, and nothing is kept.
    let unknown = "query Other { me { sub role } }";
    let (status, body) = a
        .post_graphql(Some(&alice), &json!({"query": unknown}))
        .await;
    not_allowed(status, &body, "in full");
    let (status, body) = a.post_graphql(Some(&alice), &in_full(unknown)).await;
    not_allowed(status, &body, "in full with its hash");
    let (status, body) = b.post_graphql(Some(&alice), &by_hash(unknown)).await;
    not_allowed(status, &body, "by hash");
    let (status, body) = b
        .get_graphql(Some(&alice), &[("query", unknown.to_string())])
        .await;
    not_allowed(status, &body, "GET");
    let (status, body) = a.post_graphql(None, &json!({"query": unknown})).await;
    not_allowed(status, &body, "anonymous");
    let introspection = json!({"query": "{ __schema { queryType { name } } }"});
    let (status, body) = a.post_graphql(Some(&alice), &introspection).await;
    not_allowed(status, &body, "introspection");
    assert_eq!(automatic_rows(&db), 0);

    // Only an admin registers (a speaker's mutation is not registered
    // either); admins may send any query.
    let register = json!({
        "query": "mutation($input: RegisterPersistedQueryInput!) { registerPersistedQuery(input: $input) { sha256Hash } }",
        "variables": {"input": {"name": "Role", "query": ROLE}},
    });
    let (status, body) = a.post_graphql(Some(&alice), &register).await;
    not_allowed(status, &body, "a speaker's registration");
    let root = admin(&a);
    let (_, body) = a.post_graphql(Some(&root), &register).await;
    assert_eq!(
        body["data"]["registerPersistedQuery"]["sha256Hash"],
        sha256_hex(ROLE),
        "{body}"
    );
    let (_, body) = b.post_graphql(Some(&alice), &by_hash(ROLE)).await;
    assert_eq!(body["data"]["me"]["role"], "SPEAKER", "{body}");
    let (status, body) = a.post_graphql(Some(&root), &introspection).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["data"]["__schema"]["queryType"]["name"], "Query",
        "{body}"
    );
    assert_eq!(
        db.query("SELECT actor FROM audit_log WHERE action = 'registerPersistedQuery'"),
        "root"
    );

    // GraphiQL still loads; what it sends is gated like the rest.
    let page = e2e_tests::stack::http_client()
        .get(format!("{}/graphql", a.url))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.text().await.unwrap().contains("graphiql"));

    // WebSocket: the same rules for `subscribe`, in text and binary frames.
    let mut ws = b.ws_connection(&alice).await;
    let other_events = "subscription { snapshotEvents { snapshotId } }";
    ws.send(&json!({"id": "1", "type": "subscribe", "payload": {"query": other_events}}))
        .await;
    expect_ws_error(&mut ws, "1", "PERSISTED_QUERY_NOT_ALLOWED").await;
    ws.send_binary(&json!({"id": "2", "type": "subscribe", "payload": {"query": unknown}}))
        .await;
    expect_ws_error(&mut ws, "2", "PERSISTED_QUERY_NOT_ALLOWED").await;
    ws.send(&json!({"id": "3", "type": "subscribe", "payload": by_hash(unknown)}))
        .await;
    expect_ws_error(&mut ws, "3", "PERSISTED_QUERY_NOT_ALLOWED").await;
    // A registered query by its hash runs over the socket.
    ws.send_binary(&json!({"id": "4", "type": "subscribe", "payload": by_hash(ME)}))
        .await;
    let next = ws
        .next_message(Duration::from_secs(10))
        .await
        .expect("an answer");
    assert_eq!(next["id"], "4", "{next}");
    assert_eq!(next["payload"]["data"]["me"]["sub"], "alice", "{next}");
    // As does the registered subscription: no error within a second,
    // while the refusals above came at once.
    ws.send(&json!({"id": "5", "type": "subscribe", "payload": {"query": events}}))
        .await;
    let quiet = wait_for_id(&mut ws, "5", Duration::from_secs(1)).await;
    assert!(quiet.is_none(), "{quiet:?}");
    // Admins are exempt on sockets too.
    let mut admin_ws = a.ws_connection(&root).await;
    admin_ws
        .send(&json!({"id": "1", "type": "subscribe", "payload": {"query": unknown}}))
        .await;
    let next = wait_for_id(&mut admin_ws, "1", Duration::from_secs(10))
        .await
        .expect("an answer");
    assert_eq!(next["payload"]["data"]["me"]["sub"], "root", "{next}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The next message about subscription `id` (others are skipped), or
/// `None` if none comes within `wait`.
async fn wait_for_id(ws: &mut Subscription, id: &str, wait: Duration) -> Option<Value> {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = ws.next_message(left).await?;
        if message["id"] == id {
            return Some(message);
        }
    }
}

async fn expect_ws_error(ws: &mut Subscription, id: &str, code: &str) {
    let message = wait_for_id(ws, id, Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("no answer for subscription {id}"));
    assert_eq!(message["type"], "error", "{message}");
    assert_eq!(
        message["payload"][0]["extensions"]["code"], code,
        "{message}"
    );
}

/// A bad manifest stops the start with a sentence naming the operation.
#[tokio::test]
async fn a_bad_manifest_stops_the_start() {
    let dir = std::env::temp_dir().join(e2e_tests::unique("dcs-bad-manifest"));
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = dir.join("manifest.json");
    let wrong_id = json!({
        "format": "apollo-persisted-query-manifest",
        "version": 1,
        "operations": [{"id": sha256_hex(ROLE), "name": "Me", "type": "query", "body": ME}],
    });
    let cases = [
        (
            wrong_id.to_string(),
            "operation 0 (\"Me\"): \"id\" is not the SHA-256 of the body",
        ),
        (
            "{\"format\": 1}".to_string(),
            "not a persisted query manifest",
        ),
    ];
    for (text, expected) in cases {
        std::fs::write(&manifest, &text).unwrap();
        let output = tokio::process::Command::new(e2e_tests::built_binary("dcs-api"))
            .env_remove("DATABASE_URL")
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--persisted-query-manifest",
            ])
            .arg(&manifest)
            .output();
        let output = tokio::time::timeout(Duration::from_secs(30), output)
            .await
            .expect("dcs-api exits")
            .expect("run dcs-api");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "started with a bad manifest");
        assert!(
            stderr.contains("persisted query manifest") && stderr.contains(expected),
            "{stderr}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
