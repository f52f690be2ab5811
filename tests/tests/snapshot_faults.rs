//! Faults with real processes: agents killed (SIGKILL) or stopped (SIGTERM)
//! mid-commit, a registry that is down, the API killed mid-job,
//! cancellation, and a spool with little room. Real Postgres, containerd,
//! runc, registry, `dcs-api` and `dcs-agent`.

use std::time::{Duration, Instant};

use e2e_tests::TestEnv;
use e2e_tests::stack::{
    Agent, Workshop, free_port, metric_value, registry_digest, skopeo_inspect, task_status,
};
use e2e_tests::tmpfs::Tmpfs;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(90);

/// Postgres, the API (agents lost after `agent_timeout_seconds`), and a
/// running desktop of alice's; no agent yet. `extra_prefix`: one more
/// repository prefix speakers may push under.
async fn faults(agent_timeout_seconds: u64, extra_prefix: Option<&str>) -> (Workshop, String) {
    let mut builder = Workshop::builder("faults").agent_timeout_seconds(agent_timeout_seconds);
    if let Some(prefix) = extra_prefix {
        builder = builder.speaker_prefix(prefix);
    }
    let workshop = builder.start().await;
    let desk = workshop.desktop(0);
    (workshop, desk)
}

/// (a) An agent killed (SIGKILL) during a commit: the snapshot fails with a
/// reason within the agent timeout, no tag is left, and the restarted agent
/// registers again and works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_killed_during_a_commit_fails_the_snapshot_and_a_restarted_agent_works() {
    let (s, desk) = faults(5, None).await;
    let mut agent = s.agent("node-a").start();
    s.wait_for_container(&desk).await;
    let registered = s.node("node-a").await;
    assert_eq!(registered["state"], "READY", "{registered}");
    // ~300 MB of random data: a gzip commit of it takes long.
    s.write_random(&desk, 300);

    let target = s.target("v1");
    let id = s.create(&desk, &target).await;
    s.wait_status(&id, &["DIFFING"], WAIT).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let task_at_kill = task_status(&s.ctr, &desk);
    let leases = s.ctr.run(&["leases", "ls"]);
    assert!(
        leases.contains("dcs.io/owner=dcs-agent"),
        "the commit holds a lease: {leases}"
    );
    agent.kill();
    let killed = Instant::now();

    // A bounded wait: the snapshot ends well within six agent timeouts (5 s
    // each; heartbeats every second, a dispatcher tick of 0.5 s). It used to
    // assert 10 s as well, which two busy cores could exceed.
    let failed = s
        .wait_status(
            &id,
            &["FAILED", "PUSHED", "CANCELLED"],
            Duration::from_secs(30),
        )
        .await;
    let took = killed.elapsed();
    println!(
        "FAILED {took:?} after the kill: {} ({}); the task was {task_at_kill:?} at the kill",
        failed["failureReason"], failed["failureCode"]
    );
    assert_eq!(failed["status"], "FAILED", "{failed}");
    assert_eq!(failed["failureCode"], "AGENT_LOST", "{failed}");
    let reason = failed["failureReason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("node-a")
            && (reason.contains("stopped responding") || reason.contains("restarted")),
        "{failed}"
    );
    assert_eq!(s.node("node-a").await["state"], "LOST");
    assert_eq!(
        s.db.query(&format!(
            "SELECT status || ' ' || coalesce(manifest_digest, '-') FROM snapshots WHERE id = '{id}'"
        )),
        "FAILED -"
    );
    // No tag, half-pushed or otherwise.
    let inspected = skopeo_inspect(&target);
    assert!(inspected.is_err(), "{target} exists after the agent died");

    // The agent comes back: a new registration, READY, its leftover lease
    // deleted, and a new snapshot of the same container works.
    agent.restart(&s.api);
    let before = registered["registeredAt"].as_str().unwrap().to_string();
    let node = s.wait_for_ready_node("node-a", Some(&before)).await;
    println!("re-registered: {node}");
    let leases = s.ctr.run(&["leases", "ls"]);
    assert!(
        !leases.contains("dcs.io/owner=dcs-agent"),
        "the restarted agent left the dead one's lease: {leases}"
    );
    // Was the desktop left frozen by the dead agent's pause?
    let task_after_restart = s.wait_task_running(&desk, Duration::from_secs(10)).await;
    if task_after_restart.as_deref() == Some("PAUSED") {
        // Thaw it by hand, to check the rest; the assertion at the end
        // reports it.
        s.ctr.run(&["tasks", "resume", &desk]);
    }
    s.ctr
        .exec(&desk, "rm /root/big && echo after > /root/after");
    let target2 = s.target("v2");
    let id2 = s.create(&desk, &target2).await;
    let done = s
        .wait_status(&id2, &["PUSHED", "FAILED", "CANCELLED"], WAIT)
        .await;
    assert_eq!(done["status"], "PUSHED", "{done}\n{}", agent.log_tail());
    assert_eq!(
        registry_digest(&target2),
        done["manifestDigest"].as_str().unwrap()
    );
    assert_eq!(
        task_after_restart.as_deref(),
        Some("RUNNING"),
        "the desktop was {task_at_kill:?} when the agent was killed mid-commit and is still \
         {task_after_restart:?} 10 s after the agent restarted: a killed agent leaves the \
         speaker's desktop frozen"
    );
}

