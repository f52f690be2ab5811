//! "A list of 200 snapshots with their parents costs a constant number of
//! SQL queries": the API's own HTTP router (`api::http::router`, so the
//! request data is exactly what `http::request_data` sets: the caller and
//! fresh DataLoaders) is served in-process on a loopback port over a SQLite
//! file, and every SQL statement SeaORM sends is counted with its metric
//! callback.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::auth::policy::Policy;
use api::auth::{JwtSigner, JwtVerifier, Role};
use api::graphql::{SchemaLimits, build_schema};
use api::state::AppState;
use chrono::{DateTime, Utc};
use dcs_protocol::token::SharedSecret;
use entity::{SnapshotStatus, snapshot};
use sea_orm::{ActiveModelTrait, Set};
use serde_json::{Value, json};
use uuid::Uuid;

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

struct App {
    state: AppState,
    url: String,
    signer: JwtSigner,
    http: reqwest::Client,
    sql: SqlLog,
    _dir: tempfile::TempDir,
}

async fn app() -> App {
    let _ = rustls::crypto::ring::default_provider().install_default();
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
    let secret = dir.path().join("jwt-secret");
    std::fs::write(&secret, "s".repeat(48)).unwrap();
    let verifier = JwtVerifier::new(
        api::auth::JwtAlgorithm::Hs256,
        Some(Path::new(&secret)),
        None,
        "dcs",
        "dcs-api",
    )
    .expect("verifier");
    let state =
        api::startup::StateBuilder::new(db, verifier, SharedSecret::new(vec![b'a'; 40]).unwrap())
            .policy(Policy {
                speaker_prefixes: vec!["registry.test/workshops/{sub}".into()],
                ..Policy::default()
            })
            .build()
            .expect("shared state");
    let signer = JwtSigner::new(
        api::auth::JwtAlgorithm::Hs256,
        Some(Path::new(&secret)),
        None,
        "dcs",
        "dcs-api",
    )
    .expect("signer");
    let schema = build_schema(Some(state.clone()), SchemaLimits::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("loopback port");
    let url = format!("http://{}/graphql", listener.local_addr().unwrap());
    let router = api::http::router(state.clone(), schema);
    tokio::spawn(async move { axum::serve(listener, router).await });
    App {
        state,
        url,
        signer,
        http: reqwest::Client::new(),
        sql,
        _dir: dir,
    }
}

/// Who asks: a token minted with the API's key.
struct Caller {
    sub: &'static str,
    role: Role,
    namespaces: &'static [&'static str],
}

/// POSTs a GraphQL request to the API's router; returns the data and the
/// SQL statements it cost.
async fn execute(app: &App, who: &Caller, query: &str, variables: Value) -> (Value, Vec<String>) {
    let namespaces: Vec<String> = who.namespaces.iter().map(|s| s.to_string()).collect();
    let token = app
        .signer
        .mint(who.sub, who.role, &namespaces, Duration::from_secs(300));
    app.sql.start();
    let response = app
        .http
        .post(&app.url)
        .bearer_auth(token)
        .json(&json!({"query": query, "variables": variables}))
        .send()
        .await
        .expect("POST /graphql");
    let body: Value = response.json().await.expect("GraphQL JSON");
    let statements = app.sql.stop();
    assert!(body["errors"].is_null(), "GraphQL errors: {body}");
    (body["data"].clone(), statements)
}

const CHAINS: usize = 20;
const GENERATIONS: usize = 10;

