//! Two `dcs-api` replicas on one Postgres database: jobs are claimed once
//! (`FOR UPDATE SKIP LOCKED`) whichever replica queued them, and
//! subscription events cross replicas (`LISTEN/NOTIFY`).
//!
//! The agent is a fake HTTP server in the test: it registers with replica A
//! as a real agent would (shared-secret tokens), reports 100 containers,
//! heartbeats, and answers `POST /v1/jobs` with 202 while recording every
//! snapshot id it is sent. The events it "reports" are posted by the test.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use dcs_protocol::token::{AGENT_AUDIENCE, API_AUDIENCE, SharedSecret};
use dcs_protocol::{JobAccepted, JobEvent, JobRequest, agent_paths, api_paths};
use e2e_tests::stack::{Api, ApiOptions, Database, Subscription, documents, http_client, int64};
use serde_json::{Value, json};
use uuid::Uuid;

const REGISTRY: &str = "127.0.0.1:5999";
const NODE: &str = "node-fake";
const JOBS: usize = 100;

/// What the fake agent received.
#[derive(Default)]
struct Received {
    /// Snapshot ids of accepted jobs, in arrival order.
    jobs: Vec<Uuid>,
    /// Requests refused for a bad token.
    unauthorized: usize,
}

struct FakeAgent {
    url: String,
    received: Arc<Mutex<Received>>,
    instance: Uuid,
    secret: SharedSecret,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

#[derive(Clone)]
struct AgentState {
    received: Arc<Mutex<Received>>,
    secret: SharedSecret,
}

async fn agent_handler(
    State(state): State<AgentState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // Only the API, with a token for this node, as the real agent checks.
    let authorised = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|t| state.secret.verify(t, AGENT_AUDIENCE).ok())
        .is_some_and(|c| c.iss == "dcs-api" && c.sub == NODE);
    if !authorised {
        state.received.lock().unwrap().unauthorized += 1;
        return StatusCode::UNAUTHORIZED.into_response();
    }
    if method == Method::POST && uri.path() == agent_paths::JOBS {
        let Ok(job) = serde_json::from_slice::<JobRequest>(&body) else {
            return StatusCode::BAD_REQUEST.into_response();
        };
        state.received.lock().unwrap().jobs.push(job.snapshot_id);
        let accepted = JobAccepted {
            snapshot_id: job.snapshot_id,
            queued: false,
            instance_id: None,
        };
        return (StatusCode::ACCEPTED, axum::Json(accepted)).into_response();
    }
    if method == Method::GET && uri.path() == agent_paths::HEALTHZ {
        return "ok".into_response();
    }
    StatusCode::NOT_FOUND.into_response()
}