/// (b) A registry where nothing listens: FAILED, code REGISTRY, with the
/// registry's error; the desktop keeps running and the agent keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_down_fails_with_the_registry_error() {
    let dead = format!("127.0.0.1:{}", free_port());
    let (s, desk) = faults(20, Some(&format!("{dead}/workshops/{{sub}}"))).await;
    let agent = s
        .agent("node-b")
        .args(["--insecure-registry", &dead])
        .start();
    s.wait_for_container(&desk).await;
    s.ctr.exec(&desk, "echo change > /root/change");

    let target = format!("{dead}/workshops/alice/desk:v1");
    let id = s.create(&desk, &target).await;
    let failed = s
        .wait_status(&id, &["FAILED", "PUSHED", "CANCELLED"], WAIT)
        .await;
    println!(
        "registry down: {} {}",
        failed["failureCode"], failed["failureReason"]
    );
    assert_eq!(failed["status"], "FAILED", "{failed}");
    assert_eq!(failed["failureCode"], "REGISTRY", "{failed}");
    let reason = failed["failureReason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&dead),
        "the reason names the registry: {failed}"
    );
    let lower = reason.to_lowercase();
    assert!(
        lower.contains("refused") || lower.contains("connect") || lower.contains("unreachable"),
        "the reason says what went wrong: {failed}"
    );
    assert_eq!(
        s.db.query(&format!(
            "SELECT failure_code FROM snapshots WHERE id = '{id}'"
        )),
        "REGISTRY"
    );
    assert_eq!(task_status(&s.ctr, &desk).as_deref(), Some("RUNNING"));

    // The same container to a live registry: fine.
    let target = s.target("v1");
    let id = s.create(&desk, &target).await;
    let done = s
        .wait_status(&id, &["PUSHED", "FAILED", "CANCELLED"], WAIT)
        .await;
    assert_eq!(done["status"], "PUSHED", "{done}\n{}", agent.log_tail());
    assert_eq!(
        registry_digest(&target),
        done["manifestDigest"].as_str().unwrap()
    );
}