/// 200 snapshots: 20 lineages of 10 generations, each generation built on
/// the previous one's image; a child is always newer than its parent.
/// Returns the id of [chain][generation].
async fn lineages(app: &App) -> Vec<Vec<Uuid>> {
    let start: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
    let mut ids = vec![Vec::new(); CHAINS];
    for generation in 0..GENERATIONS {
        for (chain, chain_ids) in ids.iter_mut().enumerate() {
            let id = Uuid::new_v4();
            let at = start + chrono::Duration::seconds((generation * CHAINS + chain) as i64);
            let owner = if chain % 2 == 0 { "alice" } else { "bob" };
            snapshot::ActiveModel {
                id: Set(id),
                requested_by: Set(owner.into()),
                node: Set("node-1".into()),
                container_id: Set(format!("desk-{chain}")),
                pod_namespace: Set(Some(format!("ns-{owner}"))),
                pod_name: Set(Some(format!("desktop-{chain}"))),
                container_name: Set(Some("desktop".into())),
                base_image: Set(Some("registry.test/base:1".into())),
                base_digest: Set(Some(format!("sha256:{:064x}", generation))),
                parent_id: Set(chain_ids.last().copied()),
                target: Set(format!(
                    "registry.test/workshops/{owner}/d{chain}:v{generation}"
                )),
                repository: Set(format!("registry.test/workshops/{owner}/d{chain}")),
                message: Set(None),
                options: Set(
                    json!({"changes": [], "excludes": [], "compression": "gzip", "pause": true}),
                ),
                status: Set(SnapshotStatus::Pushed),
                phase_bytes_done: Set(0),
                phase_bytes_total: Set(0),
                manifest_digest: Set(Some(format!("sha256:{:064x}", generation * 100 + chain))),
                last_event_seq: Set(3),
                dispatch_attempts: Set(1),
                created_at: Set(at),
                updated_at: Set(at),
                finished_at: Set(Some(at)),
                ..Default::default()
            }
            .insert(&app.state.db)
            .await
            .expect("insert snapshot");
            chain_ids.push(id);
        }
    }
    ids
}

const ADMIN: Caller = Caller {
    sub: "root",
    role: Role::Admin,
    namespaces: &[],
};

const PAGE: &str = "query($first: Int!, $after: String) {
  snapshots(first: $first, after: $after) {
    edges { node { id parent { id } children { id } } }
    pageInfo { hasNextPage endCursor }
  }
}";

