//! The connections `containers`, `nodes` and `webhookDeliveries` on the
//! real API and Postgres, rows written straight into the database: pages
//! in order without gaps or repeats, the last page, cursors that are
//! forged (another list's, hand-edited, NUL, huge, a time Postgres
//! refuses) answered BAD_USER_INPUT, `first` over its cap and aliased
//! pages refused before they run, positions that moved between two pages
//! (rows deleted and added meanwhile, pages read while rows are written),
//! and each caller seeing only what they may.

use std::collections::BTreeSet;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use e2e_tests::stack::{Api, ApiOptions, Database, error_code, page_nodes, rows};
use serde_json::{Value, json};

const CONTAINERS: &str = "query($first: Int!, $after: String, $ns: String) { \
    containers(first: $first, after: $after, podNamespace: $ns) { totalCount \
    edges { cursor node { id node owner podNamespace } } pageInfo { hasNextPage endCursor } } }";
const NODES: &str = "query($first: Int!, $after: String) { nodes(first: $first, after: $after) { \
    totalCount edges { cursor node { name } } pageInfo { hasNextPage endCursor } } }";
const DELIVERIES: &str = "query($first: Int!, $after: String, $endpoint: ID) { \
    webhookDeliveries(first: $first, after: $after, endpoint: $endpoint) { \
    edges { cursor node { id createdAt } } pageInfo { hasNextPage endCursor } } }";

async fn start() -> (Database, Api) {
    let db = Database::fresh();
    let api = Api::start(ApiOptions::postgres(&db, "registry.test", 600)).await;
    (db, api)
}

/// One list read to its end, `first` at a time.
struct Walk {
    nodes: Vec<Value>,
    pages: usize,
    /// The cursor of each element, in order.
    cursors: Vec<String>,
}

/// Reads `field` page by page with `variables` (plus `first` and
/// `after`), checking each page's shape: at most `first` edges, the end
/// cursor is the last edge's, only the last page says no next page.
async fn walk(
    api: &Api,
    token: &str,
    query: &str,
    field: &str,
    variables: Value,
    first: usize,
) -> Walk {
    let mut walked = Walk {
        nodes: Vec::new(),
        pages: 0,
        cursors: Vec::new(),
    };
    let mut after = Value::Null;
    loop {
        let mut vars = variables.clone();
        vars["first"] = json!(first);
        vars["after"] = after.clone();
        let page = api.data(token, query, vars).await[field].clone();
        walked.pages += 1;
        assert!(walked.pages < 1_000, "the pages never end: {page}");
        let edges = page["edges"].as_array().expect("edges").clone();
        assert!(edges.len() <= first, "{page}");
        let end = &page["pageInfo"]["endCursor"];
        match edges.last() {
            Some(last) => assert_eq!(&last["cursor"], end, "{page}"),
            None => assert!(end.is_null(), "{page}"),
        }
        walked.cursors.extend(
            edges
                .iter()
                .map(|e| e["cursor"].as_str().expect("cursor").to_string()),
        );
        walked.nodes.extend(page_nodes(&page));
        if page["pageInfo"]["hasNextPage"] != true {
            return walked;
        }
        assert_eq!(edges.len(), first, "a page before the last is full: {page}");
        after = end.clone();
    }
}

fn texts(nodes: &[Value], key: &str) -> Vec<String> {
    nodes
        .iter()
        .map(|n| n[key].as_str().expect(key).to_string())
        .collect()
}

/// A cursor written by hand: base64url of `text`.
fn hand_made(text: &str) -> String {
    URL_SAFE_NO_PAD.encode(text)
}

/// Every cursor is refused with BAD_USER_INPUT and no data.
async fn refused_cursors(api: &Api, token: &str, query: &str, cursors: &[String]) {
    for cursor in cursors {
        let body = api
            .graphql(Some(token), query, json!({"first": 5, "after": cursor}))
            .await;
        let shown: String = cursor.chars().take(80).collect();
        assert_eq!(error_code(&body), "BAD_USER_INPUT", "{shown}: {body}");
        assert!(body["data"].is_null(), "{shown}: {body}");
    }
}