impl FakeAgent {
    /// Serves, registers with `api`, reports `containers` containers
    /// (`c-000`, ... in pods `workshop/desk-000`, ...) and heartbeats every
    /// second to each of `heartbeat_to` in turn.
    async fn start(api: &Api, containers: usize, heartbeat_to: Vec<String>) -> Self {
        let secret = SharedSecret::new(api.agent_secret()).expect("agent secret");
        let received = Arc::new(Mutex::new(Received::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let router = Router::new()
            .fallback(agent_handler)
            .with_state(AgentState {
                received: received.clone(),
                secret: secret.clone(),
            });
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        let instance = Uuid::new_v4();
        let mut agent = Self {
            url,
            received,
            instance,
            secret,
            tasks: vec![server],
        };
        let registration = json!({"node": NODE, "instanceId": instance, "url": agent.url,
            "version": "fake", "containerdVersion": "fake", "maxConcurrentJobs": 100});
        agent
            .post(&api.url, api_paths::REGISTER, &registration)
            .await;
        let list: Vec<Value> = (0..containers)
            .map(|i| {
                json!({"id": format!("c-{i:03}"), "image": "localhost/dcs-test/busybox:1",
                       "imageDigest": null, "state": "running", "snapshotter": "overlayfs",
                       "podName": format!("desk-{i:03}"), "podNamespace": "workshop",
                       "containerName": "desktop", "owner": "alice"})
            })
            .collect();
        let inventory = json!({"node": NODE, "instanceId": instance, "containers": list});
        let ack = agent.post(&api.url, api_paths::INVENTORY, &inventory).await;
        assert_eq!(ack["known"], true, "inventory accepted: {ack}");

        let secret = agent.secret.clone();
        let heartbeat = tokio::spawn(async move {
            let http = http_client();
            for round in 0usize.. {
                let base = &heartbeat_to[round % heartbeat_to.len()];
                let _ = http
                    .post(format!("{base}{}", api_paths::HEARTBEAT))
                    .bearer_auth(secret.sign("dcs-agent", API_AUDIENCE, NODE))
                    .json(&json!({"node": NODE, "instanceId": instance, "runningJobs": []}))
                    .send()
                    .await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        agent.tasks.push(heartbeat);
        agent
    }

    /// POSTs to an API replica as this agent; fails the test unless 200.
    async fn post(&self, base: &str, path: &str, body: &Value) -> Value {
        let response = http_client()
            .post(format!("{base}{path}"))
            .bearer_auth(self.secret.sign("dcs-agent", API_AUDIENCE, NODE))
            .json(body)
            .send()
            .await
            .expect("POST to the API");
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert_eq!(status.as_u16(), 200, "{path}: {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// Reports a job event to an API replica.
    async fn event(&self, base: &str, snapshot: &str, seq: u64, kind: Value) {
        let event = json!({"snapshotId": snapshot, "node": NODE, "instanceId": self.instance,
                           "seq": seq, "at": "2030-01-01T00:00:00Z", "kind": kind});
        // The wire form of the protocol's type.
        let _: JobEvent = serde_json::from_value(event.clone()).expect("a JobEvent");
        self.post(base, api_paths::EVENTS, &event).await;
    }

    fn jobs(&self) -> Vec<Uuid> {
        self.received.lock().unwrap().jobs.clone()
    }

    fn unauthorized(&self) -> usize {
        self.received.lock().unwrap().unauthorized
    }
}

fn pushed(snapshot: &str) -> Value {
    json!({"type": "PUSHED",
           "image": format!("{REGISTRY}/workshops/alice/{snapshot}:v1"),
           "manifestDigest": format!("sha256:{}", "a".repeat(64)),
           "configDigest": format!("sha256:{}", "b".repeat(64)),
           "layerDigest": format!("sha256:{}", "c".repeat(64)),
           "layerDiffId": format!("sha256:{}", "d".repeat(64)),
           "layerSize": 1234, "layerMediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
           "uncompressedSize": 4096, "baseImage": "localhost/dcs-test/busybox:1",
           "baseDigest": format!("sha256:{}", "e".repeat(64)),
           "pausedMs": 3, "durationMs": 40, "method": "overlay"})
}

/// Replica A (its data directory holds the secrets) and replica B (the same
/// secrets by file), on one fresh Postgres database.
async fn two_replicas(db: &Database) -> (Api, Api) {
    let options = || ApiOptions::postgres(db, REGISTRY, 30);
    let a = Api::start(options()).await;
    let b = Api::builder(options()).replica_of(&a).start().await;
    (a, b)
}

/// The statuses a `snapshotEvents(id:)` subscription delivers for this
/// snapshot, until a terminal one or `quiet` without anything.
async fn statuses(subscription: &mut Subscription, id: &str, quiet: Duration) -> Vec<String> {
    let mut seen = Vec::new();
    while let Some(data) = subscription.next(quiet).await {
        let event = &data["snapshotEvents"];
        if event["snapshotId"] != id {
            continue;
        }
        let status = event["status"].as_str().unwrap_or_default().to_string();
        let terminal = matches!(status.as_str(), "PUSHED" | "FAILED" | "CANCELLED");
        seen.push(status);
        if terminal {
            break;
        }
    }
    seen
}

const ONE: &str =
    "subscription($id: ID) { snapshotEvents(id: $id) { snapshotId status bytesDone bytesTotal } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_dispatch_each_job_once_and_share_subscription_events() {
    let started = Instant::now();
    let db = Database::fresh();
    let (a, b) = two_replicas(&db).await;
    let agent = FakeAgent::start(&a, JOBS, vec![a.url.clone(), b.url.clone()]).await;
    let alice = a.token("alice", "speaker", &["workshop"]);
    // B takes A's tokens: the same key.
    b.data(&alice, "{ me { sub } }", json!({})).await;
    let setup = started.elapsed();

    // 100 concurrent createSnapshot calls, half on each replica.
    let t0 = Instant::now();
    let calls = (0..JOBS).map(|i| {
        let api = if i % 2 == 0 { &a } else { &b };
        let input = json!({"input": {"containerId": format!("c-{i:03}"),
            "target": format!("{REGISTRY}/workshops/alice/desk-{i:03}:v1")}});
        let alice = alice.clone();
        async move { api.graphql(Some(&alice), documents::CREATE, input).await }
    });
    let answers = futures::future::join_all(calls).await;
    let create_time = t0.elapsed();
    let mut created: HashSet<Uuid> = HashSet::new();
    for (i, answer) in answers.iter().enumerate() {
        assert!(answer["errors"].is_null(), "call {i}: {answer}");
        let id = answer["data"]["createSnapshot"]["id"].as_str().unwrap();
        created.insert(id.parse().unwrap());
    }
    assert_eq!(created.len(), JOBS);

    // Every job reaches the agent, then nothing more comes.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let distinct: HashSet<Uuid> = agent.jobs().into_iter().collect();
        if distinct.len() >= JOBS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {JOBS} jobs reached the agent\nA:\n{}\nB:\n{}",
            distinct.len(),
            a.log_tail(),
            b.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dispatch_time = t0.elapsed();
    // Longer than the dispatcher's tick (0.5 s) many times over.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let jobs = agent.jobs();
    let mut counts: BTreeMap<Uuid, usize> = BTreeMap::new();
    for id in &jobs {
        *counts.entry(*id).or_default() += 1;
    }
    let duplicates: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        duplicates.is_empty(),
        "jobs dispatched more than once: {duplicates:?}"
    );
    assert_eq!(jobs.len(), JOBS, "each job exactly once");
    assert_eq!(
        counts.keys().copied().collect::<HashSet<_>>(),
        created,
        "the jobs sent are the snapshots created"
    );
    assert_eq!(
        agent.unauthorized(),
        0,
        "every call carried a valid API token"
    );
    assert_eq!(
        db.query(
            "SELECT count(*) FILTER (WHERE dispatched_at IS NOT NULL AND dispatch_attempts = 1) \
             || ' ' || count(*) FROM snapshots"
        ),
        format!("{JOBS} {JOBS}")
    );
    let by_a = a.log().matches("job dispatched").count();
    let by_b = b.log().matches("job dispatched").count();
    assert_eq!(by_a + by_b, JOBS, "A logged {by_a}, B {by_b}");
    eprintln!(
        "setup {setup:?}; 100 createSnapshot calls answered in {create_time:?}; all jobs at the \
         agent after {dispatch_time:?}; dispatched by A: {by_a}, by B: {by_b}"
    );

    // A subscriber on A sees what B writes, and the other way round.
    let mut ids = created.iter().map(|id| id.to_string());
    for (watcher, writer, name) in [(&a, &b, "A watching B"), (&b, &a, "B watching A")] {
        let id = ids.next().unwrap();
        let t = Instant::now();
        let mut all = watcher
            .subscribe(&alice, documents::EVENTS, json!({}))
            .await;
        let mut one = watcher.subscribe(&alice, ONE, json!({"id": id})).await;
        // The first message of a one-snapshot subscription is its current
        // state: once it is here, the subscription is live.
        let first = one
            .next(Duration::from_secs(10))
            .await
            .expect("current state");
        assert_eq!(first["snapshotEvents"]["status"], "QUEUED", "{first}");
        agent
            .event(&writer.url, &id, 1, json!({"type": "DIFFING"}))
            .await;
        agent.event(&writer.url, &id, 2, pushed(&id)).await;
        let seen = statuses(&mut one, &id, Duration::from_secs(10)).await;
        assert_eq!(
            seen,
            ["DIFFING", "PUSHED"],
            "{name}: one-snapshot subscription"
        );
        let seen = statuses(&mut all, &id, Duration::from_secs(10)).await;
        assert_eq!(
            seen,
            ["DIFFING", "PUSHED"],
            "{name}: all-snapshots subscription"
        );
        eprintln!("{name}: events delivered in {:?}", t.elapsed());
        let row = db.query(&format!(
            "SELECT status || ' ' || manifest_digest FROM snapshots WHERE id = '{id}'"
        ));
        assert_eq!(row, format!("PUSHED sha256:{}", "a".repeat(64)));
    }
    eprintln!("whole test {:?}", started.elapsed());
}

/// Progress written on replica B reaches a subscriber on replica A in the
/// order B applied it: DIFFING, PUSHING with growing byte counts, PUSHED
/// last. (A one-snapshot subscription ends at the terminal status, so an
/// event overtaken by PUSHED is lost to it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_written_on_one_replica_reaches_the_other_in_order() {
    let started = Instant::now();
    let db = Database::fresh();
    let (a, b) = two_replicas(&db).await;
    let agent = FakeAgent::start(&a, 6, vec![a.url.clone(), b.url.clone()]).await;
    let alice = a.token("alice", "speaker", &["workshop"]);
    const STEPS: u64 = 60;
    const ROUNDS: usize = 6;
    let mut failures = Vec::new();
    for round in 0..ROUNDS {
        let created = b
            .data(
                &alice,
                documents::CREATE,
                json!({"input": {"containerId": format!("c-{round:03}"),
                    "target": format!("{REGISTRY}/workshops/alice/p{round}:v1")}}),
            )
            .await;
        let id = created["createSnapshot"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let mut one = a.subscribe(&alice, ONE, json!({"id": id})).await;
        one.next(Duration::from_secs(10))
            .await
            .expect("current state");
        agent
            .event(&b.url, &id, 1, json!({"type": "DIFFING"}))
            .await;
        for step in 1..=STEPS {
            agent
                .event(
                    &b.url,
                    &id,
                    1 + step,
                    json!({"type": "PUSHING", "bytesDone": step * 1000, "bytesTotal": STEPS * 1000}),
                )
                .await;
        }
        agent.event(&b.url, &id, STEPS + 2, pushed(&id)).await;
        let mut seen: Vec<(String, i64)> = Vec::new();
        while let Some(data) = one.next(Duration::from_secs(10)).await {
            let e = &data["snapshotEvents"];
            let status = e["status"].as_str().unwrap_or_default().to_string();
            let terminal = status == "PUSHED";
            seen.push((status, int64(&e["bytesDone"])));
            if terminal {
                break;
            }
        }
        // Monotonic: QUEUED < DIFFING < PUSHING (bytes growing) < PUSHED. A
        // repeated QUEUED first (B's own announcement of the new snapshot
        // arriving after the subscription read the current state) is fine.
        let rank = |(status, bytes): &(String, i64)| match status.as_str() {
            "QUEUED" => (0, 0),
            "DIFFING" => (1, 0),
            "PUSHING" => (2, *bytes),
            "PUSHED" => (3, 0),
            _ => (9, 0),
        };
        let pushing = seen.iter().filter(|(s, _)| s == "PUSHING").count();
        let in_order = seen
            .windows(2)
            .all(|w| rank(&w[0]) < rank(&w[1]) || w[0].0 == "QUEUED" && w[1].0 == "QUEUED")
            && seen.last().is_some_and(|(s, _)| s == "PUSHED")
            && pushing == STEPS as usize;
        if !in_order {
            failures.push(format!("round {round}: {seen:?}"));
        }
    }
    eprintln!(
        "{ROUNDS} rounds of {} events in {:?}",
        STEPS + 2,
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "events out of order or missing on the other replica ({} of {ROUNDS} rounds):\n{}",
        failures.len(),
        failures.join("\n")
    );
}
