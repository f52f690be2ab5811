//! The snapshot lifecycle on the real stack (API on Postgres, agent,
//! containerd, the test registries, a webhook receiver): `deleteSnapshot`
//! and retention. A deleted snapshot's manifest is gone from the registry
//! (HEAD 404), its row is `DELETED` and stays in the lineage, and one
//! `snapshot.deleted` webhook goes out; images that desktops run are kept.

use std::time::Duration;

use e2e_tests::stack::{Agent, Api, ApiOptions, Database, Registry, error_code, manifest_status};
use e2e_tests::webhook_receiver::{Receiver, ok};
use e2e_tests::{Ctr, TestEnv, unique};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(90);

const DELETE: &str = "mutation($id: ID!) { deleteSnapshot(id: $id) {
    id status manifestDigest deletion { at by manifest } } }";
const SNAPSHOT: &str = "query($id: ID!) { snapshot(id: $id) {
    id status target manifestDigest parent { id status } deletion { by manifest } } }";

/// An API (with the extra arguments given), an agent that may push to
/// every test registry, a webhook receiver subscribed to every event, and
/// the tokens of alice, bob and an admin.
struct Stack {
    env: TestEnv,
    db: Database,
    api: Api,
    _agent: Agent,
    ctr: Ctr,
    receiver: Receiver,
    alice: String,
    bob: String,
    admin: String,
}

impl Stack {
    async fn start(prefix: &str, api_args: &[&str], extra_registry: Option<&str>) -> Self {
        let env = TestEnv::get();
        let db = Database::fresh();
        let mut args = vec![
            "--webhook-allow",
            "127.0.0.0/8",
            "--webhook-allow-http",
            "--insecure-registry",
            &env.auth_registry,
        ];
        if let Some(registry) = extra_registry {
            args.extend(["--insecure-registry", registry]);
        }
        args.extend(api_args);
        let api = Api::builder(ApiOptions::postgres(&db, &env.registry, 30))
            .args(args)
            .start()
            .await;
        let ctr = Ctr::new(&env.containerd_socket, &unique(prefix));
        let mut agent_args = vec!["--registry-config", env.auth_config.to_str().unwrap()];
        if let Some(registry) = extra_registry {
            agent_args.extend(["--insecure-registry", registry]);
        }
        let agent = Agent::builder(&env, &api, "node-1", &ctr.namespace)
            .args(agent_args)
            .start();
        let receiver = Receiver::start(ok()).await;
        let admin = api.token("root", "admin", &[]);
        api.create_webhook_endpoint(
            &admin,
            &receiver.url("/hooks"),
            &["SNAPSHOT_PUSHED", "SNAPSHOT_DELETED"],
        )
        .await;
        let alice = api.token("alice", "speaker", &["workshop"]);
        let bob = api.token("bob", "speaker", &["workshop"]);
        Self {
            env,
            db,
            api,
            _agent: agent,
            ctr,
            receiver,
            alice,
            bob,
            admin,
        }
    }

    /// A running desktop of alice's from `image` (busybox when `None`).
    async fn desktop(&self, id: &str, image: Option<&str>) {
        let image = match image {
            Some(reference) => {
                self.ctr.pull_plain_http(reference);
                reference.to_string()
            }
            None => self.ctr.import_busybox("overlayfs").to_string(),
        };
        self.ctr
            .desktop(id, &image)
            .pod(&unique("pod"))
            .owner("alice")
            .start();
        self.api.wait_for_running_container(&self.alice, id).await;
    }

    /// `registry/workshops/alice/<namespace>-<name>`, without the registry.
    fn repository(&self, name: &str) -> String {
        format!("workshops/alice/{}-{name}", self.ctr.namespace)
    }

    /// A snapshot of `desk` to `registry/<repository(name)>:tag` by `token`,
    /// waited for; it must be PUSHED. Returns (id, manifest digest).
    async fn pushed(
        &self,
        token: &str,
        desk: &str,
        registry: &str,
        name: &str,
        tag: &str,
    ) -> (String, String) {
        self.ctr.exec(desk, &format!("echo {tag} > /etc/{tag}"));
        let target = format!("{registry}/{}:{tag}", self.repository(name));
        let id = self
            .api
            .create_snapshot_with(
                token,
                json!({"containerId": desk, "target": target, "compression": "ZSTD"}),
            )
            .await;
        let done = self.api.wait_for_end(token, &id, WAIT).await;
        assert_eq!(done["status"], "PUSHED", "{done}\n{}", self.api.log_tail());
        (id, done["manifestDigest"].as_str().unwrap().to_string())
    }

