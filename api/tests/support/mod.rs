//! The API in-process on a fresh PostgreSQL database, with its dispatcher
//! running, and node agents played by the test: `FakeAgent` serves the
//! agent's HTTP endpoints (`/v1/jobs`, `/v1/preview`) with answers the test
//! chooses, checks the API's token on every call, and records what it was
//! sent. Needs PostgreSQL (`DATABASE_URL`); fails, never skips, without it.

#![allow(dead_code)] // Each test file uses its own part of the harness.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::agents::PreviewLimits;
use api::auth::policy::Policy;
use api::auth::{JwtSigner, JwtVerifier, Role};
use api::graphql::{SchemaLimits, build_schema};
use api::http::HttpLimits;
use api::state::AppState;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use dcs_protocol::token::{AGENT_AUDIENCE, AGENT_ISSUER, API_AUDIENCE, API_ISSUER, SharedSecret};
use dcs_protocol::{JobAccepted, JobRequest, PreviewRequest, agent_paths, api_paths};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub(crate) const NODE: &str = "node-1";
pub(crate) const NAMESPACE: &str = "workshop";
pub(crate) const REGISTRY: &str = "registry.test";

pub(crate) const CREATE: &str = "mutation($input: CreateSnapshotInput!) {
    createSnapshot(input: $input) { id status } }";

/// A fresh PostgreSQL database, dropped when the test ends.
pub(crate) struct TestDb {
    pub(crate) url: String,
    name: String,
    server_url: String,
}

impl TestDb {
    pub(crate) fn fresh() -> Self {
        let server_url = std::env::var("DATABASE_URL").unwrap_or_else(|_| {
            panic!(
                "DATABASE_URL is not set: these tests need PostgreSQL; run \
                 `scripts/dev-env.sh start && source .dcs-env/env.sh`"
            )
        });
        let name = format!("dcs_api_{}", Uuid::new_v4().simple());
        psql(&server_url, &format!("CREATE DATABASE {name}"));
        let (base, _) = server_url
            .rsplit_once('/')
            .expect("DATABASE_URL ends with /<database>");
        Self {
            url: format!("{base}/{name}"),
            name,
            server_url,
        }
    }

