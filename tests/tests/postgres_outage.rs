//! Postgres restarted in the middle of a snapshot flow (its own test
//! binary: it restarts the shared server, which no other test must see).
//! The outage costs requests in flight at most: `/readyz` reports it, the
//! API reconnects by itself, the agent's events wait and land, the
//! snapshot ends PUSHED exactly once, and a subscriber opened before the
//! outage still hears the end.

use std::process::Command;
use std::time::{Duration, Instant};

use e2e_tests::stack::{Agent, Api, ApiOptions, Database, documents};
use e2e_tests::{Ctr, TestEnv, unique};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(120);

/// Stops Postgres, keeps it down for four seconds (longer than `/readyz`
/// waits for the database, so every part notices), and starts it again.
fn restart_postgres() {
    let steps: [(&[&str], Duration); 2] = [
        (&["stop", "-m", "fast"], Duration::from_secs(4)),
        (&["start"], Duration::ZERO),
    ];
    for (action, pause) in steps {
        let output = Command::new("pg_ctlcluster")
            .args(["15", "main"])
            .args(action)
            .output()
            .expect("run pg_ctlcluster (PostgreSQL 15)");
        assert!(
            output.status.success(),
            "pg_ctlcluster {action:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        std::thread::sleep(pause);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_restart_mid_flow_costs_no_snapshot() {
    let env = TestEnv::get();
    let db = Database::fresh();
    let api = Api::start(ApiOptions {
        database_url: Some(db.url.clone()),
        speaker_prefixes: vec![format!("{}/workshops/{{sub}}", env.registry)],
        agent_timeout_seconds: 30,
    })
    .await;
    let ctr = Ctr::new(&env.containerd_socket, &unique("pgout"));
    let busybox = ctr.import_busybox("overlayfs");
    let desk = unique("desk");
    ctr.desktop(&desk, busybox)
        .pod("desktop-0")
        .owner("alice")
        .start();
    ctr.exec(
        &desk,
        "dd if=/dev/urandom of=/root/big bs=1M count=40 2>/dev/null",
    );
    let _agent = Agent::start(&env, &api, "node-pg", &ctr.namespace);
    let alice = api.token("alice", "speaker", &["workshop"]);
    api.wait_for_running_container(&alice, &desk).await;
    let mut events = api.subscribe(&alice, documents::EVENTS, json!({})).await;

    let target = format!("{}/workshops/alice/{}:pg", env.registry, ctr.namespace);
    let created = api
        .data(
            &alice,
            documents::CREATE,
            json!({"input": {"containerId": desk, "target": target, "compression": "GZIP"}}),
        )
        .await;
    let id = created["createSnapshot"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    api.wait_for(&alice, documents::SNAPSHOT, json!({"id": id}), WAIT, |d| {
        ["DIFFING", "PUSHING"].contains(&d["snapshot"]["status"].as_str().unwrap_or(""))
    })
    .await;

    // Restart while the commit runs, watching /readyz meanwhile.
    let http = reqwest::Client::new();
    let ready_url = format!("{}/readyz", api.url);
    let watcher = tokio::spawn(async move {
        let mut saw_unready = false;
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            match http.get(&ready_url).send().await {
                Ok(r) if r.status().is_success() && saw_unready => return true,
                Ok(r) if !r.status().is_success() => saw_unready = true,
                Err(_) => saw_unready = true,
                _ => {}
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    restart_postgres();
    assert!(
        watcher.await.unwrap(),
        "/readyz did not report the outage and then recover:\n{}",
        api.log_tail()
    );

    // The flow ends, once.
    let pushed = api
        .wait_for(&alice, documents::SNAPSHOT, json!({"id": id}), WAIT, |d| {
            d["snapshot"]["status"] == "PUSHED"
        })
        .await;
    assert!(pushed["snapshot"]["manifestDigest"].as_str().is_some());
    let terminal = db.query(&format!(
        "SELECT count(*) FROM snapshot_events WHERE snapshot_id = '{id}' \
         AND kind IN ('PUSHED', 'FAILED', 'CANCELLED')"
    ));
    assert_eq!(terminal.trim(), "1");

    // The subscriber opened before the outage hears the end.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let Some(event) = events.next(remaining).await else {
            panic!("the subscriber never heard PUSHED:\n{}", api.log_tail());
        };
        let change = &event["snapshotEvents"];
        if change["snapshotId"] == id.as_str() && change["status"] == "PUSHED" {
            break;
        }
    }

    // And the API takes new work without a restart of its own.
    let second = format!("{}/workshops/alice/{}:after", env.registry, ctr.namespace);
    let created = api
        .data(
            &alice,
            documents::CREATE,
            json!({"input": {"containerId": desk, "target": second}}),
        )
        .await;
    let next = created["createSnapshot"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    api.wait_for(
        &alice,
        documents::SNAPSHOT,
        json!({"id": next}),
        WAIT,
        |d| d["snapshot"]["status"] == "PUSHED",
    )
    .await;
}