    async fn delete(&self, token: Option<&str>, id: &str) -> Value {
        self.api.graphql(token, DELETE, json!({ "id": id })).await
    }

    async fn snapshot(&self, id: &str) -> Value {
        self.api
            .data(&self.admin, SNAPSHOT, json!({ "id": id }))
            .await["snapshot"]
            .clone()
    }

    /// The `snapshot.deleted` bodies about `id`, once at least `count` came.
    async fn deleted_webhooks(&self, id: &str, count: usize) -> Vec<Value> {
        self.webhooks("snapshot.deleted", id, count).await
    }

    /// The bodies of type `kind` about `id`, once at least `count` came.
    async fn webhooks(&self, kind: &str, id: &str, count: usize) -> Vec<Value> {
        e2e_tests::poll(
            WAIT,
            Duration::from_millis(50),
            async || {
                let bodies = self.webhooks_now(kind, id);
                if bodies.len() >= count {
                    Ok(bodies)
                } else {
                    Err(self.receiver.requests().len())
                }
            },
            |all| format!("{count} {kind} of {id}; the receiver got {all} in all"),
        )
        .await
    }

    fn deleted_webhooks_now(&self, id: &str) -> Vec<Value> {
        self.webhooks_now("snapshot.deleted", id)
    }

    fn webhooks_now(&self, kind: &str, id: &str) -> Vec<Value> {
        self.receiver
            .requests()
            .iter()
            .map(|r| r.json())
            .filter(|b| b["type"] == kind && b["data"]["snapshotId"] == id)
            .collect()
    }