/// Kills the API during a commit and keeps it down until the agent has
/// pushed (so the result can only land by the agent retrying its events),
/// and at least `min_down`; returns when the API was killed. The caller
/// starts it again.
async fn kill_api_until_the_agent_has_pushed(
    s: &mut Workshop,
    agent: &Agent,
    id: &str,
    min_down: Duration,
) -> Instant {
    s.wait_status(id, &["DIFFING"], WAIT).await;
    s.api.kill();
    let down = Instant::now();
    let deadline = Instant::now() + WAIT;
    loop {
        let metrics = agent.metrics(&s.api).await;
        let finished = metric_value(&metrics, "dcs_agent_commits_total{outcome=\"pushed\"}")
            + metric_value(&metrics, "dcs_agent_commits_total{outcome=\"failed\"}");
        if finished >= 1.0 && down.elapsed() >= min_down {
            return down;
        }
        assert!(
            Instant::now() < deadline,
            "the agent did not finish: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// (c) The API killed (SIGKILL) mid-job and restarted: the job's result
/// still lands in the database, because the agent retries its events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_killed_mid_job_still_records_the_result() {
    let (mut s, desk) = faults(30, None).await;
    let agent = s.agent("node-c").start();
    s.wait_for_container(&desk).await;
    s.write_random(&desk, 24);
    let target = s.target("v1");
    let id = s.create(&desk, &target).await;
    let down = kill_api_until_the_agent_has_pushed(&mut s, &agent, &id, Duration::ZERO).await;
    s.api.restart().await;
    let down = down.elapsed();
    println!("API down for {down:?}");
    let done = s
        .wait_status(&id, &["PUSHED", "FAILED", "CANCELLED"], WAIT)
        .await;
    assert_eq!(done["status"], "PUSHED", "{done}\n{}", s.api.all_logs());
    let digest = done["manifestDigest"].as_str().unwrap();
    assert_eq!(registry_digest(&target), digest, "the registry serves it");
    assert_eq!(
        s.db.query(&format!(
            "SELECT status || ' ' || manifest_digest FROM snapshots WHERE id = '{id}'"
        )),
        format!("PUSHED {digest}")
    );
    let kinds = s.event_kinds(&id);
    assert_eq!(
        kinds.first().map(String::as_str),
        Some("QUEUED"),
        "{kinds:?}"
    );
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("PUSHED"),
        "{kinds:?}"
    );
    assert!(kinds.iter().any(|k| k == "DIFFING"), "{kinds:?}");
    assert_eq!(s.node("node-c").await["state"], "READY");
}

/// The API down for longer than the agent timeout while the agent is fine
/// and finishing the job (a slow rollout of a single replica): the result
/// must still land; the agent never stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_down_longer_than_the_agent_timeout_still_records_the_result() {
    let (mut s, desk) = faults(5, None).await;
    let mut agent = s.agent("node-c2").start();
    s.wait_for_container(&desk).await;
    s.write_random(&desk, 24);
    let target = s.target("v1");
    let id = s.create(&desk, &target).await;
    // Down for longer than the agent timeout (5 s).
    let down =
        kill_api_until_the_agent_has_pushed(&mut s, &agent, &id, Duration::from_secs(7)).await;
    // The agent's next heartbeat (every 5 s by default) and its next retry
    // (backoff up to 5 s) normally come after the restarted API's first
    // look at its agents; hold the agent for a moment so that they do here
    // too, instead of racing the API's start-up.
    agent.signal("STOP");
    s.api.restart().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    agent.signal("CONT");
    let down = down.elapsed();
    let done = s
        .wait_status(&id, &["PUSHED", "FAILED", "CANCELLED"], WAIT)
        .await;
    let pushed = skopeo_inspect(&target).is_ok();
    assert_eq!(
        done["status"], "PUSHED",
        "the agent pushed {target} (in the registry: {pushed}) while the API was down for \
         {down:?} (> agent timeout 5 s); after the API restart the snapshot is {done}"
    );
    assert_eq!(
        registry_digest(&target),
        done["manifestDigest"].as_str().unwrap()
    );
}

/// (d) SIGTERM while a job runs: the agent finishes it (PUSHED, reported)
/// before it exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_sigterm_lets_the_running_job_finish() {
    let (s, desk) = faults(30, None).await;
    let mut agent = s.agent("node-d").start();
    s.wait_for_container(&desk).await;
    s.write_random(&desk, 24);
    let target = s.target("v1");
    let id = s.create(&desk, &target).await;
    s.wait_status(&id, &["DIFFING"], WAIT).await;
    let started = Instant::now();
    assert!(
        agent.terminate(Duration::from_secs(60)),
        "the agent did not exit within 60 s of SIGTERM"
    );
    println!("agent exited {:?} after SIGTERM", started.elapsed());
    assert!(!agent.is_running());
    // Reported before the exit: the row is already final.
    let row = s.db.query(&format!(
        "SELECT status || ' ' || coalesce(manifest_digest, '-') FROM snapshots WHERE id = '{id}'"
    ));
    let digest = registry_digest(&target);
    assert_eq!(
        row,
        format!("PUSHED {digest}"),
        "after the agent exited; agent log:\n{}",
        agent.log()
    );
    assert!(agent.log().contains("shutting down"), "{}", agent.log());
    assert_eq!(s.snapshot(&id).await["status"], "PUSHED");
    assert_eq!(task_status(&s.ctr, &desk).as_deref(), Some("RUNNING"));
}

