//! Per-speaker quotas on the real API: snapshots in flight, per day and
//! bytes kept, each refused with QUOTA_EXCEEDED and a sentence naming the
//! limit; requests racing at the limit (on one replica and across two)
//! pass exactly up to it; admins are not limited; `me` shows use and
//! limits. On Postgres and on the SQLite default. The node's agent is
//! unreachable, so accepted snapshots stay in flight.

use e2e_tests::fake_agent::{register_unreachable_node, summary};
use e2e_tests::stack::{Api, ApiOptions, Database, documents, error_code};
use serde_json::{Value, json};

const REGISTRY: &str = "127.0.0.1:5999";
const ME: &str =
    "{ me { quota { inFlight { used limit } perDay { used limit } bytes { used limit } } } }";

fn desktops(count: usize, owner: &str) -> Value {
    json!(
        (0..count)
            .map(|i| summary(
                &format!("{owner}-{i}"),
                "workshop",
                &format!("{owner}-pod-{i}"),
                Some(owner)
            ))
            .collect::<Vec<_>>()
    )
}

fn input(container: &str, tag: &str) -> Value {
    let owner = container.split('-').next().unwrap();
    json!({"input": {"containerId": container,
                     "target": format!("{REGISTRY}/workshops/{owner}/d:{tag}")}})
}

/// Sends `count` createSnapshot requests at once (containers `<owner>-0..`,
/// spread over `apis`); returns the codes ("ok" for a snapshot).
async fn race(apis: &[&Api], token: &str, owner: &str, count: usize) -> Vec<String> {
    let requests = (0..count).map(|i| {
        let api = apis[i % apis.len()];
        async move {
            let answer = api
                .graphql(
                    Some(token),
                    documents::CREATE,
                    input(&format!("{owner}-{i}"), &format!("r{i}")),
                )
                .await;
            if answer["data"]["createSnapshot"]["id"].is_string() {
                "ok".to_string()
            } else {
                error_code(&answer).to_string()
            }
        }
    });
    futures::future::join_all(requests).await
}

/// Asks for a snapshot of `container` that a quota refuses; checks the
/// code and that the sentence says each of `words`.
async fn assert_refused(api: &Api, token: &str, container: &str, words: &[&str]) {
    let refused = api
        .graphql(Some(token), documents::CREATE, input(container, "refused"))
        .await;
    assert_eq!(error_code(&refused), "QUOTA_EXCEEDED", "{refused}");
    let message = refused["errors"][0]["message"].as_str().unwrap();
    for word in words {
        assert!(message.contains(word), "{word:?} in {message}");
    }
}

/// One quota (`inFlight`, `perDay`, `bytes`) as `me` shows it.
async fn quota(api: &Api, token: &str, which: &str) -> Value {
    api.data(token, ME, json!({})).await["me"]["quota"][which].clone()
}

fn count(codes: &[String], code: &str) -> usize {
    codes.iter().filter(|c| *c == code).count()
}

async fn in_flight_limit_holds_under_a_race(apis: &[&Api]) {
    let api = apis[0];
    // alice-12 stays out of the race: the admin's snapshot below.
    register_unreachable_node(api, "node-q", desktops(13, "alice")).await;
    let alice = api.token("alice", "speaker", &["workshop"]);
    let codes = race(apis, &alice, "alice", 12).await;
    assert_eq!(count(&codes, "ok"), 3, "{codes:?}");
    assert_eq!(count(&codes, "QUOTA_EXCEEDED"), 9, "{codes:?}");
    assert_refused(api, &alice, "alice-11", &["in progress", "at most 3"]).await;
    assert_eq!(
        quota(api, &alice, "inFlight").await,
        json!({"used": "3", "limit": "3"})
    );
    assert_eq!(
        quota(api, &alice, "perDay").await,
        json!({"used": "3", "limit": "5"})
    );

    // An admin is not limited, and shows no limits.
    let admin = api.token("root", "admin", &[]);
    let answer = api
        .graphql(Some(&admin), documents::CREATE, input("alice-12", "admin"))
        .await;
    assert!(
        answer["data"]["createSnapshot"]["id"].is_string(),
        "{answer}"
    );
    let me = api.data(&admin, ME, json!({})).await;
    assert_eq!(me["me"]["quota"]["inFlight"]["limit"], Value::Null, "{me}");
}