/// Checks each listed snapshot's parent and children against the lineages.
fn check_lineage(data: &Value, ids: &[Vec<Uuid>]) -> usize {
    let mut position = std::collections::HashMap::new();
    for (chain, chain_ids) in ids.iter().enumerate() {
        for (generation, id) in chain_ids.iter().enumerate() {
            position.insert(id.to_string(), (chain, generation));
        }
    }
    let edges = data["snapshots"]["edges"].as_array().expect("edges");
    for edge in edges {
        let node = &edge["node"];
        let (chain, generation) = position[node["id"].as_str().unwrap()];
        let parent =
            (generation > 0).then(|| json!({"id": ids[chain][generation - 1].to_string()}));
        assert_eq!(
            node["parent"],
            parent.unwrap_or(Value::Null),
            "parent of {node}"
        );
        let children = match ids[chain].get(generation + 1) {
            Some(child) => json!([{"id": child.to_string()}]),
            None => json!([]),
        };
        assert_eq!(node["children"], children, "children of {node}");
    }
    edges.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_of_200_snapshots_with_parents_and_children_costs_a_constant_number_of_queries() {
    let app = app().await;
    let ids = lineages(&app).await;
    let root = ADMIN;

    let (ten, ten_sql) = execute(&app, &root, PAGE, json!({"first": 10})).await;
    assert_eq!(check_lineage(&ten, &ids), 10);
    println!("10 rows: {} SQL statements", ten_sql.len());
    for statement in &ten_sql {
        println!("  {}", &statement[..statement.len().min(160)]);
    }
    assert!(
        ten_sql.len() <= 3,
        "one query for the page, one for the parents, one for the children: {ten_sql:#?}"
    );

    // The same 200 rows as two pages of 100, a few times over: the count
    // must not depend on the number of rows, nor on timing.
    let mut counts = Vec::new();
    for round in 0..3 {
        let (first, first_sql) = execute(&app, &root, PAGE, json!({"first": 100})).await;
        assert_eq!(check_lineage(&first, &ids), 100);
        assert_eq!(first["snapshots"]["pageInfo"]["hasNextPage"], true);
        let cursor = first["snapshots"]["pageInfo"]["endCursor"].clone();
        let (second, second_sql) =
            execute(&app, &root, PAGE, json!({"first": 100, "after": cursor})).await;
        assert_eq!(check_lineage(&second, &ids), 100);
        assert_eq!(second["snapshots"]["pageInfo"]["hasNextPage"], false);
        let mut seen: Vec<String> = first["snapshots"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .chain(second["snapshots"]["edges"].as_array().unwrap())
            .map(|e| e["node"]["id"].as_str().unwrap().to_string())
            .collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 200, "the two pages hold all 200 snapshots once");
        counts.push((format!("round {round}: first 100"), first_sql));
        counts.push((format!("round {round}: next 100"), second_sql));
    }
    // A speaker's list (visibility filter) costs the same.
    let alice = Caller {
        sub: "alice",
        role: Role::Speaker,
        namespaces: &["ns-alice"],
    };
    let (mine, mine_sql) = execute(&app, &alice, PAGE, json!({"first": 100})).await;
    assert_eq!(check_lineage(&mine, &ids), 100);
    counts.push(("speaker's 100".to_string(), mine_sql));

    for (label, statements) in &counts {
        println!("{label}: {} SQL statements", statements.len());
    }
    let worse: Vec<String> = counts
        .iter()
        // Fewer is fine: a page that holds its rows' parents asks for none.
        .filter(|(_, statements)| statements.len() > ten_sql.len())
        .map(|(label, statements)| {
            let kinds: Vec<&str> = statements
                .iter()
                .map(|s| {
                    if s.contains("\"parent_id\" IN") {
                        "children"
                    } else if s.contains("\"id\" IN") {
                        "parents"
                    } else {
                        "page"
                    }
                })
                .collect();
            format!("{label}: {} ({})", statements.len(), kinds.join(", "))
        })
        .collect();
    assert!(
        worse.is_empty(),
        "100 rows cost more SQL statements than 10 rows ({}): {}",
        ten_sql.len(),
        worse.join("; ")
    );
}

/// `ancestors` and `descendants` on a list: each lineage field is one
/// recursive SQL statement for all the rows of the list (issue 8), so the
/// count depends neither on the rows nor on the depth of the lineage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ancestors_and_descendants_of_a_list_cost_one_query_each() {
    let app = app().await;
    let ids = lineages(&app).await;
    let root = ADMIN;
    // 50 rows x 10 per lineage list stays within the default complexity.
    let query = "query($first: Int!) { snapshots(first: $first) {
        edges { node { id ancestors(first: 10) { id } descendants(first: 10) { id } } } } }";

    let (ten, ten_sql) = execute(&app, &root, query, json!({"first": 10})).await;
    let (fifty, fifty_sql) = execute(&app, &root, query, json!({"first": 50})).await;
    // The answers are right: the newest 10 are generation 9 (9 ancestors,
    // nearest first).
    for edge in ten["snapshots"]["edges"].as_array().unwrap() {
        let id = edge["node"]["id"].as_str().unwrap();
        let chain = ids
            .iter()
            .find(|c| c[GENERATIONS - 1].to_string() == id)
            .unwrap();
        let expected: Vec<Value> = chain[..GENERATIONS - 1]
            .iter()
            .rev()
            .map(|id| json!({"id": id.to_string()}))
            .collect();
        assert_eq!(edge["node"]["ancestors"], json!(expected));
        assert_eq!(edge["node"]["descendants"], json!([]));
    }
    // Generation 5 of a chain has 4 descendants, oldest first.
    let edges = fifty["snapshots"]["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 50);
    for edge in edges {
        let id = edge["node"]["id"].as_str().unwrap();
        let (chain, generation) = ids
            .iter()
            .find_map(|c| c.iter().position(|x| x.to_string() == id).map(|g| (c, g)))
            .unwrap();
        let expected: Vec<Value> = chain[generation + 1..]
            .iter()
            .map(|id| json!({"id": id.to_string()}))
            .collect();
        assert_eq!(edge["node"]["descendants"], json!(expected), "of {id}");
        assert_eq!(
            edge["node"]["ancestors"].as_array().unwrap().len(),
            generation
        );
    }
    println!(
        "SQL statements with ancestors and descendants: 10 rows: {}; 50 rows: {}",
        ten_sql.len(),
        fifty_sql.len()
    );
    // The page, its parents and children (prefetch), one statement per
    // lineage field.
    for statements in [&ten_sql, &fifty_sql] {
        let recursive = statements
            .iter()
            .filter(|s| s.contains("WITH RECURSIVE"))
            .count();
        assert_eq!(recursive, 2, "{statements:#?}");
        assert!(statements.len() <= 5, "{statements:#?}");
    }
}

