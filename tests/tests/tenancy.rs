//! Two speakers sharing one namespace (the README's own setup: every token
//! names `workshop`) on the real API, Postgres, agent, containerd and
//! registry. Each desktop is a pod started the CRI way, its owner on the
//! pod's sandbox.
//!
//! By default a speaker reaches only their own desktops and snapshots:
//! everything of the other's (containers, createSnapshot, cancelSnapshot,
//! snapshot, snapshots, lineage fields, subscription events) is NOT_FOUND or
//! empty. `--access-scope namespace` restores namespace-wide access.

use std::time::Duration;

use e2e_tests::stack::{
    Agent, Api, ApiOptions, Database, Subscription, documents, error_code, page_list, sorted_ids,
};
use e2e_tests::{Ctr, TestEnv, unique};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(90);

const LINEAGE: &str = "query($id: ID!) { snapshot(id: $id) { id owner requestedBy \
    parent { id } children { id } ancestors { id } descendants { id } } }";
/// `filter.owner` is the requester (named before desktops had owners).
const LIST: &str =
    "query($by: String) { snapshots(first: 100, filter: {owner: $by}) { edges { node { id } } } }";
const CANCEL: &str = "mutation($id: ID!) { cancelSnapshot(id: $id) { id status } }";
const ONE_EVENTS: &str = "subscription($id: ID) { snapshotEvents(id: $id) { snapshotId status } }";

async fn api(db: &Database, env: &TestEnv, extra: &[&str]) -> Api {
    Api::builder(ApiOptions::postgres(db, &env.registry, 20))
        .args(extra)
        .start()
        .await
}