/// (e) cancelSnapshot of a running snapshot ends CANCELLED (or PUSHED when
/// too late) and leaves the desktop running; of a queued one (agent
/// unreachable), CANCELLED at once and never dispatched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_snapshot_ends_cancelled_and_leaves_the_desktop_running() {
    let (s, desk) = faults(30, None).await;
    let mut agent = s.agent("node-e").start();
    s.wait_for_container(&desk).await;
    s.write_random(&desk, 24);
    let cancel = "mutation($id: ID!) { cancelSnapshot(id: $id) { id status } }";

    // Running.
    let target = s.target("v1");
    let id = s.create(&desk, &target).await;
    s.wait_status(&id, &["DIFFING"], WAIT).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let task_before = task_status(&s.ctr, &desk);
    let answer = s.api.data(&s.alice, cancel, json!({"id": id})).await;
    println!("cancel answered {answer}; the task was {task_before:?}");
    let done = s
        .wait_status(&id, &["CANCELLED", "PUSHED", "FAILED"], WAIT)
        .await;
    println!(
        "after the cancel: {} {}",
        done["status"], done["failureReason"]
    );
    assert!(
        done["status"] == "CANCELLED" || done["status"] == "PUSHED",
        "{done}"
    );
    if done["status"] == "CANCELLED" {
        assert!(skopeo_inspect(&target).is_err(), "{target} exists");
    }
    let task = s.wait_task_running(&desk, Duration::from_secs(5)).await;
    assert_eq!(
        task.as_deref(),
        Some("RUNNING"),
        "the desktop after the cancel (it was {task_before:?})"
    );
    // The agent records the request only while it still holds the job: a
    // cancel that reached it after the push ended (it answers 404, the
    // result is on its way) leaves no CANCEL_REQUESTED, and PUSHED stands.
    let kinds = s.event_kinds(&id);
    if done["status"] == "CANCELLED" {
        assert!(kinds.iter().any(|k| k == "CANCEL_REQUESTED"), "{kinds:?}");
    }
    // Cancelling again: it has finished.
    let again = s
        .api
        .graphql(Some(&s.alice), cancel, json!({"id": id}))
        .await;
    assert_eq!(
        again["errors"][0]["extensions"]["code"], "CONFLICT",
        "{again}"
    );

    // Queued: the agent is gone (its node not yet declared lost), so the
    // dispatcher keeps retrying; the cancel ends it at once.
    agent.kill();
    s.ctr.exec(&desk, "echo queued > /root/queued");
    let target = s.target("v2");
    let id = s.create(&desk, &target).await;
    let attempts =
        || async { metric_value(&s.api.metrics().await, "dcs_api_dispatch_attempts_total") };
    let first = attempts().await;
    // The dispatcher retries: a bounded wait for its next attempt (it used
    // to be a fixed 2 s, which a busy machine could miss).
    e2e_tests::poll(
        WAIT,
        Duration::from_millis(200),
        async || {
            let now = attempts().await;
            if now > first { Ok(()) } else { Err(now) }
        },
        |now| format!("the dispatcher did not retry: {now} attempts, {first} before"),
    )
    .await;
    assert_eq!(s.snapshot(&id).await["status"], "QUEUED");
    let answer = s.api.data(&s.alice, cancel, json!({"id": id})).await;
    assert_eq!(answer["cancelSnapshot"]["status"], "CANCELLED", "{answer}");
    // The agent is back: the cancelled job is not sent to it.
    let before = s.node("node-e").await["registeredAt"]
        .as_str()
        .unwrap()
        .to_string();
    agent.restart(&s.api);
    s.wait_for_ready_node("node-e", Some(&before)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let metrics = agent.metrics(&s.api).await;
    assert!(
        !metrics.contains("dcs_agent_commits_total{"),
        "the restarted agent ran a job: {metrics}"
    );
    assert_eq!(s.snapshot(&id).await["status"], "CANCELLED");
    assert!(
        s.db.query(&format!(
            "SELECT count(*) FROM snapshots WHERE id = '{id}' AND dispatched_at IS NOT NULL"
        )) == "0"
    );
    assert_eq!(task_status(&s.ctr, &desk).as_deref(), Some("RUNNING"));
}