/// Cursors of no list's making, whatever list they are handed to.
fn forged_for_any_list() -> Vec<String> {
    vec![
        "not a cursor!".into(),
        hand_made("containers"),
        hand_made(":"),
        hand_made("{}"),
        // Huge (the body limit is 1 MiB).
        "Q".repeat(200_000),
        // Not UTF-8.
        URL_SAFE_NO_PAD.encode([0xc3, 0x28, b':', b'{', b'}']),
    ]
}

#[tokio::test]
async fn containers_page_by_node_and_id_and_a_speaker_sees_only_theirs() {
    let (db, api) = start().await;
    let root = api.token("root", "admin", &[]);
    let alice = api.token("alice", "speaker", &["ws"]);
    for node in ["node-a", "node-b"] {
        rows::insert_node(&db, node);
    }
    // Alice: 7 desktops in her namespace; bob: 5 there; alice: 3 in a
    // namespace her token does not name.
    let mut alices = Vec::new();
    for i in 0..7 {
        let node = if i % 2 == 0 { "node-a" } else { "node-b" };
        rows::insert_container(&db, node, &format!("alice-{i}"), "ws", "alice");
        alices.push((node.to_string(), format!("alice-{i}")));
    }
    for i in 0..5 {
        rows::insert_container(&db, "node-a", &format!("bob-{i}"), "ws", "bob");
    }
    for i in 0..3 {
        rows::insert_container(
            &db,
            "node-b",
            &format!("alice-private-{i}"),
            "private",
            "alice",
        );
    }
    alices.sort();

    // Admin: all 15, by node then id, in pages of 4: 4 + 4 + 4 + 3.
    let all = walk(&api, &root, CONTAINERS, "containers", json!({}), 4).await;
    assert_eq!(all.pages, 4);
    let keys: Vec<(String, String)> = all
        .nodes
        .iter()
        .map(|c| {
            (
                c["node"].as_str().unwrap().into(),
                c["id"].as_str().unwrap().into(),
            )
        })
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(keys, sorted, "in order, each once");
    assert_eq!(keys.len(), 15);
    let first_page = api.data(&root, CONTAINERS, json!({"first": 4})).await;
    assert_eq!(first_page["containers"]["totalCount"], 15);

    // Alice: her 7 in ws, nothing else, in pages of 3; totalCount counts
    // only hers, on every page.
    let hers = walk(&api, &alice, CONTAINERS, "containers", json!({}), 3).await;
    assert_eq!(hers.pages, 3);
    let seen: Vec<(String, String)> = hers
        .nodes
        .iter()
        .map(|c| {
            assert_eq!(c["owner"], "alice", "{c}");
            assert_eq!(c["podNamespace"], "ws", "{c}");
            (
                c["node"].as_str().unwrap().into(),
                c["id"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(seen, alices);
    let counted = api
        .data(
            &alice,
            CONTAINERS,
            json!({"first": 3, "after": hers.cursors[2]}),
        )
        .await;
    assert_eq!(counted["containers"]["totalCount"], 7);
    // A filter is counted too.
    let private = api
        .data(&root, CONTAINERS, json!({"first": 1, "ns": "private"}))
        .await;
    assert_eq!(private["containers"]["totalCount"], 3);

    // After the last element: an empty last page.
    let end = api
        .data(
            &alice,
            CONTAINERS,
            json!({"first": 3, "after": hers.cursors.last()}),
        )
        .await;
    assert_eq!(end["containers"]["edges"], json!([]));
    assert_eq!(
        end["containers"]["pageInfo"],
        json!({"hasNextPage": false, "endCursor": null})
    );

    // An admin's cursor in the middle of bob's desktops, handed to alice:
    // a position is not a permission; she still sees only hers after it.
    let bobs_position = all
        .nodes
        .iter()
        .position(|c| c["id"] == "bob-2")
        .expect("bob-2");
    let after_bob = api
        .data(
            &alice,
            CONTAINERS,
            json!({"first": 100, "after": all.cursors[bobs_position]}),
        )
        .await;
    for c in page_nodes(&after_bob["containers"]) {
        assert_eq!(c["owner"], "alice", "{c}");
        assert!(c["node"].as_str().unwrap() > "node-a" || c["id"].as_str().unwrap() > "bob-2");
    }

    // A made-up but well-formed position past everything: an empty page.
    let past = hand_made(r#"containers:{"node":"zzz","id":"zzz"}"#);
    let nothing = api
        .data(&root, CONTAINERS, json!({"first": 5, "after": past}))
        .await;
    assert_eq!(nothing["containers"]["edges"], json!([]));

    // Forged cursors.
    let nodes_cursor = walk(&api, &root, NODES, "nodes", json!({}), 1)
        .await
        .cursors[0]
        .clone();
    let mut forged = forged_for_any_list();
    forged.extend([
        // Another list's cursor.
        nodes_cursor,
        // The right list, hand-edited JSON (spaces, an extra field, a
        // missing one, a wrong type).
        hand_made(r#"containers:{"node": "node-a", "id": "alice-0"}"#),
        hand_made(r#"containers:{"node":"node-a","id":"alice-0","owner":"bob"}"#),
        hand_made(r#"containers:{"node":"node-a"}"#),
        hand_made(r#"containers:{"node":"node-a","id":7}"#),
        // NUL, which Postgres refuses in text, and an overlong name.
        hand_made(r#"containers:{"node":"node-a\u0000","id":"x"}"#),
        hand_made(&format!(
            r#"containers:{{"node":"{}","id":"x"}}"#,
            "n".repeat(10_000)
        )),
        // A real cursor, padded, or with a character of the other base64
        // alphabet.
        format!("{}==", all.cursors[0]),
        format!("+{}", &all.cursors[0][1..]),
    ]);
    refused_cursors(&api, &root, CONTAINERS, &forged).await;
    // Still serving after all that.
    assert_eq!(
        api.data(&root, CONTAINERS, json!({"first": 1})).await["containers"]["totalCount"],
        15
    );
}

#[tokio::test]
async fn nodes_page_by_name_for_every_caller_and_none_without_a_token() {
    let (db, api) = start().await;
    let root = api.token("root", "admin", &[]);
    let alice = api.token("alice", "speaker", &["ws"]);
    let mut names: Vec<String> = (0..11).map(|i| format!("node-{i:02}")).collect();
    for name in &names {
        rows::insert_node(&db, name);
    }
    names.sort();
    for (token, first) in [(&root, 5), (&alice, 4), (&alice, 11), (&root, 100)] {
        let walked = walk(&api, token, NODES, "nodes", json!({}), first).await;
        assert_eq!(texts(&walked.nodes, "name"), names, "first {first}");
        assert_eq!(
            walked.pages,
            names.len().div_ceil(first).max(1),
            "first {first}"
        );
    }
    let page = api.data(&alice, NODES, json!({"first": 2})).await;
    assert_eq!(page["nodes"]["totalCount"], 11);
    assert_eq!(page["nodes"]["pageInfo"]["hasNextPage"], true);

    let anonymous = api.graphql(None, NODES, json!({"first": 2})).await;
    assert_eq!(error_code(&anonymous), "UNAUTHENTICATED", "{anonymous}");

    let containers_cursor = hand_made(r#"containers:{"node":"node-00","id":"x"}"#);
    let mut forged = forged_for_any_list();
    forged.extend([
        containers_cursor,
        hand_made(r#"nodes:{"name":"node-01","x":1}"#),
        hand_made(r#"nodes:{"name":null}"#),
        hand_made("nodes:{\"name\":\"a\\u0000\"}"),
    ]);
    refused_cursors(&api, &alice, NODES, &forged).await;
}

#[tokio::test]
async fn webhook_deliveries_page_newest_first_for_admins_only() {
    let (db, api) = start().await;
    let root = api.token("root", "admin", &[]);
    let alice = api.token("alice", "speaker", &["ws"]);
    let endpoint = rows::insert_disabled_endpoint(&db);
    let other = rows::insert_disabled_endpoint(&db);
    // 12 deliveries, 4 of them created in the same microsecond (a tie the
    // id breaks), and 3 to another endpoint.
    let mut ids = BTreeSet::new();
    for seconds_ago in [10, 20, 30, 40, 50, 60, 70, 80] {
        ids.insert(rows::insert_finished_delivery(&db, &endpoint, seconds_ago));
    }
    let tied: Vec<String> = db
        .query(&format!(
            "INSERT INTO webhook_deliveries (id, endpoint_id, message_id, event_type, payload, \
             status, attempts, created_at) SELECT g, '{endpoint}', 'msg_' || replace(g::text, '-', ''), \
             'ping', '{{}}', 'FAILED', 8, timestamptz '2026-01-01 00:00:00+00' \
             FROM (SELECT gen_random_uuid() AS g FROM generate_series(1, 4)) s RETURNING id"
        ))
        .lines()
        .map(str::to_string)
        .collect();
    ids.extend(tied);
    for seconds_ago in [5, 15, 25] {
        rows::insert_finished_delivery(&db, &other, seconds_ago);
    }

    let walked = walk(
        &api,
        &root,
        DELIVERIES,
        "webhookDeliveries",
        json!({"endpoint": endpoint}),
        5,
    )
    .await;
    assert_eq!(walked.pages, 3);
    let seen = texts(&walked.nodes, "id");
    assert_eq!(
        seen.iter().cloned().collect::<BTreeSet<_>>(),
        ids,
        "each once"
    );
    assert_eq!(seen.len(), 12);
    // Newest first; among equal times, by id, descending.
    let order: Vec<(String, String)> = walked
        .nodes
        .iter()
        .map(|d| {
            (
                d["createdAt"].as_str().unwrap().into(),
                d["id"].as_str().unwrap().into(),
            )
        })
        .collect();
    let mut expected = order.clone();
    expected.sort_by(|a, b| b.cmp(a));
    assert_eq!(order, expected);
    // Without the endpoint filter: all 15.
    let everything = walk(&api, &root, DELIVERIES, "webhookDeliveries", json!({}), 7).await;
    assert_eq!(everything.nodes.len(), 15);

    // Speakers see none: FORBIDDEN, with or without a cursor.
    for after in [Value::Null, json!(walked.cursors[0])] {
        let body = api
            .graphql(
                Some(&alice),
                DELIVERIES,
                json!({"first": 5, "after": after}),
            )
            .await;
        assert_eq!(error_code(&body), "FORBIDDEN", "{body}");
    }

    let mut forged = forged_for_any_list();
    forged.extend([
        hand_made(r#"containers:{"node":"n","id":"x"}"#),
        // Not a UUID; a time Postgres cannot hold (before 4713 BC) and one
        // past chrono's range.
        hand_made(r#"webhookDeliveries:{"at":0,"id":"x"}"#),
        hand_made(r#"webhookDeliveries:{"at":-250000000000000000,"id":"00000000-0000-0000-0000-000000000000"}"#),
        hand_made(r#"webhookDeliveries:{"at":9223372036854775807,"id":"00000000-0000-0000-0000-000000000000"}"#),
        hand_made(r#"webhookDeliveries:{"at":"2026-01-01","id":"00000000-0000-0000-0000-000000000000"}"#),
    ]);
    refused_cursors(&api, &root, DELIVERIES, &forged).await;
}

#[tokio::test]
async fn first_over_its_cap_and_aliased_pages_are_refused_before_they_run() {
    let (db, api) = start().await;
    let root = api.token("root", "admin", &[]);
    rows::insert_node(&db, "node-a");
    for (query, over) in [(CONTAINERS, 101), (NODES, 101), (DELIVERIES, 501)] {
        for first in [over, 0, -1] {
            let body = api
                .graphql(Some(&root), query, json!({"first": first}))
                .await;
            assert_eq!(error_code(&body), "BAD_USER_INPUT", "first {first}: {body}");
            assert!(body["data"].is_null(), "{body}");
        }
    }
    // The largest pages, aliased ten times: over the complexity limit.
    for field in [
        "containers(first: 100) { edges { node { id } } }",
        "nodes(first: 100) { edges { node { name } } }",
        "webhookDeliveries(first: 500) { edges { node { id } } }",
    ] {
        let query = format!(
            "{{ {} }}",
            (0..10)
                .map(|i| format!("a{i}: {field}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        let body = api.graphql(Some(&root), &query, json!({})).await;
        assert_eq!(error_code(&body), "BAD_USER_INPUT", "{field}: {body}");
        let message = body["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(message.contains("too complex"), "{field}: {body}");
    }
}

/// Keyset pages: a cursor is a position, so rows deleted and added between
/// two pages (an agent replaces its whole inventory at once) neither
/// repeat nor hide what comes after it; and pages read while rows are
/// written stay in order without repeats.
#[tokio::test]
async fn pages_continue_from_their_position_while_rows_change() {
    let (db, api) = start().await;
    let root = api.token("root", "admin", &[]);
    rows::insert_node(&db, "node-a");
    for i in 0..10 {
        rows::insert_container(&db, "node-a", &format!("c{i:02}"), "ws", "alice");
    }
    let first = api.data(&root, CONTAINERS, json!({"first": 4})).await;
    let ids = texts(&page_nodes(&first["containers"]), "id");
    assert_eq!(ids, ["c00", "c01", "c02", "c03"]);
    let cursor = first["containers"]["pageInfo"]["endCursor"].clone();

    // Meanwhile: the row at the cursor goes, rows before and after it come.
    db.query("DELETE FROM containers WHERE id = 'c03'");
    rows::insert_container(&db, "node-a", "c015", "ws", "alice");
    rows::insert_container(&db, "node-a", "c035", "ws", "alice");
    let next = api
        .data(&root, CONTAINERS, json!({"first": 100, "after": cursor}))
        .await;
    let ids = texts(&page_nodes(&next["containers"]), "id");
    assert_eq!(ids, ["c035", "c04", "c05", "c06", "c07", "c08", "c09"]);

    // Four readers walk the list while a writer adds 40 rows.
    let writer = {
        let url = db.url.clone();
        tokio::task::spawn_blocking(move || {
            for i in 0..40 {
                let sql = format!(
                    "INSERT INTO containers (node, id, image, state, snapshotter, pod_namespace, \
                     updated_at, owner) VALUES ('node-a', 'w{i:02}', 'img', 'running', \
                     'overlayfs', 'ws', now(), 'alice')"
                );
                let status = std::process::Command::new("psql")
                    .args([url.as_str(), "-v", "ON_ERROR_STOP=1", "-qc", &sql])
                    .status()
                    .expect("psql");
                assert!(status.success());
            }
        })
    };
    let readers = (0..4).map(|_| walk(&api, &root, CONTAINERS, "containers", json!({}), 3));
    let walks = futures::future::join_all(readers).await;
    writer.await.expect("writer");
    for walked in walks {
        let ids = texts(&walked.nodes, "id");
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(ids, sorted, "in order, each once");
        // Every row that was there before the writer started is there.
        for id in ["c00", "c015", "c035", "c09"] {
            assert!(ids.iter().any(|i| i == id), "{id} missing: {ids:?}");
        }
    }
}