fn quota_args() -> [&'static str; 6] {
    [
        "--quota-in-flight",
        "3",
        "--quota-per-day",
        "5",
        "--quota-bytes",
        "1000",
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_hold_on_postgres_across_two_replicas() {
    let db = Database::fresh();
    let a = Api::builder(ApiOptions::postgres(&db, REGISTRY, 600))
        .args(quota_args())
        .start()
        .await;
    let b = Api::builder(ApiOptions::postgres(&db, REGISTRY, 600))
        .replica_of(&a)
        .args(quota_args())
        .start()
        .await;
    in_flight_limit_holds_under_a_race(&[&a, &b]).await;

    // Per day: bob's earlier snapshots count whatever became of them.
    register_unreachable_node(&a, "node-b", desktops(8, "bob")).await;
    let bob = a.token("bob", "speaker", &["workshop"]);
    // In batches that stay under the in-flight limit of 3.
    for batch in [0..3, 3..5] {
        for i in batch {
            a.data(
                &bob,
                documents::CREATE,
                input(&format!("bob-{i}"), &format!("d{i}")),
            )
            .await;
        }
        db.query("UPDATE snapshots SET status = 'FAILED' WHERE requested_by = 'bob'");
    }
    assert_refused(&a, &bob, "bob-5", &["last 24 hours", "at most 5"]).await;
    // A day later the window has moved on.
    db.query("UPDATE snapshots SET created_at = created_at - interval '25 hours' WHERE requested_by = 'bob'");
    let answer = a
        .graphql(Some(&bob), documents::CREATE, input("bob-5", "d5"))
        .await;
    assert!(
        answer["data"]["createSnapshot"]["id"].is_string(),
        "{answer}"
    );

    // Bytes kept: the layer sizes of carol's pushed snapshots.
    register_unreachable_node(&a, "node-c", desktops(3, "carol")).await;
    let carol = a.token("carol", "speaker", &["workshop"]);
    a.data(&carol, documents::CREATE, input("carol-0", "v0"))
        .await;
    db.query(
        "UPDATE snapshots SET status = 'PUSHED', layer_size = 600 WHERE requested_by = 'carol'",
    );
    a.data(&carol, documents::CREATE, input("carol-1", "v1"))
        .await;
    db.query(
        "UPDATE snapshots SET status = 'PUSHED', layer_size = 600 WHERE requested_by = 'carol'",
    );
    assert_refused(&a, &carol, "carol-2", &["1200 bytes", "at most 1000"]).await;
    assert_eq!(
        quota(&a, &carol, "bytes").await,
        json!({"used": "1200", "limit": "1000"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_hold_on_the_sqlite_default() {
    let api = Api::builder(ApiOptions::sqlite(REGISTRY, 600))
        .args(quota_args())
        .start()
        .await;
    in_flight_limit_holds_under_a_race(&[&api]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_quotas_nothing_is_limited() {
    let db = Database::fresh();
    let api = Api::start(ApiOptions::postgres(&db, REGISTRY, 600)).await;
    register_unreachable_node(&api, "node-free", desktops(8, "alice")).await;
    let alice = api.token("alice", "speaker", &["workshop"]);
    let codes = race(&[&api], &alice, "alice", 8).await;
    assert_eq!(count(&codes, "ok"), 8, "{codes:?}");
    assert_eq!(
        quota(&api, &alice, "inFlight").await,
        json!({"used": "8", "limit": null})
    );
}
