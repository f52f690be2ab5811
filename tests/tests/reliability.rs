//! Interleavings that used to leave a snapshot unfinished or finish it
//! twice, each forced on the real stack (Postgres, `dcs-api`, `dcs-agent`,
//! containerd, registry): the agent's answer to a dispatch arriving after
//! its first event, a cancel that beats the dispatch, a result racing the
//! lost-agent check, a job handed back and sent again, and an agent whose
//! clock is two minutes behind. After each: the snapshot ends, exactly one
//! terminal event was recorded (so one terminal webhook was queued with
//! it), and the desktop is not left paused.
//!
//! A TCP proxy between the API and the agent holds requests or answers for
//! as long as a test needs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dcs_protocol::agent_paths;
use e2e_tests::stack::{Workshop, metric_value, skopeo_inspect};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const WAIT: Duration = Duration::from_secs(90);
/// How long a desktop may stay paused after what a test did to its commit.
const DESKTOP_RESUMED: Duration = Duration::from_secs(15);

/// Postgres, the API (agents lost after `agent_timeout_seconds`), no
/// agent yet.
async fn reliable(agent_timeout_seconds: u64) -> Workshop {
    Workshop::builder("reliable")
        .agent_timeout_seconds(agent_timeout_seconds)
        .start()
        .await
}

/// A proxy in front of the agent that delays what passes through it.
#[derive(Clone)]
struct DelayingProxy {
    port: u16,
    upstream: Arc<AtomicU16>,
    /// Milliseconds each request chunk is held before it goes on.
    request_delay: Arc<AtomicU64>,
    /// Milliseconds each answer chunk is held before it goes back.
    response_delay: Arc<AtomicU64>,
    /// Job requests (`POST /v1/jobs`) that entered the proxy, held or not.
    jobs_seen: Arc<AtomicU64>,
}

impl DelayingProxy {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = Self {
            port: listener.local_addr().unwrap().port(),
            upstream: Arc::new(AtomicU16::new(0)),
            request_delay: Arc::new(AtomicU64::new(0)),
            response_delay: Arc::new(AtomicU64::new(0)),
            jobs_seen: Arc::new(AtomicU64::new(0)),
        };
        let this = proxy.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let this = this.clone();
                tokio::spawn(async move { this.serve(client).await });
            }
        });
        proxy
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn serve(self, client: TcpStream) {
        let port = self.upstream.load(Ordering::SeqCst);
        let Ok(upstream) = TcpStream::connect(("127.0.0.1", port)).await else {
            return;
        };
        let (client_read, client_write) = client.into_split();
        let (upstream_read, upstream_write) = upstream.into_split();
        let jobs_seen = self.jobs_seen.clone();
        let count_jobs = move |chunk: &[u8]| {
            let job = format!("POST {} ", agent_paths::JOBS);
            if chunk.starts_with(job.as_bytes()) {
                jobs_seen.fetch_add(1, Ordering::SeqCst);
            }
        };
        tokio::join!(
            pump(
                client_read,
                upstream_write,
                self.request_delay.clone(),
                count_jobs
            ),
            pump(
                upstream_read,
                client_write,
                self.response_delay.clone(),
                |_| {}
            ),
        );
    }

    /// Waits (bounded) until a job request has entered the proxy.
    async fn wait_for_a_job(&self) {
        e2e_tests::poll(
            WAIT,
            Duration::from_millis(20),
            async || match self.jobs_seen.load(Ordering::SeqCst) {
                0 => Err(()),
                _ => Ok(()),
            },
            |()| "no job request reached the agent's proxy".to_string(),
        )
        .await;
    }
}