    /// How many rows of `table` match `condition` (SQL).
    fn count(&self, table: &str, condition: &str) -> usize {
        self.db
            .query(&format!("SELECT count(*) FROM {table} WHERE {condition}"))
            .trim()
            .parse()
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_snapshot_removes_the_manifest_keeps_the_lineage_and_is_refused_when_it_must() {
    let stack = Stack::start("delete", &[], None).await;
    let registry = stack.env.registry.clone();
    stack.desktop("desk-1", None).await;
    let (v1, v1_digest) = stack
        .pushed(&stack.alice, "desk-1", &registry, "d", "v1")
        .await;
    let repository = stack.repository("d");

    // desk-2 runs v1's image: its snapshot v2 has v1 as parent.
    let v1_target = format!("{registry}/{repository}:v1");
    stack.desktop("desk-2", Some(&v1_target)).await;
    let (v2, v2_digest) = stack
        .pushed(&stack.alice, "desk-2", &registry, "d", "v2")
        .await;
    assert_eq!(stack.snapshot(&v2).await["parent"]["id"], v1.as_str());

    // Who may not: anonymous, bob (who cannot see it), bad ids.
    assert_eq!(
        error_code(&stack.delete(None, &v1).await),
        "UNAUTHENTICATED"
    );
    assert_eq!(
        error_code(&stack.delete(Some(&stack.bob), &v1).await),
        "NOT_FOUND"
    );
    let bad = stack.delete(Some(&stack.alice), "../../etc/passwd").await;
    assert_eq!(error_code(&bad), "BAD_USER_INPUT", "{bad}");
    let huge = stack.delete(Some(&stack.alice), &"9".repeat(100_000)).await;
    assert_eq!(error_code(&huge), "BAD_USER_INPUT");
    assert!(huge.to_string().len() < 2_000, "the id is not echoed whole");
    assert_eq!(
        manifest_status(&registry, &repository, &v1_digest, None).await,
        200
    );

    // Alice deletes v1, although desk-2 runs it (a running desktop keeps
    // its local image; only retention spares images in use).
    let deleted = stack.delete(Some(&stack.alice), &v1).await;
    let deleted = &deleted["data"]["deleteSnapshot"];
    assert_eq!(deleted["status"], "DELETED", "{deleted}");
    assert_eq!(deleted["deletion"]["by"], "alice");
    assert_eq!(deleted["deletion"]["manifest"], "DELETED");
    assert_eq!(
        manifest_status(&registry, &repository, &v1_digest, None).await,
        404
    );
    assert!(
        e2e_tests::stack::skopeo_inspect(&v1_target).is_err(),
        "the tag went with it"
    );
    // The row stays, and so does the lineage; v2 is untouched.
    assert_eq!(stack.snapshot(&v1).await["status"], "DELETED");
    let child = stack.snapshot(&v2).await;
    assert_eq!(
        child["parent"],
        json!({"id": v1, "status": "DELETED"}),
        "{child}"
    );
    assert_eq!(
        manifest_status(&registry, &repository, &v2_digest, None).await,
        200
    );
    // One webhook, with what was deleted.
    let bodies = stack.deleted_webhooks(&v1, 1).await;
    let data = &bodies[0]["data"];
    assert_eq!(data["manifestDigest"], v1_digest.as_str());
    assert_eq!(data["deleted"]["by"], "alice");
    assert_eq!(data["deleted"]["manifest"], "DELETED");
    // Once only.
    let again = stack.delete(Some(&stack.alice), &v1).await;
    assert_eq!(error_code(&again), "CONFLICT", "{again}");
    assert_eq!(
        stack.count(
            "snapshot_events",
            &format!("snapshot_id = '{v1}' AND kind = 'DELETED'")
        ),
        1
    );
    assert_eq!(
        stack.count(
            "audit_log",
            &format!("action = 'deleteSnapshot' AND target_id = '{v1}' AND outcome = 'deleted'")
        ),
        1
    );

    // Eight deletes of one snapshot at once: one wins, one event, one webhook.
    let (v3, v3_digest) = stack
        .pushed(&stack.alice, "desk-1", &registry, "d", "v3")
        .await;
    let racers = (0..8).map(|i| {
        let token = if i % 2 == 0 {
            &stack.alice
        } else {
            &stack.admin
        };
        stack.delete(Some(token), &v3)
    });
    let answers = futures::future::join_all(racers).await;
    let won = answers
        .iter()
        .filter(|a| a["data"]["deleteSnapshot"]["status"] == "DELETED")
        .count();
    let conflicts = answers
        .iter()
        .filter(|a| error_code(a) == "CONFLICT")
        .count();
    assert_eq!((won, conflicts), (1, 7), "{answers:?}");
    assert_eq!(
        stack.count(
            "snapshot_events",
            &format!("snapshot_id = '{v3}' AND kind = 'DELETED'")
        ),
        1
    );
    assert_eq!(
        manifest_status(&registry, &repository, &v3_digest, None).await,
        404
    );
    stack.deleted_webhooks(&v3, 1).await;

    // A manifest two live rows name (as a re-push of one image under two
    // tags would) is kept while the other lives.
    let (v4, _) = stack
        .pushed(&stack.alice, "desk-1", &registry, "d", "v4")
        .await;
    stack.db.query(&format!(
        "UPDATE snapshots SET manifest_digest = '{v2_digest}' WHERE id = '{v4}'"
    ));
    let kept = stack.delete(Some(&stack.alice), &v4).await;
    assert_eq!(
        kept["data"]["deleteSnapshot"]["deletion"]["manifest"], "KEPT_SHARED",
        "{kept}"
    );
    assert_eq!(
        manifest_status(&registry, &repository, &v2_digest, None).await,
        200
    );

    // Only PUSHED snapshots: a failed one (an unreachable registry) is not.
    let failed = stack
        .api
        .create_snapshot_with(
            &stack.admin,
            json!({"containerId": "desk-1", "target": "127.0.0.1:1/x/y:z"}),
        )
        .await;
    assert_eq!(
        stack.api.wait_for_end(&stack.admin, &failed, WAIT).await["status"],
        "FAILED"
    );
    let refused = stack.delete(Some(&stack.admin), &failed).await;
    assert_eq!(error_code(&refused), "CONFLICT", "{refused}");
    assert!(
        refused["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("FAILED"),
        "{refused}"
    );

    // Exactly the webhooks of the deletes that happened (v1, v3, v4).
    stack.deleted_webhooks(&v4, 1).await;
    for id in [&v1, &v3, &v4] {
        assert_eq!(stack.deleted_webhooks_now(id).len(), 1, "{id}");
    }
    assert!(stack.deleted_webhooks_now(&v2).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_snapshot_with_refusing_registries() {
    let no_deletes = Registry::start_without_deletes().await;
    let env = TestEnv::get();
    // The API holds the wrong password for the auth registry.
    let bad_config = env.bad_auth_config.to_string_lossy().to_string();
    let mut stack = Stack::start(
        "delete-refused",
        &["--registry-config", &bad_config],
        Some(&no_deletes.address),
    )
    .await;
    stack.desktop("desk-1", None).await;

    // A registry without deletes: the row is DELETED, the manifest kept.
    let (kept, kept_digest) = stack
        .pushed(&stack.admin, "desk-1", &no_deletes.address, "d", "k1")
        .await;
    let answer = stack.delete(Some(&stack.admin), &kept).await;
    let deleted = &answer["data"]["deleteSnapshot"];
    assert_eq!(deleted["status"], "DELETED", "{answer}");
    assert_eq!(deleted["deletion"]["manifest"], "KEPT_UNSUPPORTED");
    let repository = stack.repository("d");
    assert_eq!(
        manifest_status(&no_deletes.address, &repository, &kept_digest, None).await,
        200
    );
    let body = &stack.deleted_webhooks(&kept, 1).await[0];
    assert_eq!(body["data"]["deleted"]["manifest"], "KEPT_UNSUPPORTED");

    // The auth registry refuses the API's credentials: REGISTRY_REFUSED,
    // the row stays PUSHED, the refusal is audited.
    let auth = stack.env.auth_registry.clone();
    let (locked, locked_digest) = stack.pushed(&stack.admin, "desk-1", &auth, "d", "a1").await;
    let refused = stack.delete(Some(&stack.admin), &locked).await;
    assert_eq!(error_code(&refused), "REGISTRY_REFUSED", "{refused}");
    let message = refused["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains(&auth) && message.contains("credentials"),
        "{message}"
    );
    assert!(!message.contains("wrong-"), "no password in {message}");
    assert_eq!(stack.snapshot(&locked).await["status"], "PUSHED");
    assert_eq!(
        stack.count(
            "audit_log",
            &format!(
                "action = 'deleteSnapshot' AND target_id = '{locked}' AND outcome = 'refused'"
            )
        ),
        1
    );
    assert!(stack.deleted_webhooks_now(&locked).is_empty());

    // With the right credentials, the same call deletes it.
    let good_config = stack.env.auth_config.to_string_lossy().to_string();
    stack
        .api
        .restart_with(&[
            "--webhook-allow".into(),
            "127.0.0.0/8".into(),
            "--webhook-allow-http".into(),
            "--insecure-registry".into(),
            auth.clone(),
            "--registry-config".into(),
            good_config,
        ])
        .await;
    let answer = stack.delete(Some(&stack.admin), &locked).await;
    assert_eq!(
        answer["data"]["deleteSnapshot"]["deletion"]["manifest"], "DELETED",
        "{answer}"
    );
    let password = std::fs::read_to_string(
        std::path::Path::new(&stack.env.auth_config)
            .parent()
            .unwrap()
            .join("password"),
    )
    .unwrap();
    let credentials = Some(("dcs", password.trim()));
    assert_eq!(
        manifest_status(&auth, &repository, &locked_digest, credentials).await,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_the_newest_and_what_desktops_run_on_two_replicas() {
    let retention = ["--retention-keep", "1", "--retention-interval-seconds", "1"];
    let stack = Stack::start("retention", &retention, None).await;
    // A second replica runs retention too: one pass at a time.
    let env = &stack.env;
    let _replica = Api::builder(ApiOptions::postgres(&stack.db, &env.registry, 30))
        .replica_of(&stack.api)
        .args(["--webhook-allow", "127.0.0.0/8", "--webhook-allow-http"])
        .args(retention)
        .start()
        .await;
    let registry = env.registry.clone();
    stack.desktop("desk-1", None).await;
    let repository = stack.repository("d");

    // v1, then a desktop from v1 before anything newer exists.
    let (v1, v1_digest) = stack
        .pushed(&stack.alice, "desk-1", &registry, "d", "v1")
        .await;
    stack
        .desktop("desk-2", Some(&format!("{registry}/{repository}:v1")))
        .await;
    let (v2, v2_digest) = stack
        .pushed(&stack.alice, "desk-1", &registry, "d", "v2")
        .await;
    let (v3, v3_digest) = stack
        .pushed(&stack.alice, "desk-1", &registry, "d", "v3")
        .await;
    // Another repository with a single snapshot is not touched.
    let (other, other_digest) = stack
        .pushed(&stack.alice, "desk-1", &registry, "e", "o1")
        .await;

    let gone = e2e_tests::poll(
        WAIT,
        Duration::from_millis(200),
        async || {
            let status = stack.snapshot(&v2).await["status"].clone();
            if status == "DELETED" {
                Ok(status)
            } else {
                Err(status)
            }
        },
        |status| format!("retention did not delete v2 (still {status})"),
    )
    .await;
    assert_eq!(gone, "DELETED");
    // Two more passes on each replica, to see that nothing else goes.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        manifest_status(&registry, &repository, &v2_digest, None).await,
        404
    );
    let v2_row = stack.snapshot(&v2).await;
    assert_eq!(v2_row["deletion"]["by"], "retention", "{v2_row}");
    for (id, digest, repo) in [
        (&v1, &v1_digest, &repository),
        (&v3, &v3_digest, &repository),
        (&other, &other_digest, &stack.repository("e")),
    ] {
        assert_eq!(stack.snapshot(id).await["status"], "PUSHED", "{id}");
        assert_eq!(
            manifest_status(&registry, repo, digest, None).await,
            200,
            "{id}"
        );
    }
    // Once, audited as retention's, with one event and one webhook.
    assert_eq!(
        stack.count(
            "snapshot_events",
            &format!("snapshot_id = '{v2}' AND kind = 'DELETED'")
        ),
        1
    );
    assert_eq!(
        stack.count(
            "audit_log",
            &format!(
                "actor = 'retention' AND role = 'system' AND action = 'deleteSnapshot' \
                 AND target_id = '{v2}' AND outcome = 'deleted'"
            )
        ),
        1
    );
    assert_eq!(stack.count("audit_log", "actor = 'retention'"), 1);
    let body = &stack.deleted_webhooks(&v2, 1).await[0];
    assert_eq!(body["data"]["deleted"]["by"], "retention");
    assert_eq!(stack.deleted_webhooks_now(&v2).len(), 1);

    // When desk-2 goes, v1 is no longer in use and goes too.
    stack.ctr.run(&["tasks", "kill", "-s", "SIGKILL", "desk-2"]);
    std::thread::sleep(Duration::from_millis(300));
    stack.ctr.run(&["tasks", "rm", "-f", "desk-2"]);
    stack.ctr.run(&["containers", "rm", "desk-2"]);
    e2e_tests::poll(
        WAIT,
        Duration::from_millis(200),
        async || {
            let status = stack.snapshot(&v1).await["status"].clone();
            if status == "DELETED" {
                Ok(())
            } else {
                Err(status)
            }
        },
        |status| format!("retention did not delete v1 once unused (still {status})"),
    )
    .await;
    assert_eq!(
        manifest_status(&registry, &repository, &v1_digest, None).await,
        404
    );
    assert_eq!(stack.snapshot(&v3).await["status"], "PUSHED");

    // The lineage base of a pushed snapshot stays (a later flatten reads
    // its manifest): f1 is made the base of `other`, then f2 pushes it
    // out of the newest one.
    let (f1, f1_digest) = stack
        .pushed(&stack.alice, "desk-1", &registry, "f", "f1")
        .await;
    let link =
        format!("UPDATE snapshots SET lineage_base_digest = '{f1_digest}' WHERE id = '{other}'");
    stack.db.query(&link);
    stack
        .pushed(&stack.alice, "desk-1", &registry, "f", "f2")
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        stack.snapshot(&f1).await["status"],
        "PUSHED",
        "a lineage base stays"
    );
    let f_repository = stack.repository("f");
    assert_eq!(
        manifest_status(&registry, &f_repository, &f1_digest, None).await,
        200
    );
    // Without the link, it goes.
    stack.db.query(&format!(
        "UPDATE snapshots SET lineage_base_digest = NULL WHERE id = '{other}'"
    ));
    e2e_tests::poll(
        WAIT,
        Duration::from_millis(200),
        async || match stack.snapshot(&f1).await["status"].clone() {
            status if status == "DELETED" => Ok(()),
            status => Err(status),
        },
        |status| format!("retention did not delete f1 once no base (still {status})"),
    )
    .await;
}

const LAYERS: &str = "query($id: ID!) { snapshot(id: $id) {
    id status flattened layerCount layersAboveBase layerSize uncompressedSize
    parent { id } } }";

/// A chain on the real stack with `--layer-budget 2`: v1 adds a 50 MB
/// file, v2 deletes it, v3 passes the budget and is flattened on its own
/// (the busybox layer plus one, without the deleted file), says so in the
/// API and in its `snapshot.pushed` webhook, and keeps its parent. A
/// snapshot that asks for `flatten: true` is flattened under the budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_past_the_layer_budget_is_flattened_and_says_so() {
    let stack = Stack::start("flatten", &["--layer-budget", "2"], None).await;
    let registry = stack.env.registry.clone();
    let image = |tag: &str| format!("{registry}/{}:{tag}", stack.repository("desk"));

    stack.desktop("g1", None).await;
    stack.ctr.exec(
        "g1",
        "mkdir -p /data && dd if=/dev/urandom of=/data/big.bin bs=1M count=50 2>/dev/null",
    );
    // v1 without a pause, so with exactly one layer whatever changed
    // just before (a paused commit may add a delta layer).
    let body = json!({"containerId": "g1", "target": image("v1"), "pause": false});
    let v1 = stack.api.create_snapshot_with(&stack.alice, body).await;
    let done = stack.api.wait_for_end(&stack.alice, &v1, WAIT).await;
    assert_eq!(done["status"], "PUSHED", "{done}\n{}", stack.api.log_tail());
    stack.desktop("g2", Some(&image("v1"))).await;
    stack
        .ctr
        .exec("g2", "rm /data/big.bin && echo two > /data/two");
    // Paused, but the budget (room for one layer) makes it one layer.
    let (v2, _) = stack
        .pushed(&stack.alice, "g2", &registry, "desk", "v2")
        .await;
    stack.desktop("g3", Some(&image("v2"))).await;
    stack.ctr.exec("g3", "echo three > /data/three");
    let (v3, _) = stack
        .pushed(&stack.alice, "g3", &registry, "desk", "v3")
        .await;

    let layers = async |id: &str| {
        stack
            .api
            .data(&stack.admin, LAYERS, json!({ "id": id }))
            .await["snapshot"]
            .clone()
    };
    let (first, second, third) = (layers(&v1).await, layers(&v2).await, layers(&v3).await);
    assert_eq!(first["flattened"], false, "{first}");
    assert_eq!(second["flattened"], false, "{second}");
    assert_eq!(
        second["layersAboveBase"], 2,
        "v2 made one layer, the budget's last: {second}"
    );
    assert_eq!(third["flattened"], true, "{third}");
    assert_eq!(third["layersAboveBase"], 1, "{third}");
    assert_eq!(
        third["layerCount"].as_i64(),
        Some(
            first["layerCount"].as_i64().unwrap() - first["layersAboveBase"].as_i64().unwrap() + 1
        ),
        "the base's layers plus one: {first} {third}"
    );
    assert_eq!(
        third["parent"]["id"],
        v2.as_str(),
        "the lineage still records the parent"
    );
    let uncompressed = bytes(&third["uncompressedSize"]);
    assert!(
        uncompressed < 5 << 20,
        "the file v1 added and v2 deleted is not in the flattened layer: {third}"
    );
    let pushed = stack.webhooks("snapshot.pushed", &v3, 1).await;
    assert_eq!(pushed[0]["data"]["flattened"], true, "{}", pushed[0]);
    let pushed = stack.webhooks("snapshot.pushed", &v2, 1).await;
    assert_eq!(pushed[0]["data"]["flattened"], false, "{}", pushed[0]);

    // The flattened image runs with every generation's files.
    let report = stack.ctr.run_once(
        &image("v3"),
        "cat /data/two /data/three; [ -e /data/big.bin ] && echo big || echo no-big",
    );
    assert_eq!(
        report.split_whitespace().collect::<Vec<_>>(),
        ["two", "three", "no-big"]
    );

    // Asked for, under the budget: a desktop of v1 (one layer above the base).
    stack.desktop("g4", Some(&image("v1"))).await;
    stack.ctr.exec("g4", "rm /data/big.bin");
    let target = image("v4");
    let id = stack
        .api
        .create_snapshot_with(
            &stack.alice,
            json!({"containerId": "g4", "target": target, "compression": "GZIP", "flatten": true}),
        )
        .await;
    let done = stack.api.wait_for_end(&stack.alice, &id, WAIT).await;
    assert_eq!(done["status"], "PUSHED", "{done}\n{}", stack.api.log_tail());
    let fourth = layers(&id).await;
    assert_eq!(fourth["flattened"], true, "{fourth}");
    assert_eq!(fourth["layersAboveBase"], 1, "{fourth}");
    assert!(bytes(&fourth["uncompressedSize"]) < 5 << 20, "{fourth}");
}

/// An `Int64` (a string of digits).
fn bytes(value: &Value) -> u64 {
    value
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an Int64: {value}"))
}