    /// Runs SQL in this database; returns the rows (unaligned, `|`-separated).
    pub(crate) fn query(&self, sql: &str) -> String {
        psql(&self.url, sql)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .arg(&self.server_url)
            .args([
                "-c",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .output();
    }
}

fn psql(url: &str, sql: &str) -> String {
    let output = Command::new("psql")
        .arg(url)
        .args(["-v", "ON_ERROR_STOP=1", "-At", "-c", sql])
        .output()
        .expect("run psql (PostgreSQL client)");
    assert!(
        output.status.success(),
        "psql failed ({sql}): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Who calls the API.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Who {
    pub(crate) sub: &'static str,
    pub(crate) role: Role,
}

pub(crate) const ALICE: Who = Who {
    sub: "alice",
    role: Role::Speaker,
};
pub(crate) const BOB: Who = Who {
    sub: "bob",
    role: Role::Speaker,
};
pub(crate) const ADMIN: Who = Who {
    sub: "root",
    role: Role::Admin,
};

/// An API to start: the server's defaults unless a test says otherwise.
#[derive(Default)]
pub(crate) struct AppBuilder {
    preview_limits: PreviewLimits,
    http: HttpLimits,
    /// `None`: the server's default.
    layer_budget: Option<u32>,
    /// `None`: the request deadline, as the server sets it.
    statement_timeout: Option<Duration>,
}

impl AppBuilder {
    /// `--layer-budget`.
    pub(crate) fn layer_budget(mut self, budget: u32) -> Self {
        self.layer_budget = Some(budget);
        self
    }

    pub(crate) fn preview_limits(mut self, limits: PreviewLimits) -> Self {
        self.preview_limits = limits;
        self
    }

    pub(crate) fn request_timeout(mut self, timeout: Duration) -> Self {
        self.http.request_timeout = timeout;
        self
    }

    /// `--db-statement-timeout-ms`.
    pub(crate) fn statement_timeout(mut self, timeout: Duration) -> Self {
        self.statement_timeout = Some(timeout);
        self
    }

    pub(crate) async fn start(self) -> App {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let db = TestDb::fresh();
        let dir = tempfile::tempdir().expect("temp dir");
        let pool = api::db::PoolSettings {
            statement_timeout: Some(self.statement_timeout.unwrap_or(self.http.request_timeout)),
            ..api::db::PoolSettings::default()
        };
        let connection = api::db::connect_with(Some(&db.url), dir.path(), &pool)
            .await
            .expect("PostgreSQL database with migrations");
        let jwt_secret = dir.path().join("jwt-secret");
        std::fs::write(&jwt_secret, "s".repeat(48)).unwrap();
        let verifier = JwtVerifier::new(
            api::auth::JwtAlgorithm::Hs256,
            Some(Path::new(&jwt_secret)),
            None,
            "dcs",
            "dcs-api",
        )
        .expect("verifier");
        let signer = JwtSigner::new(
            api::auth::JwtAlgorithm::Hs256,
            Some(Path::new(&jwt_secret)),
            None,
            "dcs",
            "dcs-api",
        )
        .expect("signer");
        let agent_secret = SharedSecret::new(vec![b'a'; 40]).unwrap();
        let mut state = api::startup::StateBuilder::new(connection, verifier, agent_secret.clone());
        if let Some(budget) = self.layer_budget {
            state = state.layer_budget(budget);
        }
        let state = state
            .policy(Policy {
                speaker_prefixes: vec![format!("{REGISTRY}/workshops/{{sub}}")],
                ..Policy::default()
            })
            // No heartbeats come from a fake agent: never lost in a test.
            .agent_timeout(Duration::from_secs(3_600))
            .preview_limits(self.preview_limits)
            .build()
            .expect("shared state");
        let schema = build_schema(Some(state.clone()), SchemaLimits::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("loopback port");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let router = api::http::router_with(state.clone(), schema, self.http, true);
        tokio::spawn(async move { axum::serve(listener, router).await });
        let stop = CancellationToken::new();
        tokio::spawn(api::dispatch::run(state.clone(), stop.clone()));
        App {
            state,
            url,
            signer,
            agent_secret,
            http: reqwest::Client::new(),
            stop,
            db,
            _dir: dir,
        }
    }
}

/// The API of one test.
pub(crate) struct App {
    pub(crate) state: AppState,
    /// `http://127.0.0.1:PORT`
    pub(crate) url: String,
    signer: JwtSigner,
    agent_secret: SharedSecret,
    pub(crate) http: reqwest::Client,
    stop: CancellationToken,
    pub(crate) db: TestDb,
    _dir: tempfile::TempDir,
}

impl Drop for App {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl App {
    pub(crate) fn builder() -> AppBuilder {
        AppBuilder::default()
    }

    pub(crate) async fn start() -> Self {
        Self::builder().start().await
    }

    pub(crate) fn token(&self, who: Who) -> String {
        self.signer.mint(
            who.sub,
            who.role,
            &[NAMESPACE.to_string()],
            Duration::from_secs(600),
        )
    }

    /// POSTs a GraphQL request as `who`; the whole JSON answer.
    pub(crate) async fn graphql(&self, who: Who, query: &str, variables: Value) -> Value {
        let response = self
            .http
            .post(format!("{}/graphql", self.url))
            .bearer_auth(self.token(who))
            .json(&json!({"query": query, "variables": variables}))
            .send()
            .await
            .expect("POST /graphql");
        response.json().await.expect("GraphQL answers JSON")
    }

    /// Like `graphql`, and fails the test on any error.
    pub(crate) async fn data(&self, who: Who, query: &str, variables: Value) -> Value {
        let body = self.graphql(who, query, variables).await;
        assert!(body["errors"].is_null(), "GraphQL errors: {body}");
        body["data"].clone()
    }

    /// A token such as the agent of `node` sends.
    pub(crate) fn agent_token(&self, node: &str) -> String {
        self.agent_secret.sign(AGENT_ISSUER, API_AUDIENCE, node)
    }

    /// POSTs `body` to an agent endpoint of the API as the agent of NODE.
    pub(crate) async fn agent_post(
        &self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(self.agent_token(NODE))
            .json(body)
            .send()
            .await
            .expect("POST to the API's agent endpoint");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Registers NODE, reachable at `agent_url`, with these containers.
    pub(crate) async fn register(&self, agent_url: &str, instance: Uuid, containers: Vec<Value>) {
        let registration = json!({"node": NODE, "instanceId": instance, "url": agent_url,
            "version": "0", "containerdVersion": "1.6.20", "maxConcurrentJobs": 2});
        let (status, answer) = self.agent_post(api_paths::REGISTER, &registration).await;
        assert_eq!(status, 200, "register: {answer}");
        self.inventory(instance, containers).await;
    }

    /// Reports NODE's containers (all of them) again.
    pub(crate) async fn inventory(&self, instance: Uuid, containers: Vec<Value>) {
        let inventory = json!({"node": NODE, "instanceId": instance, "containers": containers});
        let (status, answer) = self.agent_post(api_paths::INVENTORY, &inventory).await;
        assert_eq!(status, 200, "inventory: {answer}");
    }

    /// Creates a snapshot as alice with `input` (a `CreateSnapshotInput`);
    /// waits until `agent` has its job. Its id, and the job.
    pub(crate) async fn create_snapshot(
        &self,
        agent: &FakeAgent,
        input: Value,
    ) -> (Uuid, JobRequest) {
        let jobs = agent.jobs().len();
        let data = self.data(ALICE, CREATE, json!({ "input": input })).await;
        let id: Uuid = data["createSnapshot"]["id"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("a snapshot id in {data}"));
        let job = agent.wait_for_jobs(jobs + 1).await.pop().expect("a job");
        assert_eq!(job.snapshot_id, id, "the agent's newest job");
        (id, job)
    }

    /// Posts one job event as the agent instance `instance`.
    pub(crate) async fn event(
        &self,
        snapshot: Uuid,
        instance: Uuid,
        seq: u64,
        kind: Value,
    ) -> (u16, Value) {
        let event = json!({"snapshotId": snapshot, "node": NODE, "instanceId": instance,
            "seq": seq, "at": chrono::Utc::now(), "kind": kind});
        self.agent_post(api_paths::EVENTS, &event).await
    }
}

/// The desktop of `owner`, as an agent reports it (pod `desktop-<owner>`).
pub(crate) fn desktop(id: &str, owner: &str, snapshotter: &str) -> Value {
    json!({"id": id, "image": "registry.test/base:1", "imageDigest": null,
        "state": "running", "snapshotter": snapshotter, "podName": format!("desktop-{owner}"),
        "podNamespace": NAMESPACE, "containerName": "desktop", "owner": owner})
}

/// A `PUSHED` event as an agent sends it, without layer counts or a scan
/// report (an older agent's); a test adds what it is about.
pub(crate) fn pushed_event(manifest: &str) -> Value {
    json!({"type": "PUSHED", "image": "registry.test/workshops/alice/desk:v1",
        "manifestDigest": manifest, "configDigest": "sha256:c", "layerDigest": "sha256:l",
        "layerDiffId": "sha256:d", "layerSize": 10, "layerMediaType": "application/vnd.oci.image.layer.v1.tar+zstd",
        "uncompressedSize": 20, "baseImage": "registry.test/base:1", "baseDigest": "sha256:b",
        "pausedMs": 1, "prepareMs": 1, "durationMs": 2, "method": "overlay"})
}

/// A webhook endpoint for `snapshot.pushed` and `snapshot.failed`, written
/// to the database directly (its URL would not pass the egress policy):
/// deliveries are queued for it, and a test reads their payloads.
pub(crate) async fn webhook_endpoint(app: &App) {
    use entity::webhook_endpoint;
    use sea_orm::{ActiveModelTrait, Set};
    let now = chrono::Utc::now();
    webhook_endpoint::ActiveModel {
        id: Set(Uuid::new_v4()),
        url: Set("https://hooks.example/dcs".into()),
        description: Set(None),
        event_types: Set(json!(["snapshot.pushed", "snapshot.failed"])),
        enabled: Set(true),
        secret: Set(format!("whsec_{}", "A".repeat(44)).into()),
        created_by: Set("root".into()),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    }
    .insert(&app.state.db)
    .await
    .expect("webhook endpoint");
}

/// The GraphQL error code of an answer (`None`: no error).
pub(crate) fn error_code(body: &Value) -> Option<String> {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .map(String::from)
}

pub(crate) fn error_message(body: &Value) -> String {
    body["errors"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// What a fake agent answers to `POST /v1/preview`.
#[derive(Clone)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) body: Vec<u8>,
    /// Sent without a Content-Length (chunked), as a stream of 64 KiB.
    pub(crate) chunked: bool,
    pub(crate) delay: Duration,
    /// Waits for `FakeAgent::release` before answering.
    pub(crate) held: bool,
}

impl Answer {
    pub(crate) fn json(status: u16, body: Value) -> Self {
        Self::raw(status, body.to_string().into_bytes())
    }

    pub(crate) fn raw(status: u16, body: Vec<u8>) -> Self {
        Self {
            status: StatusCode::from_u16(status).expect("HTTP status"),
            body,
            chunked: false,
            delay: Duration::ZERO,
            held: false,
        }
    }

    /// An agent's error, in its `{"code", "message"}` shape.
    pub(crate) fn error(status: u16, code: &str, message: &str) -> Self {
        Self::json(status, json!({"code": code, "message": message}))
    }
}

#[derive(Default)]
struct Seen {
    previews: Vec<PreviewRequest>,
    jobs: Vec<JobRequest>,
    refused_tokens: usize,
}

struct FakeState {
    node: String,
    secret: SharedSecret,
    instance: Uuid,
    answer: Mutex<Answer>,
    seen: Mutex<Seen>,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
    gate: tokio::sync::Semaphore,
}

/// A node agent played by the test, on a loopback port.
#[derive(Clone)]
pub(crate) struct FakeAgent {
    pub(crate) url: String,
    pub(crate) instance: Uuid,
    state: Arc<FakeState>,
}

impl FakeAgent {
    /// Serves NODE's agent endpoints, answering previews with `answer`.
    pub(crate) async fn start(app: &App, answer: Answer) -> Self {
        let instance = Uuid::new_v4();
        let state = Arc::new(FakeState {
            node: NODE.into(),
            secret: app.agent_secret.clone(),
            instance,
            answer: Mutex::new(answer),
            seen: Mutex::default(),
            in_flight: AtomicUsize::new(0),
            most_in_flight: AtomicUsize::new(0),
            gate: tokio::sync::Semaphore::new(0),
        });
        let router = axum::Router::new()
            .route(agent_paths::PREVIEW, axum::routing::post(preview))
            .route(agent_paths::JOBS, axum::routing::post(job))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("loopback port");
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self {
            url,
            instance,
            state,
        }
    }

    pub(crate) fn answer(&self, answer: Answer) {
        *self.state.answer.lock().unwrap() = answer;
    }

    /// Lets `n` held previews answer.
    pub(crate) fn release(&self, n: usize) {
        self.state.gate.add_permits(n);
    }

    pub(crate) fn previews(&self) -> Vec<PreviewRequest> {
        self.state.seen.lock().unwrap().previews.clone()
    }

    pub(crate) fn jobs(&self) -> Vec<JobRequest> {
        self.state.seen.lock().unwrap().jobs.clone()
    }

    /// Calls that came without a valid API token for this node.
    pub(crate) fn refused_tokens(&self) -> usize {
        self.state.seen.lock().unwrap().refused_tokens
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.state.in_flight.load(Ordering::SeqCst)
    }

    pub(crate) fn most_in_flight(&self) -> usize {
        self.state.most_in_flight.load(Ordering::SeqCst)
    }

    /// Waits until the agent has this many jobs (at most 10 s).
    pub(crate) async fn wait_for_jobs(&self, count: usize) -> Vec<JobRequest> {
        for _ in 0..200 {
            let jobs = self.jobs();
            if jobs.len() >= count {
                return jobs;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the agent got {} jobs, not {count}", self.jobs().len());
    }
}

/// The API's token for this node, as the real agent checks it.
fn authorised(state: &FakeState, headers: &HeaderMap) -> bool {
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let valid = token
        .and_then(|t| state.secret.verify(t, AGENT_AUDIENCE).ok())
        .is_some_and(|claims| claims.iss == API_ISSUER && claims.sub == state.node);
    if !valid {
        state.seen.lock().unwrap().refused_tokens += 1;
    }
    valid
}

async fn preview(
    State(state): State<Arc<FakeState>>,
    headers: HeaderMap,
    axum::Json(request): axum::Json<PreviewRequest>,
) -> Response {
    if !authorised(&state, &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    state.seen.lock().unwrap().previews.push(request);
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.most_in_flight.fetch_max(now, Ordering::SeqCst);
    let answer = state.answer.lock().unwrap().clone();
    if answer.held {
        let permit = state.gate.acquire().await.expect("gate open");
        permit.forget();
    }
    tokio::time::sleep(answer.delay).await;
    state.in_flight.fetch_sub(1, Ordering::SeqCst);
    let body = if answer.chunked {
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> = answer
            .body
            .chunks(64 * 1024)
            .map(|c| Ok(c.to_vec()))
            .collect();
        Body::from_stream(futures::stream::iter(chunks))
    } else {
        Body::from(answer.body)
    };
    Response::builder()
        .status(answer.status)
        .header("content-type", "application/json")
        .body(body)
        .expect("response")
}

async fn job(
    State(state): State<Arc<FakeState>>,
    headers: HeaderMap,
    axum::Json(request): axum::Json<JobRequest>,
) -> Response {
    if !authorised(&state, &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let accepted = JobAccepted {
        snapshot_id: request.snapshot_id,
        queued: false,
        instance_id: Some(state.instance),
    };
    state.seen.lock().unwrap().jobs.push(request);
    (StatusCode::ACCEPTED, axum::Json(accepted)).into_response()
}