/// A TCP front for the registry that holds every manifest PUT for
/// `hold` before passing it on, and says when it has seen one: the moment
/// the agent writes the tag, made long enough to cancel in.
async fn slow_manifest_front(
    registry: String,
    hold: Duration,
) -> (String, tokio::sync::mpsc::UnboundedReceiver<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (seen, seen_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(upstream) = tokio::net::TcpStream::connect(&registry).await else {
                continue;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let (mut client_read, mut client_write) = client.into_split();
                let (mut upstream_read, mut upstream_write) = upstream.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut upstream_read, &mut client_write).await;
                });
                let mut buffer = vec![0u8; 64 * 1024];
                loop {
                    let n = match client_read.read(&mut buffer).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let chunk = &buffer[..n];
                    let is_manifest_put = chunk.starts_with(b"PUT ")
                        && chunk.windows(11).any(|w| w == b"/manifests/");
                    if is_manifest_put {
                        let _ = seen.send(());
                        tokio::time::sleep(hold).await;
                    }
                    if upstream_write.write_all(chunk).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (address, seen_rx)
}

/// (f) A cancel that arrives while the agent writes the tag is too late:
/// the commit finishes and the snapshot ends PUSHED with the registry's
/// digest, never CANCELLED with its image in the registry anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_while_the_tag_is_written_ends_pushed() {
    let env = TestEnv::get();
    let (front, mut manifest_puts) =
        slow_manifest_front(env.registry.clone(), Duration::from_secs(3)).await;
    let (s, desk) = faults(30, Some(&format!("{front}/workshops/{{sub}}"))).await;
    let _agent = s
        .agent("node-f")
        .args(["--insecure-registry", &front])
        .start();
    s.wait_for_container(&desk).await;
    s.ctr.exec(&desk, "echo late > /root/late");
    let target = format!("{front}/workshops/alice/{}:late", s.ctr.namespace);
    let id = s.create(&desk, &target).await;
    tokio::time::timeout(WAIT, manifest_puts.recv())
        .await
        .expect("the agent never wrote the manifest")
        .expect("the front stopped");
    let cancel = "mutation($id: ID!) { cancelSnapshot(id: $id) { id status } }";
    let answer = s.api.data(&s.alice, cancel, json!({"id": id})).await;
    println!("cancel answered {answer}");
    let done = s
        .wait_status(&id, &["CANCELLED", "PUSHED", "FAILED"], WAIT)
        .await;
    assert_eq!(done["status"], "PUSHED", "{done}");
    assert_eq!(
        done["manifestDigest"].as_str().unwrap_or(""),
        registry_digest(&target.replace(&front, &s.env.registry)),
        "the PUSHED digest is the registry's"
    );
    let kinds = s.event_kinds(&id);
    assert!(kinds.iter().any(|k| k == "CANCEL_REQUESTED"), "{kinds:?}");
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("PUSHED"),
        "{kinds:?}"
    );
    let task = s.wait_task_running(&desk, Duration::from_secs(5)).await;
    assert_eq!(task.as_deref(), Some("RUNNING"));
}

/// Threads of process `pid` named `name` (a spool file's writer is one).
fn threads_named(pid: u32, name: &str) -> usize {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm")).is_ok_and(|comm| comm.trim() == name)
        })
        .count()
}

/// (g) A cancel while the layer is being built stops the build: it used to
/// go on, on its own thread, reading the whole desktop into the spool after
/// the job had given its slot back. The spool is a tmpfs larger than the
/// layer, so that only the stop (not a full spool) can end the build early.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_mid_build_stops_the_build_and_frees_the_spool() {
    const SPOOL_WRITER: &str = "dcs-spool";
    const CANCEL_AT: u64 = 32 << 20;
    let spool = Tmpfs::mount(768);
    let spool_dir = spool.path().join("spool");
    let (s, desk) = faults(30, None).await;
    let agent = s
        .agent("node-g")
        .args(["--spool-dir", &spool_dir.to_string_lossy()])
        .start();
    let pid = agent.pid().expect("the agent runs");
    s.wait_for_container(&desk).await;
    // ~600 MB that do not compress: a layer as large, built in seconds.
    s.write_random(&desk, 600);

    let target = s.target("v1");
    let id = s.create(&desk, &target).await;
    e2e_tests::poll(
        WAIT,
        Duration::from_millis(20),
        async || {
            let used = spool.used_bytes();
            if used >= CANCEL_AT { Ok(()) } else { Err(used) }
        },
        |used| format!("the spool never held 32 MiB (it holds {used} bytes)"),
    )
    .await;
    let cancel = "mutation($id: ID!) { cancelSnapshot(id: $id) { id status } }";
    let answer = s.api.data(&s.alice, cancel, json!({"id": id})).await;
    let cancelled = Instant::now();
    let at_cancel = spool.used_bytes();
    println!("cancel answered {answer} with {at_cancel} bytes in the spool");

    let mut peak = at_cancel;
    let freed = e2e_tests::poll(
        Duration::from_secs(3),
        Duration::from_millis(20),
        async || {
            let used = spool.used_bytes();
            peak = peak.max(used);
            let writers = threads_named(pid, SPOOL_WRITER);
            if used == 0 && writers == 0 {
                Ok(cancelled.elapsed())
            } else {
                Err((used, writers))
            }
        },
        |(used, writers)| {
            format!(
                "3 s after the cancel the spool still holds {used} bytes ({at_cancel} at the \
                 cancel) and {writers} spool writer thread(s) run: the build went on"
            )
        },
    )
    .await;
    println!("spool empty and its writer gone {freed:?} after the cancel (peak {peak} bytes)");

    let done = s
        .wait_status(&id, &["CANCELLED", "PUSHED", "FAILED"], WAIT)
        .await;
    assert_eq!(done["status"], "CANCELLED", "{done}\n{}", agent.log_tail());
    assert!(skopeo_inspect(&target).is_err(), "{target} exists");
    let task = s.wait_task_running(&desk, Duration::from_secs(5)).await;
    assert_eq!(task.as_deref(), Some("RUNNING"));
}