/// Rows for the console's documents: `containers` desktops on node-1 (even
/// ones alice's, odd ones bob's), each with a chain of `generations`
/// snapshots; `nodes` more nodes; `deliveries` webhook deliveries with
/// `attempts` attempts each, on one endpoint.
struct ConsoleRows {
    containers: std::ops::Range<usize>,
    generations: usize,
    nodes: std::ops::Range<usize>,
    deliveries: usize,
    attempts: usize,
}

/// Inserts `rows`; returns the first snapshot of each container's chain.
async fn seed_console(app: &App, rows: &ConsoleRows, endpoint: Uuid) -> Vec<Uuid> {
    use entity::{DeliveryStatus, NodeState, container, node, webhook_attempt, webhook_delivery};
    let db = &app.state.db;
    let now = Utc::now();
    for n in rows.nodes.clone() {
        node::ActiveModel {
            name: Set(format!("node-{n}")),
            instance_id: Set(Uuid::new_v4()),
            url: Set(format!("https://10.0.0.{n}:9443")),
            version: Set("test".into()),
            containerd_version: Set("2.0".into()),
            max_concurrent_jobs: Set(2),
            registered_at: Set(now),
            last_seen_at: Set(now),
            state: Set(NodeState::Ready),
        }
        .insert(db)
        .await
        .expect("insert node");
    }
    let mut roots = Vec::new();
    for c in rows.containers.clone() {
        let owner = if c % 2 == 0 { "alice" } else { "bob" };
        container::ActiveModel {
            node: Set("node-1".into()),
            id: Set(format!("desk-{c}")),
            image: Set("registry.test/base:1".into()),
            image_digest: Set(None),
            state: Set("running".into()),
            snapshotter: Set("overlayfs".into()),
            pod_name: Set(Some(format!("desktop-{c}"))),
            pod_namespace: Set(Some("workshop".into())),
            container_name: Set(Some("desktop".into())),
            updated_at: Set(now),
            owner: Set(Some(owner.into())),
        }
        .insert(db)
        .await
        .expect("insert container");
        let mut parent = None;
        for generation in 0..rows.generations {
            let id = Uuid::new_v4();
            let at = now + chrono::Duration::milliseconds((c * 100 + generation) as i64);
            snapshot::ActiveModel {
                id: Set(id),
                requested_by: Set(owner.into()),
                owner: Set(Some(owner.into())),
                node: Set("node-1".into()),
                container_id: Set(format!("desk-{c}")),
                pod_namespace: Set(Some("workshop".into())),
                pod_name: Set(Some(format!("desktop-{c}"))),
                container_name: Set(Some("desktop".into())),
                base_image: Set(Some("registry.test/base:1".into())),
                parent_id: Set(parent),
                target: Set(format!(
                    "registry.test/workshops/{owner}/desktop-{c}:v{generation}"
                )),
                repository: Set(format!("registry.test/workshops/{owner}/desktop-{c}")),
                options: Set(
                    json!({"changes": [], "excludes": [], "compression": "gzip", "pause": true}),
                ),
                status: Set(SnapshotStatus::Pushed),
                phase_bytes_done: Set(0),
                phase_bytes_total: Set(0),
                last_event_seq: Set(3),
                dispatch_attempts: Set(1),
                created_at: Set(at),
                updated_at: Set(at),
                finished_at: Set(Some(at)),
                ..Default::default()
            }
            .insert(db)
            .await
            .expect("insert snapshot");
            if parent.is_none() {
                roots.push(id);
            }
            parent = Some(id);
        }
    }
    for d in 0..rows.deliveries {
        let id = Uuid::new_v4();
        let at = now + chrono::Duration::milliseconds(d as i64);
        webhook_delivery::ActiveModel {
            id: Set(id),
            endpoint_id: Set(endpoint),
            message_id: Set(format!("msg_{id}")),
            event_type: Set("snapshot.pushed".into()),
            payload: Set("{}".into()),
            status: Set(DeliveryStatus::Succeeded),
            attempts: Set(rows.attempts as i32),
            created_at: Set(at),
            ..Default::default()
        }
        .insert(db)
        .await
        .expect("insert delivery");
        for _ in 0..rows.attempts {
            webhook_attempt::ActiveModel {
                delivery_id: Set(id),
                attempted_at: Set(at),
                status_code: Set(Some(200)),
                latency_ms: Set(3),
                ..Default::default()
            }
            .insert(db)
            .await
            .expect("insert attempt");
        }
    }
    roots
}

