//! Flatten and the layer budget through the API on real PostgreSQL, with
//! the agent played by the test: under `--layer-budget 2` a lineage's
//! second generation is sent with `singleLayer`, its third with `flatten`
//! onto the lineage's base image; `flatten: true` asked for is sent
//! whatever the budget; what the agent reports (`flattened`, the layer
//! counts) is shown on the snapshot and in its webhook. Hostile input:
//! `flatten` that is not a boolean, layer counts past INTEGER, counts that
//! contradict each other, a flatten with no known base.

mod support;

use dcs_protocol::FlattenBase;
use serde_json::{Value, json};
use support::{
    ALICE, Answer, App, CREATE, FakeAgent, desktop, error_code, pushed_event, webhook_endpoint,
};
use uuid::Uuid;

const SNAPSHOT: &str = "query($id: ID!) { snapshot(id: $id) {
    status flattened layerCount layersAboveBase failureCode failureReason parent { id } } }";

const BASE_IMAGE: &str = "registry.test/base:1";
const BASE_DIGEST: &str = "sha256:base";

/// Alice's desktop `desk-alice` running `image` (by digest, when known),
/// as its agent reports it.
fn running(image: &str, digest: Option<&str>) -> Vec<Value> {
    let mut desk = desktop("desk-alice", "alice", "overlayfs");
    desk["image"] = json!(image);
    desk["imageDigest"] = json!(digest);
    vec![desk]
}

fn target(tag: &str) -> String {
    format!("registry.test/workshops/alice/desk:{tag}")
}

fn lineage_base() -> Option<FlattenBase> {
    Some(FlattenBase {
        image: BASE_IMAGE.into(),
        digest: BASE_DIGEST.into(),
    })
}

/// The API under `--layer-budget 2` and alice's desktop on NODE, whose
/// agent is played by the test; the desktop runs the base image.
struct Workshop {
    app: App,
    agent: FakeAgent,
}

impl Workshop {
    async fn start() -> Self {
        let app = App::builder().layer_budget(2).start().await;
        webhook_endpoint(&app).await;
        let agent = FakeAgent::start(&app, Answer::error(404, "NOT_FOUND", "unused")).await;
        let desk = running(BASE_IMAGE, Some(BASE_DIGEST));
        app.register(&agent.url, agent.instance, desk).await;
        Self { app, agent }
    }

    /// The desktop now runs the image of the snapshot tagged `tag`
    /// (manifest `sha256:<tag>`).
    async fn runs(&self, tag: &str) {
        let digest = format!("sha256:{tag}");
        let desk = running(&target(tag), Some(&digest));
        self.app.inventory(self.agent.instance, desk).await;
    }

    /// A snapshot of the desktop to `tag` (with `flatten` when given):
    /// its id and what the agent is sent about layers (flatten,
    /// singleLayer).
    async fn snapshot(
        &self,
        tag: &str,
        flatten: Option<bool>,
    ) -> (Uuid, Option<FlattenBase>, bool) {
        let mut input = json!({"containerId": "desk-alice", "target": target(tag)});
        if let Some(flatten) = flatten {
            input["flatten"] = json!(flatten);
        }
        let (id, job) = self.app.create_snapshot(&self.agent, input).await;
        (id, job.flatten, job.single_layer)
    }

    /// Reports `id` pushed as `sha256:<tag>`, built on `base`
    /// (reference, digest), with the layer counts the agent reports;
    /// answers the agent's HTTP status and body.
    async fn push(&self, id: Uuid, tag: &str, base: (&str, &str), layers: Value) -> (u16, Value) {
        let mut event = pushed_event(&format!("sha256:{tag}"));
        event["baseImage"] = json!(base.0);
        event["baseDigest"] = json!(base.1);
        for (field, value) in layers.as_object().expect("layer fields") {
            event[field] = value.clone();
        }
        self.app.event(id, self.agent.instance, 1, event).await
    }

    /// Like `push`, on the image tagged `on`; the event must be taken.
    async fn pushed(&self, id: Uuid, tag: &str, on: &str, layers: Value) {
        let (image, digest) = (target(on), format!("sha256:{on}"));
        let (status, answer) = self.push(id, tag, (&image, &digest), layers).await;
        assert_eq!(status, 200, "{answer}");
    }

    /// The snapshot as alice sees it.
    async fn shown(&self, id: Uuid) -> Value {
        self.app.data(ALICE, SNAPSHOT, json!({ "id": id })).await["snapshot"].clone()
    }

