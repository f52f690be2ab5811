//! The layer budget reaches the running `dcs-api` from its flag
//! (`--layer-budget`, through `ApiOptions::layer_budget`) and from its
//! environment (`DCS_LAYER_BUDGET`), and `flatten` from a request: each
//! lands in the snapshot's stored options, which the dispatcher sends.
//! Under a budget of 1 even a first snapshot has room for one layer only;
//! under the default (20) it has room for two. What the agent is sent and
//! what it reports are in `api/tests/flatten.rs`. The node's agent is
//! unreachable, so snapshots stay queued.

use e2e_tests::fake_agent::{register_unreachable_node, summary};
use e2e_tests::stack::{Api, ApiOptions, Database, documents};
use serde_json::json;

const REGISTRY: &str = "127.0.0.1:5999";

/// Snapshots a desktop of its own on `node` (with `flatten` when given);
/// the stored options' `singleLayer` and `flatten`, as `"x,y"`.
async fn stored_plan(api: &Api, db: &Database, node: &str, flatten: Option<bool>) -> String {
    let desk = format!("{node}-desk");
    let pod = format!("{node}-pod");
    let containers = json!([summary(&desk, "workshop", &pod, Some("alice"))]);
    register_unreachable_node(api, node, containers).await;
    let alice = api.token("alice", "speaker", &["workshop"]);
    let mut input =
        json!({"containerId": desk, "target": format!("{REGISTRY}/workshops/alice/d:{node}")});
    if let Some(flatten) = flatten {
        input["flatten"] = json!(flatten);
    }
    let created = api
        .data(&alice, documents::CREATE, json!({ "input": input }))
        .await;
    let id = created["createSnapshot"]["id"].as_str().unwrap();
    db.query(&format!(
        "SELECT (options->>'singleLayer') || ',' || (options->>'flatten') FROM snapshots \
         WHERE id = '{id}'"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layer_budget_comes_from_the_flag_or_the_environment() {
    let by_flag = Database::fresh();
    let api = Api::start(ApiOptions {
        layer_budget: Some(1),
        ..ApiOptions::postgres(&by_flag, REGISTRY, 600)
    })
    .await;
    assert_eq!(
        stored_plan(&api, &by_flag, "node-f", None).await,
        "true,false"
    );

    let by_env = Database::fresh();
    let api = Api::builder(ApiOptions::postgres(&by_env, REGISTRY, 600))
        .env("DCS_LAYER_BUDGET", "1")
        .start()
        .await;
    assert_eq!(
        stored_plan(&api, &by_env, "node-e", None).await,
        "true,false"
    );

    let by_default = Database::fresh();
    let api = Api::start(ApiOptions::postgres(&by_default, REGISTRY, 600)).await;
    assert_eq!(
        stored_plan(&api, &by_default, "node-d", None).await,
        "false,false"
    );
    assert_eq!(
        stored_plan(&api, &by_default, "node-a", Some(true)).await,
        "false,true"
    );
}