/// Every query the speaker console sends (read from its own
/// `js/queries.js`) costs the same number of SQL statements for a handful
/// of rows as for pages full of them: no query per row anywhere in the
/// console. Mutations act on one object; subscriptions are not queries;
/// the preview asks an agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_console_query_costs_the_same_for_a_few_rows_and_for_many() {
    use entity::webhook_endpoint;
    let app = app().await;
    let now = Utc::now();
    let endpoint = Uuid::new_v4();
    webhook_endpoint::ActiveModel {
        id: Set(endpoint),
        url: Set("https://events.example/hook".into()),
        description: Set(None),
        event_types: Set(json!(["snapshot.pushed"])),
        enabled: Set(true),
        secret: Set("whsec_test".into()),
        created_by: Set("root".into()),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    }
    .insert(&app.state.db)
    .await
    .expect("insert endpoint");
    let alice = Caller {
        sub: "alice",
        role: Role::Speaker,
        namespaces: &["workshop"],
    };
    let documents: Vec<_> = api::console::documents::documents()
        .into_iter()
        .filter(|d| d.text.trim_start().starts_with("query ") && d.name != "PREVIEW_SNAPSHOT")
        .collect();
    let speaker_documents = [
        "ME",
        "FEATURES",
        "DESKTOPS",
        "CONTAINER",
        "SNAPSHOT",
        "FAMILY_ROOT",
        "FAMILY",
        "HISTORY",
    ];

    // Each document's statement counts, per caller, for the rows so far.
    let measure = async |family_root: Uuid, newest: Uuid| {
        let mut counts = std::collections::BTreeMap::new();
        for document in &documents {
            let variables = match document.name.as_str() {
                "CONTAINER" => json!({"node": "node-1"}),
                "SNAPSHOT" | "FAMILY_ROOT" => json!({"id": newest}),
                "FAMILY" => json!({"id": family_root}),
                "HISTORY" => json!({"first": 20, "filter": {}}),
                _ => json!({}),
            };
            let callers: &[&Caller] = if speaker_documents.contains(&document.name.as_str()) {
                &[&ADMIN, &alice]
            } else {
                &[&ADMIN]
            };
            for who in callers {
                let (_, statements) = execute(&app, who, &document.text, variables.clone()).await;
                counts.insert(
                    format!("{} as {}", document.name, who.sub),
                    statements.len(),
                );
            }
        }
        counts
    };

    let few = ConsoleRows {
        containers: 0..3,
        generations: 2,
        nodes: 1..3,
        deliveries: 3,
        attempts: 1,
    };
    let roots = seed_console(&app, &few, endpoint).await;
    let newest = |app: &App| {
        let db = app.state.db.clone();
        async move {
            use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
            entity::snapshot::Entity::find()
                .filter(entity::snapshot::Column::RequestedBy.eq("alice"))
                .order_by_desc(entity::snapshot::Column::CreatedAt)
                .one(&db)
                .await
                .unwrap()
                .unwrap()
                .id
        }
    };
    let before = measure(roots[0], newest(&app).await).await;

    let many = ConsoleRows {
        containers: 3..48,
        generations: 6,
        nodes: 3..40,
        deliveries: 30,
        attempts: 3,
    };
    let roots = seed_console(&app, &many, endpoint).await;
    let after = measure(roots[1], newest(&app).await).await;
    println!("SQL statements per console document (few rows -> many rows):");
    for (name, count) in &before {
        println!("  {name}: {count} -> {}", after[name]);
    }
    assert_eq!(
        before, after,
        "a console document's cost grew with its rows"
    );
    assert!(before.len() >= 15, "{before:?}");
}

