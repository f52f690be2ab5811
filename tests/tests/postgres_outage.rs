//! Postgres restarted in the middle of a snapshot flow (its own test
//! binary: it restarts the shared server, which no other test must see).
//! The outage costs requests in flight at most: `/readyz` reports it, the
//! API reconnects by itself, the agent's events wait and land, the
//! snapshot ends PUSHED exactly once, and a subscriber opened before the
//! outage still hears the end.

use std::process::Command;
use std::time::{Duration, Instant};

use e2e_tests::stack::{Workshop, documents};
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
    let s = Workshop::builder("pgout").start().await;
    let (api, alice) = (&s.api, &s.alice);
    let desk = s.desktop(40);
    let _agent = s.agent("node-pg").start();
    s.wait_for_container(&desk).await;
    let mut events = api.subscribe(alice, documents::EVENTS, json!({})).await;

    let id = s.create(&desk, &s.target("pg")).await;
    s.wait_status(&id, &["DIFFING", "PUSHING"], WAIT).await;

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
    let pushed = s.wait_status(&id, &["PUSHED"], WAIT).await;
    assert!(pushed["manifestDigest"].as_str().is_some());
    let terminal = s.db.query(&format!(
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
    let second = s.target("after");
    let next = api
        .create_snapshot_with(alice, json!({"containerId": desk, "target": second}))
        .await;
    s.wait_status(&next, &["PUSHED"], WAIT).await;
}