fn edge_ids(data: &Value) -> Vec<String> {
    let mut ids: Vec<String> = data["snapshots"]["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("edges: {data}"))
        .iter()
        .map(|e| e["node"]["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

fn message(body: &Value) -> &str {
    body["errors"][0]["message"].as_str().unwrap_or_default()
}

async fn wait_containers(api: &Api, token: &str, want: &[&str]) -> Value {
    api.wait_for(token, documents::CONTAINERS, json!({}), WAIT, |d| {
        want.iter().all(|id| {
            page_list(&d["containers"])
                .as_array()
                .is_some_and(|l| l.iter().any(|c| c["id"] == *id))
        })
    })
    .await
}

async fn create(api: &Api, token: &str, container: &str, target: &str) -> String {
    api.create_snapshot_with(token, json!({"containerId": container, "target": target}))
        .await
}

async fn wait_pushed(api: &Api, token: &str, id: &str) -> Value {
    let done = api.wait_for_end(token, id, WAIT).await;
    assert_eq!(done["status"], "PUSHED", "{done}");
    done
}

/// Snapshot ids a subscription delivered until it was quiet for `quiet`.
async fn drain_ids(events: &mut Subscription, quiet: Duration) -> Vec<String> {
    let events = events.drain(quiet).await;
    events
        .iter()
        .map(|e| {
            e["snapshotEvents"]["snapshotId"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speakers_sharing_a_namespace_reach_only_their_own_desktops_and_snapshots() {
    let env = TestEnv::get();
    let db = Database::fresh();
    let api = api(&db, &env, &[]).await;
    let namespace = unique("tenancy");
    let ctr = Ctr::new(&env.containerd_socket, &namespace);
    let busybox = ctr.import_busybox("overlayfs");
    let desk_a = unique("alice");
    let desk_b = unique("bob");
    ctr.desktop(&desk_a, busybox)
        .pod("desktop-a")
        .owner("alice")
        .start();
    // Bob's desktop runs an image whose maker wrote `LABEL dcs.io/owner=alice`
    // (containerd copies it onto the container): it stays bob's.
    ctr.desktop(&desk_b, busybox)
        .pod("desktop-b")
        .owner("bob")
        .image_label("dcs.io/owner", "alice")
        .start();
    let agent = Agent::start(&env, &api, "node-tenancy", &namespace);
    ctr.exec(&desk_a, "echo alice > /root/who");
    ctr.exec(&desk_b, "echo bob > /root/who");

    let alice = api.token("alice", "speaker", &["workshop"]);
    let bob = api.token("bob", "speaker", &["workshop"]);
    let root = api.token("root", "admin", &[]);

    // Containers: the admin sees both pods (never a sandbox), with the
    // owners of their sandboxes; each speaker sees their own.
    let all = wait_containers(&api, &root, &[&desk_a, &desk_b]).await;
    let mut both = vec![desk_a.clone(), desk_b.clone()];
    both.sort();
    assert_eq!(sorted_ids(&page_list(&all["containers"])), both, "{all}");
    let owners = api
        .data(
            &root,
            "{ containers { edges { node { id owner } } } }",
            json!({}),
        )
        .await;
    for c in page_list(&owners["containers"]).as_array().unwrap() {
        let want = if c["id"] == desk_a.as_str() {
            "alice"
        } else {
            "bob"
        };
        assert_eq!(c["owner"], want, "{owners}");
    }
    let seen = api.data(&alice, documents::CONTAINERS, json!({})).await;
    assert_eq!(
        sorted_ids(&page_list(&seen["containers"])),
        vec![desk_a.clone()],
        "{seen}"
    );
    let seen = api.data(&bob, documents::CONTAINERS, json!({})).await;
    assert_eq!(
        sorted_ids(&page_list(&seen["containers"])),
        vec![desk_b.clone()],
        "{seen}"
    );
    let carol = api.token("carol", "speaker", &["workshop"]);
    let seen = api.data(&carol, documents::CONTAINERS, json!({})).await;
    assert_eq!(page_list(&seen["containers"]), json!([]), "{seen}");

    // createSnapshot of the other's desktop, by id and by pod: exactly like
    // a container that does not exist.
    let reg = &env.registry;
    let repo = unique("desk");
    let alice_target = format!("{reg}/workshops/alice/{repo}:v1");
    let missing = api
        .graphql(
            Some(&alice),
            documents::CREATE,
            json!({"input": {"containerId": "no-such-container", "target": alice_target}}),
        )
        .await;
    assert_eq!(error_code(&missing), "NOT_FOUND", "{missing}");
    for input in [
        json!({"containerId": desk_b, "target": alice_target}),
        json!({"podNamespace": "workshop", "podName": "desktop-b", "target": alice_target}),
    ] {
        let body = api
            .graphql(Some(&alice), documents::CREATE, json!({"input": input}))
            .await;
        assert_eq!(error_code(&body), "NOT_FOUND", "{input}: {body}");
        assert_eq!(message(&body), message(&missing), "{body}");
    }
    // Nor can an image claim a desktop through its labels.
    let body = api
        .graphql(
            Some(&alice),
            documents::CREATE,
            json!({"input": {"containerId": desk_a, "target": alice_target,
                             "changes": ["LABEL dcs.io/owner=bob"]}}),
        )
        .await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
    assert_eq!(db.query("SELECT count(*) FROM snapshots"), "0");

    // Each snapshots their own; the subscriptions watch everything.
    let mut alice_events = api.subscribe(&alice, documents::EVENTS, json!({})).await;
    let mut bob_events = api.subscribe(&bob, documents::EVENTS, json!({})).await;
    let snap_a = create(&api, &alice, &desk_a, &alice_target).await;
    let pushed_a = wait_pushed(&api, &alice, &snap_a).await;

    // Bob starts a desktop from alice's image: his snapshot's parent is
    // alice's, which he may not see.
    let desk_c = unique("bob-on-alice");
    ctr.desktop(&desk_c, &alice_target)
        .pod("desktop-c")
        .owner("bob")
        .start();
    let seen = wait_containers(&api, &bob, &[&desk_c]).await;
    let c = page_list(&seen["containers"])
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == desk_c.as_str())
        .unwrap()
        .clone();
    assert_eq!(c["imageDigest"], pushed_a["manifestDigest"], "{seen}");
    let bob_target = format!("{reg}/workshops/bob/{repo}:v1");
    let snap_b = create(&api, &bob, &desk_c, &bob_target).await;
    wait_pushed(&api, &bob, &snap_b).await;
    assert_eq!(
        db.query(&format!(
            "SELECT requested_by || ' ' || owner || ' ' || (parent_id = '{snap_a}') \
             FROM snapshots WHERE id = '{snap_b}'"
        )),
        "bob bob true",
        "bob's snapshot is recorded as a child of alice's"
    );
    assert_eq!(
        db.query(&format!(
            "SELECT requested_by || ' ' || owner FROM snapshots WHERE id = '{snap_a}'"
        )),
        "alice alice"
    );

    // Reading, cancelling and following the other's snapshot: NOT_FOUND,
    // as for an id that does not exist.
    let nowhere = uuid::Uuid::new_v4().to_string();
    for (who, theirs) in [(&alice, &snap_b), (&bob, &snap_a)] {
        for (document, name) in [(documents::SNAPSHOT, "snapshot"), (CANCEL, "cancel")] {
            let body = api
                .graphql(Some(who.as_str()), document, json!({"id": theirs}))
                .await;
            let absent = api
                .graphql(Some(who.as_str()), document, json!({"id": nowhere}))
                .await;
            assert_eq!(error_code(&body), "NOT_FOUND", "{name}: {body}");
            assert_eq!(message(&body), message(&absent), "{name}: {body}");
        }
        let mut one = api.subscribe(who, ONE_EVENTS, json!({"id": theirs})).await;
        let answer = one
            .next_message(Duration::from_secs(10))
            .await
            .expect("an answer to the subscription");
        let errors = match answer["type"].as_str() {
            Some("next") => &answer["payload"]["errors"],
            Some("error") => &answer["payload"],
            _ => panic!("subscription to another's snapshot: {answer}"),
        };
        assert_eq!(errors[0]["extensions"]["code"], "NOT_FOUND", "{answer}");
    }

    // Lists hold only what the caller may see.
    let listed = api.data(&alice, LIST, json!({})).await;
    assert_eq!(edge_ids(&listed), vec![snap_a.clone()], "{listed}");
    let listed = api.data(&bob, LIST, json!({})).await;
    assert_eq!(edge_ids(&listed), vec![snap_b.clone()], "{listed}");
    let listed = api.data(&bob, LIST, json!({"by": "alice"})).await;
    assert_eq!(edge_ids(&listed), Vec::<String>::new(), "{listed}");
    let listed = api.data(&root, LIST, json!({})).await;
    let mut both = vec![snap_a.clone(), snap_b.clone()];
    both.sort();
    assert_eq!(edge_ids(&listed), both, "{listed}");

    // In a list, `parent { id }` (read as its id and visibility columns
    // only) and `parent { id status }` (whole rows) hide alike.
    for selection in ["parent { id }", "parent { id status }"] {
        let query =
            format!("{{ snapshots(first: 100) {{ edges {{ node {{ id {selection} }} }} }} }}");
        let parent_of_b = async |token: &str| {
            let listed = api.data(token, &query, json!({})).await;
            listed["snapshots"]["edges"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["node"]["id"] == snap_b.as_str())
                .map(|e| e["node"]["parent"].clone())
                .unwrap_or_else(|| panic!("snap_b listed: {listed}"))
        };
        assert_eq!(
            parent_of_b(&root).await["id"],
            snap_a.as_str(),
            "{selection}"
        );
        assert!(parent_of_b(&bob).await.is_null(), "{selection}");
    }

    // Lineage: the link is there (the admin sees it) but neither speaker
    // sees the other's end of it.
    let lineage = api.data(&root, LINEAGE, json!({"id": snap_a})).await;
    assert_eq!(
        sorted_ids(&lineage["snapshot"]["children"]),
        vec![snap_b.clone()]
    );
    assert_eq!(
        sorted_ids(&lineage["snapshot"]["descendants"]),
        vec![snap_b.clone()]
    );
    let lineage = api.data(&alice, LINEAGE, json!({"id": snap_a})).await;
    assert_eq!(lineage["snapshot"]["children"], json!([]), "{lineage}");
    assert_eq!(lineage["snapshot"]["descendants"], json!([]), "{lineage}");
    let lineage = api.data(&bob, LINEAGE, json!({"id": snap_b})).await;
    assert!(lineage["snapshot"]["parent"].is_null(), "{lineage}");
    assert_eq!(lineage["snapshot"]["ancestors"], json!([]), "{lineage}");
    assert_eq!(lineage["snapshot"]["owner"], "bob", "{lineage}");

    // Subscriptions delivered each speaker's own events only.
    let seen = drain_ids(&mut alice_events, Duration::from_secs(2)).await;
    assert!(seen.contains(&snap_a), "alice sees hers: {seen:?}");
    assert!(seen.iter().all(|id| id == &snap_a), "alice: {seen:?}");
    let seen = drain_ids(&mut bob_events, Duration::from_secs(2)).await;
    assert!(seen.contains(&snap_b), "bob sees his: {seen:?}");
    assert!(seen.iter().all(|id| id == &snap_b), "bob: {seen:?}");
    drop(agent);
}

/// `--access-scope namespace`: every pod of the speaker's namespaces, as
/// before owners; the desktop's owner still sees snapshots of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_wide_access_restores_sharing_within_a_namespace() {
    let env = TestEnv::get();
    let db = Database::fresh();
    let api = api(&db, &env, &["--access-scope", "namespace"]).await;
    let namespace = unique("tenancy-wide");
    let ctr = Ctr::new(&env.containerd_socket, &namespace);
    let busybox = ctr.import_busybox("overlayfs");
    let desk_a = unique("alice");
    let desk_b = unique("bob");
    ctr.desktop(&desk_a, busybox)
        .pod("desktop-a")
        .owner("alice")
        .start();
    ctr.desktop(&desk_b, busybox)
        .pod("desktop-b")
        .owner("bob")
        .start();
    let _agent = Agent::start(&env, &api, "node-wide", &namespace);
    let alice = api.token("alice", "speaker", &["workshop"]);
    let bob = api.token("bob", "speaker", &["workshop"]);
    let elsewhere = api.token("erin", "speaker", &["elsewhere"]);

    let seen = wait_containers(&api, &alice, &[&desk_a, &desk_b]).await;
    let mut both = vec![desk_a.clone(), desk_b.clone()];
    both.sort();
    assert_eq!(sorted_ids(&page_list(&seen["containers"])), both, "{seen}");
    let seen = api.data(&elsewhere, documents::CONTAINERS, json!({})).await;
    assert_eq!(page_list(&seen["containers"]), json!([]), "{seen}");

    // Alice snapshots bob's desktop; both see the snapshot, in lists too.
    let target = format!("{}/workshops/alice/{}:v1", env.registry, unique("bobs"));
    let snap = create(&api, &alice, &desk_b, &target).await;
    wait_pushed(&api, &alice, &snap).await;
    let body = api.data(&bob, LINEAGE, json!({"id": snap})).await;
    assert_eq!(body["snapshot"]["owner"], "bob", "{body}");
    assert_eq!(body["snapshot"]["requestedBy"], "alice", "{body}");
    let listed = api.data(&bob, LIST, json!({})).await;
    assert_eq!(edge_ids(&listed), vec![snap.clone()], "{listed}");
    // Bob may cancel it (his desktop); it has finished, so: CONFLICT.
    let body = api.graphql(Some(&bob), CANCEL, json!({"id": snap})).await;
    assert_eq!(error_code(&body), "CONFLICT", "{body}");
    // Carol, neither requester nor owner, sees it through the namespace,
    // as before owners existed, but may not cancel it.
    let carol = api.token("carol", "speaker", &["workshop"]);
    let listed = api.data(&carol, LIST, json!({})).await;
    assert_eq!(edge_ids(&listed), vec![snap.clone()], "{listed}");
    let body = api.graphql(Some(&carol), CANCEL, json!({"id": snap})).await;
    assert_eq!(error_code(&body), "FORBIDDEN", "{body}");
    // Outside the namespace, still nothing.
    let body = api
        .graphql(Some(&elsewhere), documents::SNAPSHOT, json!({"id": snap}))
        .await;
    assert_eq!(error_code(&body), "NOT_FOUND", "{body}");
}