/// Scan reports on a list: the counts come with the rows (no statement),
/// and the findings of a whole page are one statement, whatever its size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_findings_of_a_list_cost_one_query() {
    use entity::snapshot_findings;
    let app = app().await;
    let ids = lineages(&app).await;
    let report = json!({"findings": [{"path": "/root/.netrc", "rule": "netrc-file",
        "severity": "SECRET", "line": null, "size": null, "suggestedExclude": null}],
        "truncated": false});
    for id in ids.iter().flatten() {
        snapshot_findings::ActiveModel {
            id: Set(*id),
            findings: Set(Some(report.clone())),
            acknowledged_findings: Set(None),
        }
        .update(&app.state.db)
        .await
        .expect("store a report");
        snapshot::ActiveModel {
            id: Set(*id),
            finding_count: Set(Some(1)),
            secret_finding_count: Set(Some(1)),
            ..Default::default()
        }
        .update(&app.state.db)
        .await
        .expect("store the counts");
    }
    let plain = "query($first: Int!) { snapshots(first: $first) { edges { node { id } } } }";
    let counts = "query($first: Int!) { snapshots(first: $first) {
        edges { node { id findings { count secretCount warningCount } } } } }";
    let lists = "query($first: Int!) { snapshots(first: $first) {
        edges { node { id findings { truncated findings(first: 5) { path rule } } } } } }";
    let mut sizes = Vec::new();
    for first in [10, 50] {
        let (_, plain_sql) = execute(&app, &ADMIN, plain, json!({"first": first})).await;
        let (with_counts, counts_sql) =
            execute(&app, &ADMIN, counts, json!({"first": first})).await;
        let (with_lists, lists_sql) = execute(&app, &ADMIN, lists, json!({"first": first})).await;
        for edge in with_counts["snapshots"]["edges"].as_array().unwrap() {
            assert_eq!(edge["node"]["findings"]["secretCount"], 1);
        }
        let edges = with_lists["snapshots"]["edges"].as_array().unwrap();
        assert_eq!(edges.len(), first);
        for edge in edges {
            assert_eq!(
                edge["node"]["findings"]["findings"][0]["path"],
                "/root/.netrc"
            );
        }
        assert_eq!(counts_sql.len(), plain_sql.len(), "{counts_sql:#?}");
        assert_eq!(lists_sql.len(), plain_sql.len() + 1, "{lists_sql:#?}");
        sizes.push((first, plain_sql.len(), lists_sql.len()));
    }
    println!("rows, statements without and with findings: {sizes:?}");
}
