//! The race probe: a fake agent (an HTTP server in this process, signing
//! with the shared secret as a real agent does) on node `chaos-fake`, used
//! to force the interleavings that random kills hit only rarely:
//!
//! - a job's `PUSHED` racing the agent's re-registration with a new
//!   instance id (which fails the old instance's jobs): exactly one of them
//!   may win;
//! - a late, contradicting terminal event (a `FAILED` after `PUSHED`, or
//!   the other way round) with a higher sequence number from the agent
//!   instance that ran the job: it must change nothing.
//!
//! Without the API's guards (`DCS_TEST_UNGUARDED_TRANSITIONS=1`) these are
//! what the checker reports.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use dcs_protocol::token::{API_AUDIENCE, SharedSecret};
use dcs_protocol::{
    ContainerSummary, FailureCode, Heartbeat, Inventory, JobAccepted, JobEvent, JobEventKind,
    JobRequest, JobResult, Registration, agent_paths, api_paths,
};
use serde_json::json;
use sha2::Digest;
use uuid::Uuid;

use super::Shared;

pub const FAKE_NODE: &str = "chaos-fake";

const CREATE: &str =
    "mutation($input: CreateSnapshotInput!) { createSnapshot(input: $input) { id status } }";

#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Probe rounds run.
    pub races: usize,
    /// Snapshots the probe created.
    pub snapshots: usize,
    /// Of those, how many ended PUSHED (the event won) and FAILED (the
    /// re-registration won).
    pub pushed: usize,
    pub failed: usize,
    /// Late contradicting terminal events sent.
    pub late_events: usize,
    /// Probe rounds that could not be set up (say why).
    pub skipped: Vec<String>,
}

impl Stats {
    pub fn add(&mut self, other: &Stats) {
        self.races += other.races;
        self.snapshots += other.snapshots;
        self.pushed += other.pushed;
        self.failed += other.failed;
        self.late_events += other.late_events;
        self.skipped.extend(other.skipped.iter().cloned());
    }
}

pub(crate) struct FakeAgent {
    shared: Arc<Shared>,
    secret: SharedSecret,
    url: String,
    instance: Arc<Mutex<Uuid>>,
    containers: Arc<Mutex<Vec<ContainerSummary>>>,
    jobs: Arc<Mutex<HashSet<Uuid>>>,
    /// The jobs the current instance says it runs (in its heartbeats).
    running: Arc<Mutex<Vec<Uuid>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn handler(
    State(jobs): State<Arc<Mutex<HashSet<Uuid>>>>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    if method == Method::POST && uri.path() == agent_paths::JOBS {
        let Ok(job) = serde_json::from_slice::<JobRequest>(&body) else {
            return StatusCode::BAD_REQUEST.into_response();
        };
        jobs.lock().expect("jobs").insert(job.snapshot_id);
        let accepted = JobAccepted {
            snapshot_id: job.snapshot_id,
            queued: false,
            instance_id: None,
        };
        return (StatusCode::ACCEPTED, axum::Json(accepted)).into_response();
    }
    if method == Method::DELETE {
        return StatusCode::ACCEPTED.into_response();
    }
    "ok".into_response()
}

fn digest(text: &str) -> String {
    format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(text.as_bytes()))
    )
}

