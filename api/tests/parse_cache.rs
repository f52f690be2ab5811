//! The API reuses parsed documents of short query texts it has seen
//! (`http/parse_cache.rs`). A document answered from that cache is still
//! checked like a fresh one: a hostile query refused the first time is
//! refused the second time too, and a broken one keeps its parse error.
//!
//! Needs PostgreSQL (`DATABASE_URL`).

mod support;

use serde_json::json;
use support::{ADMIN, App};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_document_is_checked_again_on_every_request() {
    let app = App::start().await;
    let deep = format!(
        "{{ snapshots(first: 1) {{ edges {{ node {{ {}id{} }} }} }} }}",
        "parent { ".repeat(40),
        " }".repeat(40)
    );
    assert!(
        deep.len() < 2048,
        "short enough to be cached: {}",
        deep.len()
    );
    let costly =
        "{ a: snapshots(first: 100) { edges { node { ancestors(first: 1000) { id } } } } }";
    let broken = "{ snapshots(first: 1) { edges { node { id ";
    for text in [deep.as_str(), costly, broken] {
        let mut answers = Vec::new();
        for _ in 0..3 {
            let body = app.graphql(ADMIN, text, json!({})).await;
            assert!(body["data"].is_null(), "{text}: {body}");
            assert_eq!(
                body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
                "{body}"
            );
            answers.push(body["errors"][0]["message"].clone());
        }
        assert!(
            answers.windows(2).all(|w| w[0] == w[1]),
            "{text}: the cached document was answered otherwise: {answers:?}"
        );
    }
    // A good one answers the same from the cache.
    let good = "{ me { sub role } }";
    let first = app.data(ADMIN, good, json!({})).await;
    let second = app.data(ADMIN, good, json!({})).await;
    assert_eq!(first, second);
    assert_eq!(first["me"]["sub"], "root");
}