/// (h) A spool with room for the layers the image keeps, not for a
/// discarded one as well: a single-layer commit of a desktop that changed
/// during the bulk read builds a delta, then reads everything again while
/// paused. The delta's spool file must be gone before that second read
/// fills the spool (it used to stay until the commit ended, and the read
/// again ran out of space).
#[test]
fn a_discarded_delta_leaves_the_spool_before_the_change_is_read_again() {
    const BULK_MIB: u64 = 400;
    const LATE_MIB: u64 = 60;
    let env = TestEnv::get();
    let ctr = e2e_tests::Ctr::new(&env.containerd_socket, &e2e_tests::unique("spool-delta"));
    let image = ctr.import_busybox("overlayfs");
    let id = e2e_tests::unique("c");
    ctr.run_detached(&id, image, "overlayfs", &["sleep", "1000"]);
    ctr.exec(
        &id,
        &format!("dd if=/dev/urandom of=/root/a bs=1M count={BULK_MIB} 2>/dev/null"),
    );
    // The bulk layer (a) and the layer read again (a and the late file)
    // fit with 30 MiB to spare; the delta (the late file) on top does not.
    let spool = Tmpfs::mount(2 * BULK_MIB + LATE_MIB + 30);
    let spool_dir = spool.path().join("spool").to_string_lossy().to_string();
    let target = format!("{}/e2e/{}:one-layer", env.registry, ctr.namespace);

    let commit = std::thread::spawn({
        let env = env.clone();
        let namespace = ctr.namespace.clone();
        let id = id.clone();
        let target = target.clone();
        let spool_dir = spool_dir.clone();
        move || {
            e2e_tests::commit_output(
                &env,
                &env.containerd_socket,
                &namespace,
                &id,
                &target,
                // zstd stores what does not compress as it is: layers of
                // the files' sizes (gzip's grow by some 5%).
                &[
                    "--single-layer",
                    "--compression",
                    "zstd",
                    "--spool-dir",
                    &spool_dir,
                ],
            )
        }
    });
    // Written while the bulk pass reads /root/a: /root was listed before,
    // so only the paused passes see the late file.
    let started = Instant::now();
    while spool.used_bytes() < 4 << 20 {
        assert!(
            started.elapsed() < WAIT && !commit.is_finished(),
            "the bulk read never started"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    ctr.exec(
        &id,
        &format!("dd if=/dev/urandom of=/root/late bs=1M count={LATE_MIB} 2>/dev/null"),
    );
    let output = commit.join().unwrap();
    assert!(
        output.status.success(),
        "the commit failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    // The late file was whole at the pause (else the test proves nothing).
    let uncompressed = result["layer"]["uncompressedSize"].as_u64().unwrap();
    assert!(
        uncompressed > (BULK_MIB + LATE_MIB) << 20,
        "the late file was not written before the pause: {result}"
    );
    assert!(result["deltaLayer"].is_null(), "{result}");
    assert_eq!(spool.used_bytes(), 0, "the commit left its spool files");
}