impl FakeAgent {
    pub(crate) async fn start(shared: Arc<Shared>) -> Result<Self, String> {
        let secret = SharedSecret::new(shared.agent_secret.clone()).map_err(|e| e.to_string())?;
        let jobs = Arc::new(Mutex::new(HashSet::new()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let url = format!(
            "http://{}",
            listener.local_addr().map_err(|e| e.to_string())?
        );
        let router = Router::new().fallback(handler).with_state(jobs.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        let mut agent = Self {
            shared,
            secret,
            url,
            instance: Arc::new(Mutex::new(Uuid::new_v4())),
            containers: Arc::new(Mutex::new(Vec::new())),
            jobs,
            running: Arc::new(Mutex::new(Vec::new())),
            tasks: vec![server],
        };
        let instance = agent.instance();
        agent.register(0, instance).await?;
        let heartbeat = tokio::spawn(heartbeats(
            agent.shared.clone(),
            agent.secret.clone(),
            agent.url.clone(),
            agent.instance.clone(),
            agent.containers.clone(),
            agent.running.clone(),
        ));
        agent.tasks.push(heartbeat);
        Ok(agent)
    }

    fn instance(&self) -> Uuid {
        *self.instance.lock().expect("instance")
    }

    fn token(&self) -> String {
        self.secret.sign("dcs-agent", API_AUDIENCE, FAKE_NODE)
    }

    async fn post(
        &self,
        replica: usize,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<(), String> {
        post(&self.shared, &self.token(), replica, path, body).await
    }

    async fn register(&self, replica: usize, instance: Uuid) -> Result<(), String> {
        let registration = Registration {
            node: FAKE_NODE.into(),
            instance_id: instance,
            url: self.url.clone(),
            version: "chaos-fake".into(),
            containerd_version: "none".into(),
            max_concurrent_jobs: 100,
        };
        self.post(replica, api_paths::REGISTER, &registration).await
    }

    async fn event(
        &self,
        replica: usize,
        snapshot: Uuid,
        instance: Uuid,
        seq: u64,
        kind: JobEventKind,
    ) -> Result<(), String> {
        let event = JobEvent {
            snapshot_id: snapshot,
            node: FAKE_NODE.into(),
            instance_id: instance,
            seq,
            at: chrono::Utc::now(),
            kind,
        };
        // As the agent does: an event refused for a passing reason is sent
        // again.
        let mut last = String::new();
        for _ in 0..10 {
            match self.post(replica, api_paths::EVENTS, &event).await {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(last)
    }

    /// One race: `count` snapshots dispatched to this agent, all DIFFING;
    /// then at once a re-registration (new instance id) on one replica and
    /// each job's PUSHED on either replica; then a late contradicting
    /// terminal event for each.
    pub(crate) async fn race(&self, round: usize, count: usize) -> Stats {
        let mut stats = Stats::default();
        match self.race_inner(round, count, &mut stats).await {
            Ok(()) => stats.races = 1,
            Err(e) => {
                self.shared
                    .note(format!("race probe of round {round} skipped: {e}"));
                stats.skipped.push(e);
            }
        }
        stats
    }

    async fn race_inner(
        &self,
        round: usize,
        count: usize,
        stats: &mut Stats,
    ) -> Result<(), String> {
        let shared = &self.shared;
        let old = self.instance();
        let ids: Vec<String> = (0..count).map(|i| format!("fake-r{round}-{i}")).collect();
        {
            let mut containers = self.containers.lock().expect("containers");
            *containers = ids
                .iter()
                .map(|id| ContainerSummary {
                    id: id.clone(),
                    image: crate::BUSYBOX_IMAGE.into(),
                    image_digest: None,
                    state: "running".into(),
                    snapshotter: "overlayfs".into(),
                    pod_name: Some(id.clone()),
                    pod_namespace: Some("workshop".into()),
                    container_name: Some("desktop".into()),
                    owner: Some("alice".into()),
                })
                .collect();
        }
        let inventory = Inventory {
            node: FAKE_NODE.into(),
            instance_id: old,
            containers: self.containers.lock().expect("containers").clone(),
        };
        self.post(0, api_paths::INVENTORY, &inventory).await?;

        let mut snapshots = Vec::new();
        for (i, container) in ids.iter().enumerate() {
            let target = format!(
                "{}/workshops/alice/{}/{container}:probe",
                shared.env.registry, shared.namespace
            );
            let input =
                json!({"input": {"containerId": container, "target": target, "node": FAKE_NODE}});
            let body = shared.graphql(i % 2, &shared.alice, CREATE, input).await?;
            let id = body["data"]["createSnapshot"]["id"]
                .as_str()
                .ok_or_else(|| format!("createSnapshot for the probe: {body}"))?;
            snapshots.push((Uuid::parse_str(id).map_err(|e| e.to_string())?, target));
        }
        stats.snapshots += snapshots.len();
        *self.running.lock().expect("running") = snapshots.iter().map(|(id, _)| *id).collect();
        // Dispatched (to this instance) and recorded as such.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let list = snapshots
                .iter()
                .map(|(id, _)| format!("'{id}'"))
                .collect::<Vec<_>>()
                .join(",");
            let q = format!(
                "SELECT count(*) FROM snapshots WHERE id IN ({list}) AND dispatched_at IS NOT NULL \
                 AND agent_instance_id = '{old}'"
            );
            let dispatched = shared
                .rows(&q)
                .await
                .ok()
                .and_then(|r| {
                    r.first()
                        .and_then(|r| r.first())
                        .and_then(|c| c.parse::<usize>().ok())
                })
                .unwrap_or(0);
            let received = {
                let jobs = self.jobs.lock().expect("jobs");
                snapshots.iter().filter(|(id, _)| jobs.contains(id)).count()
            };
            if dispatched == snapshots.len() && received == snapshots.len() {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{dispatched} of {} probe jobs recorded as dispatched after 30 s",
                    snapshots.len()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for (i, (id, _)) in snapshots.iter().enumerate() {
            self.event(i % 2, *id, old, 1, JobEventKind::Diffing)
                .await?;
        }

        // The race.
        let new = Uuid::new_v4();
        let mut racers = Vec::new();
        {
            let shared = self.shared.clone();
            let token = self.token();
            let registration = Registration {
                node: FAKE_NODE.into(),
                instance_id: new,
                url: self.url.clone(),
                version: "chaos-fake".into(),
                containerd_version: "none".into(),
                max_concurrent_jobs: 100,
            };
            racers.push(tokio::spawn(async move {
                post(&shared, &token, 0, api_paths::REGISTER, &registration).await
            }));
        }
        for (i, (id, target)) in snapshots.iter().enumerate() {
            let shared = self.shared.clone();
            let token = self.token();
            let event = JobEvent {
                snapshot_id: *id,
                node: FAKE_NODE.into(),
                instance_id: old,
                seq: 2,
                at: chrono::Utc::now(),
                kind: JobEventKind::Pushed(Box::new(pushed(target))),
            };
            // Spread over the re-registration's transaction, so that
            // some results land between its read and its writes.
            let delay = Duration::from_millis(4 * i as u64);
            racers.push(tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let mut last = Ok(());
                for _ in 0..10 {
                    last = post(&shared, &token, i % 2, api_paths::EVENTS, &event).await;
                    if last.is_ok() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                last
            }));
        }
        for r in racers {
            let _ = r.await;
        }
        *self.instance.lock().expect("instance") = new;
        self.running.lock().expect("running").clear();

        // Late contradicting terminal events, from the instance that ran
        // the job, with a higher sequence number.
        for (i, (id, target)) in snapshots.iter().enumerate() {
            let status = shared
                .rows(&format!("SELECT status FROM snapshots WHERE id = '{id}'"))
                .await?
                .into_iter()
                .next()
                .and_then(|r| r.into_iter().next())
                .unwrap_or_default();
            let late = match status.as_str() {
                "PUSHED" => {
                    stats.pushed += 1;
                    JobEventKind::Failed {
                        code: FailureCode::Registry,
                        reason: "late contradicting event (chaos probe)".into(),
                        findings: None,
                    }
                }
                "FAILED" => {
                    stats.failed += 1;
                    JobEventKind::Pushed(Box::new(pushed(target)))
                }
                _ => continue,
            };
            let _ = self.event(i % 2, *id, old, 3, late).await;
            stats.late_events += 1;
        }
        Ok(())
    }
}

fn pushed(target: &str) -> JobResult {
    JobResult {
        image: target.to_string(),
        manifest_digest: digest(&format!("manifest {target}")),
        config_digest: digest(&format!("config {target}")),
        layer_digest: digest(&format!("layer {target}")),
        layer_diff_id: digest(&format!("diff {target}")),
        layer_size: 1234,
        layer_media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
        uncompressed_size: 4096,
        base_image: crate::BUSYBOX_IMAGE.into(),
        base_digest: digest("base"),
        paused_ms: 1,
        prepare_ms: 2,
        duration_ms: 10,
        method: dcs_protocol::CommitMethod::Overlay,
        findings: Default::default(),
        layer_count: Some(2),
        base_layer_count: Some(1),
        flattened: false,
    }
}

async fn post(
    shared: &Shared,
    token: &str,
    replica: usize,
    path: &str,
    body: &impl serde::Serialize,
) -> Result<(), String> {
    let response = shared
        .http
        .post(format!("{}{path}", shared.api_urls[replica]))
        .bearer_auth(token)
        .timeout(Duration::from_secs(10))
        .json(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!(
            "{path}: {} {}",
            response.status(),
            response.text().await.unwrap_or_default()
        ))
    }
}

/// Heartbeats every second, on either replica; registers again when the
/// API does not know this instance (it was declared lost meanwhile).
async fn heartbeats(
    shared: Arc<Shared>,
    secret: SharedSecret,
    url: String,
    instance: Arc<Mutex<Uuid>>,
    containers: Arc<Mutex<Vec<ContainerSummary>>>,
    running: Arc<Mutex<Vec<Uuid>>>,
) {
    for round in 0usize.. {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let replica = round % 2;
        let id = *instance.lock().expect("instance");
        let token = secret.sign("dcs-agent", API_AUDIENCE, FAKE_NODE);
        let beat = Heartbeat {
            node: FAKE_NODE.into(),
            instance_id: id,
            running_jobs: running.lock().expect("running").clone(),
        };
        let Ok(response) = shared
            .http
            .post(format!(
                "{}{}",
                shared.api_urls[replica],
                api_paths::HEARTBEAT
            ))
            .bearer_auth(&token)
            .timeout(Duration::from_secs(5))
            .json(&beat)
            .send()
            .await
        else {
            continue;
        };
        let known = response
            .json::<serde_json::Value>()
            .await
            .map(|v| v["known"] != false)
            .unwrap_or(true);
        if !known {
            let registration = Registration {
                node: FAKE_NODE.into(),
                instance_id: id,
                url: url.clone(),
                version: "chaos-fake".into(),
                containerd_version: "none".into(),
                max_concurrent_jobs: 100,
            };
            if post(&shared, &token, replica, api_paths::REGISTER, &registration)
                .await
                .is_ok()
            {
                let inventory = Inventory {
                    node: FAKE_NODE.into(),
                    instance_id: id,
                    containers: containers.lock().expect("containers").clone(),
                };
                let _ = post(&shared, &token, replica, api_paths::INVENTORY, &inventory).await;
            }
        }
    }
}
