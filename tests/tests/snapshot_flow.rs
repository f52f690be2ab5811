//! The snapshot flow through the real `dcs-api` and `dcs-agent` processes,
//! real Postgres (and the SQLite default), containerd, runc and registry.

use std::time::Duration;

use e2e_tests::stack::{Agent, Api, ApiOptions, Database, documents, registry_digest};
use e2e_tests::{Ctr, TestEnv, unique};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speaker_snapshots_a_desktop_and_lineage_is_recorded_on_postgres() {
    let env = TestEnv::get();
    let db = Database::fresh();
    let api = Api::start(ApiOptions::postgres(&db, &env.registry, 10)).await;
    let namespace = unique("flow");
    let ctr = Ctr::new(&env.containerd_socket, &namespace);
    let busybox = ctr.import_busybox("overlayfs");
    ctr.desktop("desk-1", busybox)
        .pod("desktop-0")
        .owner("alice")
        .start();
    let _agent = Agent::start(&env, &api, "node-1", &namespace);
    let alice = api.token("alice", "speaker", &["workshop"]);

    let container = api.wait_for_running_container(&alice, "desk-1").await;
    assert_eq!(container["podName"], "desktop-0");
    assert_eq!(container["containerName"], "desktop");
    ctr.exec(
        "desk-1",
        "mkdir -p /opt/tools && echo v1 > /opt/tools/version",
    );

    // Subscribe first, so every phase is seen.
    let mut events = api.subscribe(&alice, documents::EVENTS, json!({})).await;
    let target = format!("{}/workshops/alice/desktop:v1", env.registry);
    let created = api
        .data(
            &alice,
            documents::CREATE,
            json!({"input": {"podNamespace": "workshop", "podName": "desktop-0",
                             "containerName": "desktop", "target": target,
                             "message": "first", "compression": "ZSTD"}}),
        )
        .await;
    let first_id = created["createSnapshot"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(created["createSnapshot"]["status"], "QUEUED");

    let mut phases: Vec<String> = Vec::new();
    while let Some(event) = events.next(WAIT).await {
        let event = &event["snapshotEvents"];
        if event["snapshotId"] != first_id.as_str() {
            continue;
        }
        let status = event["status"].as_str().unwrap().to_string();
        if phases.last() != Some(&status) {
            phases.push(status.clone());
        }
        if status == "PUSHED" || status == "FAILED" {
            break;
        }
    }
    assert_eq!(
        phases,
        ["QUEUED", "DIFFING", "PUSHING", "PUSHED"],
        "phases in order; API log:\n{}",
        api.log_tail()
    );

    let first = api.wait_for_end(&alice, &first_id, WAIT).await;
    assert_eq!(first["status"], "PUSHED", "{first}");
    let digest = first["manifestDigest"].as_str().unwrap();
    assert_eq!(registry_digest(&target), digest, "the registry serves it");
    assert_eq!(
        db.query(&format!(
            "SELECT status || ' ' || manifest_digest FROM snapshots WHERE id = '{first_id}'"
        )),
        format!("PUSHED {digest}")
    );

    // A desktop started from the new image; its snapshot has the first as parent.
    ctr.desktop("desk-2", &target)
        .pod("desktop-1")
        .owner("alice")
        .start();
    let second_container = api.wait_for_running_container(&alice, "desk-2").await;
    assert_eq!(second_container["imageDigest"], digest);
    ctr.exec("desk-2", "echo v2 > /opt/tools/version");
    let target2 = format!("{}/workshops/alice/desktop:v2", env.registry);
    let second_id = api
        .create_snapshot_with(&alice, json!({"containerId": "desk-2", "target": target2}))
        .await;
    let second = api.wait_for_end(&alice, &second_id, WAIT).await;
    assert_eq!(second["status"], "PUSHED", "{second}");
    assert_eq!(second["parent"]["id"], first_id.as_str());

    let lineage = api
        .data(
            &alice,
            "query($a: ID!, $b: ID!) { a: snapshot(id: $a) { descendants { id } children { id } }
                                      b: snapshot(id: $b) { ancestors { id } } }",
            json!({"a": first_id, "b": second_id}),
        )
        .await;
    assert_eq!(lineage["a"]["descendants"], json!([{"id": second_id}]));
    assert_eq!(lineage["a"]["children"], json!([{"id": second_id}]));
    assert_eq!(lineage["b"]["ancestors"], json!([{"id": first_id}]));

    // The second image runs, with both changes.
    let fresh = Ctr::new(&env.containerd_socket, &unique("fresh"));
    let by_digest = format!(
        "{}/workshops/alice/desktop@{}",
        env.registry,
        second["manifestDigest"].as_str().unwrap()
    );
    fresh.pull_plain_http(&by_digest);
    assert_eq!(
        fresh.run_once(&by_digest, "cat /opt/tools/version").trim(),
        "v2"
    );

    // A second snapshot of a container with one in flight: CONFLICT.
    ctr.exec(
        "desk-2",
        "dd if=/dev/urandom of=/root/big bs=1M count=64 2>/dev/null",
    );
    let input = json!({"input": {"containerId": "desk-2", "target": format!("{}/workshops/alice/desktop:v3", env.registry)}});
    let third = api.data(&alice, documents::CREATE, input.clone()).await;
    let again = api.graphql(Some(&alice), documents::CREATE, input).await;
    assert_eq!(
        again["errors"][0]["extensions"]["code"], "CONFLICT",
        "{again}"
    );
    let third_id = third["createSnapshot"]["id"].as_str().unwrap();
    assert_eq!(
        api.wait_for_end(&alice, third_id, WAIT).await["status"],
        "PUSHED"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_flow_runs_on_the_sqlite_default() {
    let env = TestEnv::get();
    let api = Api::start(ApiOptions::sqlite(&env.registry, 10)).await;
    assert!(api.data_dir.join("dcs.db").exists(), "SQLite file created");
    let namespace = unique("sqlite");
    let ctr = Ctr::new(&env.containerd_socket, &namespace);
    let busybox = ctr.import_busybox("overlayfs");
    ctr.desktop("desk", busybox)
        .pod("desktop-0")
        .owner("bob")
        .start();
    let _agent = Agent::start(&env, &api, "node-1", &namespace);
    let bob = api.token("bob", "speaker", &["workshop"]);
    api.wait_for_running_container(&bob, "desk").await;
    ctr.exec("desk", "echo sqlite > /root/marker");
    let target = format!("{}/workshops/bob/desk:v1", env.registry);
    let id = api
        .create_snapshot_with(
            &bob,
            json!({"containerId": "desk", "target": target, "changes": ["CMD [\"cat\", \"/root/marker\"]"]}),
        )
        .await;
    let done = api.wait_for_end(&bob, &id, WAIT).await;
    assert_eq!(done["status"], "PUSHED", "{done}");
    assert_eq!(
        registry_digest(&target),
        done["manifestDigest"].as_str().unwrap()
    );
    let fresh = Ctr::new(&env.containerd_socket, &unique("fresh"));
    fresh.pull_plain_http(&target);
    assert_eq!(fresh.run_default(&target).trim(), "sqlite");
}
