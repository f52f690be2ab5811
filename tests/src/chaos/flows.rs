//! One worker per desktop: change a file, `createSnapshot` on either
//! replica, follow the snapshot to its end (sometimes cancelling it), and
//! again, while the parts of the stack are being killed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use super::rng::Rng;
use super::{Options, Shared};

const CREATE: &str =
    "mutation($input: CreateSnapshotInput!) { createSnapshot(input: $input) { id status } }";
const CANCEL: &str = "mutation($id: ID!) { cancelSnapshot(id: $id) { id status } }";

enum Created {
    Id(String),
    /// Another snapshot of the desktop is in flight.
    Conflict,
    /// No answer, or an error that may pass (replica or database down).
    Retry,
}

async fn create(shared: &Shared, replica: usize, desk: &str, target: &str, zstd: bool) -> Created {
    let input = json!({"input": {"containerId": desk, "target": target,
        "compression": if zstd { "ZSTD" } else { "GZIP" }}});
    match shared.graphql(replica, &shared.alice, CREATE, input).await {
        Err(_) => Created::Retry,
        Ok(body) => {
            if let Some(id) = body["data"]["createSnapshot"]["id"].as_str() {
                return Created::Id(id.to_string());
            }
            let code = body["errors"][0]["extensions"]["code"]
                .as_str()
                .unwrap_or("");
            if code == "CONFLICT" {
                Created::Conflict
            } else {
                Created::Retry
            }
        }
    }
}

/// Writes `kib` KiB of random data to `/root/change` in the desktop
/// (`timeout` bounds it: a desktop left paused would hang `ctr exec`).
async fn change(shared: &Shared, desk: &str, kib: u64, n: u64) -> Result<(), String> {
    let socket = shared.env.containerd_socket.clone();
    let namespace = shared.namespace.clone();
    let desk = desk.to_string();
    tokio::task::spawn_blocking(move || {
        let exec_id = format!("c{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let script = format!(
            "head -c {} /dev/urandom > /root/change && echo {n} > /root/flow",
            kib * 1024
        );
        let out = std::process::Command::new("timeout")
            .args(["20", "ctr", "--address"])
            .arg(&socket)
            .args([
                "--namespace",
                &namespace,
                "tasks",
                "exec",
                "--exec-id",
                &exec_id,
            ])
            .args([&desk, "sh", "-c", &script])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Waits until the monitor no longer sees `id` in flight (or the round's
/// flows stop).
async fn follow(shared: &Shared, creating: &AtomicBool, id: &str) {
    let start = shared.monitor.lock().expect("monitor").generation;
    loop {
        if !creating.load(Ordering::Relaxed) {
            return;
        }
        {
            let m = shared.monitor.lock().expect("monitor");
            if m.generation >= start + 2 && !m.in_flight.contains_key(id) {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The snapshot of `desk` with this target, if the create went through
/// although its answer was lost.
async fn find(shared: &Shared, desk: &str, target: &str) -> Option<String> {
    let q =
        format!("SELECT id FROM snapshots WHERE container_id = '{desk}' AND target = '{target}'");
    shared
        .rows(&q)
        .await
        .ok()?
        .into_iter()
        .next()?
        .into_iter()
        .next()
}

async fn in_flight_of(shared: &Shared, desk: &str) -> Option<String> {
    let q = format!(
        "SELECT id FROM snapshots WHERE container_id = '{desk}' \
         AND status IN ('QUEUED','DIFFING','PUSHING')"
    );
    shared
        .rows(&q)
        .await
        .ok()?
        .into_iter()
        .next()?
        .into_iter()
        .next()
}

pub(crate) async fn worker(
    shared: Arc<Shared>,
    creating: Arc<AtomicBool>,
    desk: String,
    index: usize,
    round: usize,
    mut rng: Rng,
    options: Options,
) {
    let mut n = 0u64;
    // Noted once per run of failures.
    let mut failing = false;
    while creating.load(Ordering::Relaxed) {
        n += 1;
        // Mostly small changes, some of a few MiB.
        let kib = if rng.chance(0.6) {
            rng.range(4, 256)
        } else {
            rng.range(256, options.max_change_kib.max(257))
        };
        let zstd = rng.chance(0.5);
        let cancel = rng
            .chance(options.cancel_chance)
            .then(|| rng.range(0, 1500));
        let first_replica = rng.below(2) as usize;
        let changed = change(&shared, &desk, kib, n).await;
        let first_failure = changed.is_err() && !failing;
        failing = changed.is_err();
        if let Err(e) = changed {
            if !first_failure {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            // Paused with nothing of it in flight: an agent still works on
            // a job the API has already ended.
            let last = shared
                .rows(&format!(
                    "SELECT id, status, coalesce(failure_reason, ''), finished_at FROM snapshots \
                     WHERE container_id = '{desk}' ORDER BY created_at DESC LIMIT 1"
                ))
                .await
                .ok()
                .and_then(|r| r.into_iter().next())
                .map(|r| r.join(" "))
                .unwrap_or_default();
            shared.note(format!(
                "{} changing desktop {index} ({desk}) failed: {e}; its last snapshot: {last}",
                chrono::Utc::now().format("%H:%M:%S%.3f")
            ));
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        let target = format!(
            "{}/workshops/alice/{}/d{index}:r{round}-f{n}",
            shared.env.registry, shared.namespace
        );
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut replica = first_replica;
        let id = loop {
            if !creating.load(Ordering::Relaxed) || Instant::now() > deadline {
                break None;
            }
            match create(&shared, replica, &desk, &target, zstd).await {
                Created::Id(id) => break Some(id),
                Created::Conflict => {
                    // One in flight already (an earlier flow's, or this
                    // one's whose answer was lost): follow it to its end.
                    if let Some(other) = in_flight_of(&shared, &desk).await {
                        follow(&shared, &creating, &other).await;
                    } else {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    if let Some(id) = find(&shared, &desk, &target).await {
                        break Some(id);
                    }
                }
                Created::Retry => {
                    if let Some(id) = find(&shared, &desk, &target).await {
                        break Some(id);
                    }
                    replica = 1 - replica;
                    tokio::time::sleep(Duration::from_millis(150)).await;
                }
            }
        };
        let Some(id) = id else { break };
        shared.flows.fetch_add(1, Ordering::Relaxed);
        if let Some(delay) = cancel {
            let s = shared.clone();
            let id = id.clone();
            let replica = rng.below(2) as usize;
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(delay)).await;
                s.cancels.fetch_add(1, Ordering::Relaxed);
                let _ = s
                    .graphql(replica, &s.alice, CANCEL, json!({"id": id}))
                    .await;
            });
        }
        follow(&shared, &creating, &id).await;
    }
}