    /// (flattened, layerCount, layersAboveBase) of the snapshot.
    async fn layers(&self, id: Uuid) -> Value {
        let row = self.shown(id).await;
        json!([row["flattened"], row["layerCount"], row["layersAboveBase"]])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_makes_one_layer_then_flattens_onto_the_lineage_base() {
    let shop = Workshop::start().await;

    // v1 on the base (3 layers): nothing above it yet, room for two.
    let (v1, flatten, single) = shop.snapshot("v1", None).await;
    assert_eq!((flatten, single), (None, false));
    let (status, answer) = shop
        .push(
            v1,
            "v1",
            (BASE_IMAGE, BASE_DIGEST),
            json!({"layerCount": 4, "baseLayerCount": 3}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(shop.layers(v1).await, json!([false, 4, 1]));

    // v2 on v1: one layer above the base, room for exactly one more.
    shop.runs("v1").await;
    let (v2, flatten, single) = shop.snapshot("v2", None).await;
    assert_eq!((flatten, single), (None, true));
    shop.pushed(
        v2,
        "v2",
        "v1",
        json!({"layerCount": 5, "baseLayerCount": 4}),
    )
    .await;
    assert_eq!(shop.shown(v2).await["parent"]["id"], v1.to_string());
    assert_eq!(shop.layers(v2).await, json!([false, 5, 2]));

    // v3 on v2: two above, the budget is full: flattened onto the image
    // v1 was taken on, not onto v3's own base (v2).
    shop.runs("v2").await;
    let (v3, flatten, single) = shop.snapshot("v3", None).await;
    assert_eq!((flatten, single), (lineage_base(), false));
    let flat = json!({"layerCount": 4, "baseLayerCount": 5, "flattened": true});
    shop.pushed(v3, "v3", "v2", flat).await;
    assert_eq!(shop.layers(v3).await, json!([true, 4, 1]));

    // v4 on v3 asks for a flatten the budget would not make: sent, onto
    // the same base (v3 passed its lineage on).
    shop.runs("v3").await;
    let (v4, flatten, single) = shop.snapshot("v4", Some(true)).await;
    assert_eq!((flatten, single), (lineage_base(), false));
    let flat = json!({"layerCount": 4, "baseLayerCount": 4, "flattened": true});
    shop.pushed(v4, "v4", "v3", flat).await;
    assert_eq!(shop.layers(v4).await, json!([true, 4, 1]));

    // Each snapshot.pushed says whether its image was flattened.
    let flattened: Vec<Value> = shop
        .app
        .db
        .query("SELECT payload FROM webhook_deliveries ORDER BY created_at")
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|b| json!([b["type"], b["data"]["image"], b["data"]["flattened"]]))
        .collect();
    let expected: Vec<Value> = [("v1", false), ("v2", false), ("v3", true), ("v4", true)]
        .into_iter()
        .map(|(tag, flat)| json!(["snapshot.pushed", target(tag), flat]))
        .collect();
    assert_eq!(flattened, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_flatten_input_and_absurd_layer_counts_are_refused_or_left_unknown() {
    let shop = Workshop::start().await;
    let app = &shop.app;

    // `flatten` must be a boolean: refused before anything is recorded.
    for bad in [
        json!("yes"),
        json!(1),
        json!([true]),
        json!({"flatten": true}),
    ] {
        let input = json!({"containerId": "desk-alice", "target": target("x"), "flatten": bad});
        let body = app.graphql(ALICE, CREATE, json!({ "input": input })).await;
        assert_eq!(
            error_code(&body).as_deref(),
            Some("BAD_USER_INPUT"),
            "{bad}: {body}"
        );
    }
    assert_eq!(app.db.query("SELECT count(*) FROM snapshots"), "0");
    assert!(shop.agent.jobs().is_empty());

    // Counts past INTEGER are refused by name; nothing is stored, and the
    // same event with sane counts is taken afterwards.
    let (v1, _, _) = shop.snapshot("v1", None).await;
    let on_base = (BASE_IMAGE, BASE_DIGEST);
    for (field, absurd) in [
        ("layerCount", 4_294_967_295_u64),
        ("baseLayerCount", 2_147_483_648),
    ] {
        let mut layers = json!({"layerCount": 4, "baseLayerCount": 3});
        layers[field] = json!(absurd);
        let (status, answer) = shop.push(v1, "v1", on_base, layers).await;
        assert_eq!(status, 400, "{answer}");
        let says = format!("{field} {absurd} is out of range");
        assert!(
            answer["message"].as_str().unwrap().contains(&says),
            "{answer}"
        );
    }
    // Past u32: not even a result the protocol reads.
    let (status, answer) = shop
        .push(v1, "v1", on_base, json!({"layerCount": 1_u64 << 40}))
        .await;
    assert_eq!(status, 400, "{answer}");
    let row = shop.shown(v1).await;
    assert_eq!(row["status"], "QUEUED", "{row}");
    assert_eq!(shop.layers(v1).await, json!([false, null, null]));

    // Counts that contradict each other (more base layers than layers):
    // the count is kept, what is above the base is unknown.
    let (status, answer) = shop
        .push(
            v1,
            "v1",
            on_base,
            json!({"layerCount": 2, "baseLayerCount": 3}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(shop.layers(v1).await, json!([false, 2, null]));

    // On a parent whose count above the base is unknown the budget decides
    // nothing, and the child knows no more than its parent.
    shop.runs("v1").await;
    let (v2, flatten, single) = shop.snapshot("v2", None).await;
    assert_eq!((flatten, single), (None, false));
    shop.pushed(
        v2,
        "v2",
        "v1",
        json!({"layerCount": 3, "baseLayerCount": 2}),
    )
    .await;
    assert_eq!(shop.layers(v2).await, json!([false, 3, null]));

    // An older agent says nothing about layers: unknown, not flattened.
    let (v3, _, _) = shop.snapshot("v3", None).await;
    shop.pushed(v3, "v3", "v1", json!({})).await;
    assert_eq!(shop.layers(v3).await, json!([false, null, null]));

    // A flatten with no known base (the desktop's image has no digest) is
    // never sent: the snapshot fails with a sentence.
    let desk = running("registry.test/local:1", None);
    app.inventory(shop.agent.instance, desk).await;
    let input = json!({"containerId": "desk-alice", "target": target("v4"), "flatten": true});
    let created = app.data(ALICE, CREATE, json!({ "input": input })).await;
    let v4: Uuid = created["createSnapshot"]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let mut row = shop.shown(v4).await;
    for _ in 0..200 {
        if row["status"] != "QUEUED" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        row = shop.shown(v4).await;
    }
    assert_eq!(row["status"], "FAILED", "{row}");
    assert_eq!(row["failureCode"], "BAD_REQUEST", "{row}");
    let reason = row["failureReason"].as_str().unwrap();
    assert!(reason.contains("lineage base"), "{reason}");
    assert!(shop.agent.jobs().iter().all(|job| job.snapshot_id != v4));
}