/// Copies `from` to `to`, holding each chunk for the current delay; shows
/// each chunk to `inspect` as it arrives.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Arc<AtomicU64>,
    inspect: impl Fn(&[u8]),
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        inspect(&buffer[..n]);
        let hold = delay.load(Ordering::SeqCst);
        if hold > 0 {
            tokio::time::sleep(Duration::from_millis(hold)).await;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// The agent's 202 is held while its first events arrive and it dies: the
/// first event recorded the dispatch, so the lost agent fails the snapshot
/// (it used to stay DIFFING for ever and block the desktop with CONFLICT).
#[tokio::test(flavor = "multi_thread")]
async fn an_agent_answer_slower_than_its_first_event_still_records_the_dispatch() {
    let s = reliable(4).await;
    let proxy = DelayingProxy::start().await;
    let desk = s.desktop(40);
    let mut agent = s
        .agent("node-a")
        .args(["--advertise-url", &proxy.url()])
        .start();
    proxy.upstream.store(agent.port, Ordering::SeqCst);
    s.wait_for_container(&desk).await;

    proxy.response_delay.store(20_000, Ordering::SeqCst);
    let id = s.create(&desk, &s.target("slow-answer")).await;
    s.wait_status(&id, &["DIFFING", "PUSHING"], WAIT).await;
    // The answer is still held: the agent dies before the API hears it.
    agent.kill();
    proxy.response_delay.store(0, Ordering::SeqCst);
    let failed = s.wait_status(&id, &["FAILED"], WAIT).await;
    assert_eq!(failed["failureCode"], "AGENT_LOST", "{failed}");
    s.assert_one_end(&id, "FAILED");

    // The desktop is free again: a new agent resumes it and snapshots it.
    let _agent = s.agent("node-a").start();
    s.assert_desktop_runs(&desk, DESKTOP_RESUMED).await;
    s.wait_for_ready_node("node-a", None).await;
    let next = s.create(&desk, &s.target("after")).await;
    s.wait_status(&next, &["PUSHED"], WAIT).await;
    s.assert_one_end(&next, "PUSHED");
}

/// A cancel that lands while the job is on its way to the agent: the row
/// ends CANCELLED, the agent is told, and nothing is pushed.
#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_that_beats_the_dispatch_reaches_the_agent() {
    let s = reliable(30).await;
    let proxy = DelayingProxy::start().await;
    let desk = s.desktop(60);
    let agent = s
        .agent("node-b")
        .args(["--advertise-url", &proxy.url()])
        .start();
    proxy.upstream.store(agent.port, Ordering::SeqCst);
    s.wait_for_container(&desk).await;

    proxy.request_delay.store(3_000, Ordering::SeqCst);
    let target = s.target("cancelled");
    let id = s.create(&desk, &target).await;
    // The cancel comes once the dispatcher has sent the job into the proxy
    // (where it is held): an order, not a guess at how long that takes.
    proxy.wait_for_a_job().await;
    let cancelled = s
        .api
        .data(
            &s.alice,
            "mutation($id: ID!) { cancelSnapshot(id: $id) { id status } }",
            json!({"id": id}),
        )
        .await;
    assert_eq!(
        cancelled["cancelSnapshot"]["status"], "CANCELLED",
        "{cancelled}"
    );
    proxy.request_delay.store(0, Ordering::SeqCst);

    // The job reached the agent after the cancel; the agent must stop it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !s.event_kinds(&id).iter().any(|k| k == "CANCEL_REQUESTED") {
        assert!(
            Instant::now() < deadline,
            "the agent was never told: {:?}\napi:\n{}\nagent:\n{}",
            s.event_kinds(&id),
            s.api.log_tail(),
            agent.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Long enough for a commit that was not stopped to have pushed.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(s.snapshot(&id).await["status"], "CANCELLED");
    s.assert_one_end(&id, "CANCELLED");
    assert!(
        skopeo_inspect(&target).is_err(),
        "the cancelled snapshot was pushed"
    );
    s.assert_desktop_runs(&desk, DESKTOP_RESUMED).await;
    let metrics = agent.metrics(&s.api).await;
    assert_eq!(
        metric_value(&metrics, r#"dcs_agent_commits_total{outcome="cancelled"}"#),
        1.0,
        "the agent did not cancel the job:\n{metrics}"
    );
}

/// The agent stops answering mid-commit (SIGSTOP) and is declared lost; when
/// it wakes up, its PUSHED arrives for a snapshot that already FAILED. The
/// snapshot stays FAILED, with one terminal event, and the image the agent
/// pushed for it is removed from the registry (no tag without a snapshot).
#[tokio::test(flavor = "multi_thread")]
async fn a_result_after_the_lost_agent_verdict_changes_nothing() {
    let s = reliable(3).await;
    let desk = s.desktop(40);
    let mut agent = s.agent("node-c").start();
    s.wait_for_container(&desk).await;

    let target = s.target("late");
    let id = s.create(&desk, &target).await;
    s.wait_status(&id, &["DIFFING", "PUSHING"], WAIT).await;
    agent.signal("STOP");
    let failed = s.wait_status(&id, &["FAILED"], WAIT).await;
    assert_eq!(failed["failureCode"], "AGENT_LOST", "{failed}");
    agent.signal("CONT");

    // The agent finishes and reports; the verdict stands, and the API
    // deletes what the agent pushed ("DELETED": it was there).
    let orphan = format!(
        "SELECT outcome || ' ' || (detail->>'manifest') FROM audit_log \
         WHERE action = 'removeOrphanImage' AND target_id = '{id}'"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while s.db.query(&orphan).trim().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the woken agent's image was never removed\napi:\n{}",
            s.api.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(s.db.query(&orphan).trim(), "removed DELETED");
    assert!(skopeo_inspect(&target).is_err(), "{target} is still served");
    assert_eq!(s.snapshot(&id).await["status"], "FAILED");
    s.assert_one_end(&id, "FAILED");
    s.assert_desktop_runs(&desk, DESKTOP_RESUMED).await;
}

/// A job waiting for a slot when the agent shuts down is handed back and
/// sent to the next agent, whose events continue the sequence: its first
/// event is not mistaken for a duplicate.
#[tokio::test(flavor = "multi_thread")]
async fn a_job_handed_back_and_sent_again_keeps_its_events() {
    let s = reliable(30).await;
    let busy = s.desktop(30);
    let waiting = s.desktop(0);
    let mut agent = s
        .agent("node-d")
        .args([
            "--max-concurrent-jobs",
            "1",
            "--shutdown-grace-seconds",
            "300",
        ])
        .start();
    s.wait_for_container(&busy).await;
    s.wait_for_container(&waiting).await;

    let first = s.create(&busy, &s.target("busy")).await;
    s.wait_status(&first, &["DIFFING", "PUSHING"], WAIT).await;
    let second = s.create(&waiting, &s.target("waiting")).await;
    // Dispatched to the agent, waiting for its only slot.
    let deadline = Instant::now() + WAIT;
    while s
        .db
        .query(&format!(
            "SELECT dispatched_at IS NOT NULL FROM snapshots WHERE id = '{second}'"
        ))
        .trim()
        != "t"
    {
        assert!(
            Instant::now() < deadline,
            "the second job was not dispatched"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        agent.terminate(Duration::from_secs(300)),
        "agent did not stop"
    );
    s.wait_status(&first, &["PUSHED"], WAIT).await;
    assert!(s.event_kinds(&second).contains(&"HANDED_BACK".to_string()));

    let _agent = s.agent("node-d").start();
    s.wait_status(&second, &["PUSHED"], WAIT).await;
    let kinds = s.event_kinds(&second);
    let handed_back = kinds.iter().position(|k| k == "HANDED_BACK").unwrap();
    assert!(
        kinds[handed_back..].iter().any(|k| k == "DIFFING"),
        "the re-sent job's DIFFING was dropped: {kinds:?}"
    );
    s.assert_one_end(&second, "PUSHED");
    let seqs: Vec<i64> = s
        .db
        .query(&format!(
            "SELECT seq FROM snapshot_events WHERE snapshot_id = '{second}' AND seq IS NOT NULL ORDER BY id"
        ))
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
}

/// An agent whose clock is two minutes behind the API's: its tokens would
/// be expired on arrival. It learns the API's time and its results land.
#[tokio::test(flavor = "multi_thread")]
async fn an_agent_clock_two_minutes_behind_loses_no_result() {
    let s = reliable(30).await;
    let desk = s.desktop(1);
    let agent = s
        .agent("node-e")
        .wrapper([
            "env",
            "FAKETIME_DONT_FAKE_MONOTONIC=1",
            "faketime",
            "-f",
            "-120s",
        ])
        .start();
    s.wait_for_container(&desk).await;
    let id = s.create(&desk, &s.target("skewed")).await;
    let pushed = s.wait_status(&id, &["PUSHED"], WAIT).await;
    assert!(pushed["manifestDigest"].as_str().is_some());
    s.assert_one_end(&id, "PUSHED");
    assert!(
        agent.log().contains("clock differs"),
        "the agent did not run with a skewed clock:\n{}",
        agent.log_tail()
    );
}
