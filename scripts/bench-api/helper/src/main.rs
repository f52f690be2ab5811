//! Helpers of `scripts/bench-api.sh`, talking only to 127.0.0.1:
//!
//! - `agent`: a fake node agent. Registers with the API (shared-secret
//!   tokens, as `dcs-agent serve` does), reports an inventory of containers,
//!   heartbeats every second, accepts jobs with 202 and reports each job as
//!   DIFFING, PUSHING and PUSHED a few milliseconds apart. No containerd.
//! - `subscribe`: N WebSocket connections (`graphql-transport-ws`, token in
//!   `connection_init`), one `snapshotEvents` subscription each; every
//!   delivery's latency is measured from the event's `at` (the API's clock
//!   when it wrote the change) to its arrival. Prints a JSON summary on
//!   SIGTERM.
//! - `create`: `createSnapshot` calls, in bursts of `--concurrency` (closed
//!   loop, `--count` in all) or paced at `--rate` per second until SIGTERM or
//!   `--seconds`. Prints a JSON summary.
//! - `load`: an open-loop generator: POSTs one body at a fixed `--rate` over at
//!   most `--connections` keep-alive connections for `--seconds`. Request i is
//!   due at start + i/rate; its latency counts from that moment, so time spent
//!   waiting for a free connection counts too (no coordinated omission).
//!   Prints a JSON summary.
//!
//! Arguments are `--name value` pairs.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use dcs_protocol::token::{AGENT_AUDIENCE, API_AUDIENCE, SharedSecret};
use dcs_protocol::{JobAccepted, JobRequest, agent_paths, api_paths};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use uuid::Uuid;

struct Args(HashMap<String, String>);

impl Args {
    fn parse(list: &[String]) -> anyhow::Result<Self> {
        let mut map = HashMap::new();
        let mut it = list.iter();
        while let Some(name) = it.next() {
            let Some(name) = name.strip_prefix("--") else {
                bail!("unexpected argument {name}");
            };
            let value = it.next().with_context(|| format!("--{name} needs a value"))?;
            map.insert(name.to_string(), value.clone());
        }
        Ok(Self(map))
    }
    fn text(&self, name: &str) -> anyhow::Result<String> {
        self.0
            .get(name)
            .cloned()
            .with_context(|| format!("--{name} is required"))
    }
    fn number(&self, name: &str, default: f64) -> anyhow::Result<f64> {
        match self.0.get(name) {
            Some(v) => v.parse().with_context(|| format!("--{name}: not a number")),
            None => Ok(default),
        }
    }
}

fn main() -> anyhow::Result<()> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = argv.split_first() else {
        bail!("usage: bench-api-helper agent|subscribe|create|load --name value ...");
    };
    let args = Args::parse(rest)?;
    let threads = args.number("threads", 2.0)? as usize;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match command.as_str() {
            "agent" => agent(args).await,
            "subscribe" => subscribe(args).await,
            "create" => create(args).await,
            "load" => load(args).await,
            other => bail!("unknown command {other}"),
        }
    })
}

async fn terminated() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

// --- agent ---------------------------------------------------------------------------

#[derive(Clone)]
struct AgentState {
    node: String,
    instance: Uuid,
    api: String,
    secret: SharedSecret,
    http: reqwest::Client,
    step: Duration,
    running: Arc<Mutex<HashSet<Uuid>>>,
    jobs: Arc<AtomicU64>,
    events: Arc<AtomicU64>,
    failed_posts: Arc<AtomicU64>,
}

impl AgentState {
    /// POSTs to the API as this agent; retried a few times.
    async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let mut last = String::new();
        for attempt in 0..20 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
            }
            let sent = self
                .http
                .post(format!("{}{path}", self.api))
                .bearer_auth(self.secret.sign("dcs-agent", API_AUDIENCE, &self.node))
                .header(header::CONTENT_TYPE, "application/json")
                .body(body.to_string())
                .send()
                .await;
            match sent {
                Ok(response) if response.status().is_success() => {
                    let bytes = response.bytes().await.unwrap_or_default();
                    return Ok(serde_json::from_slice(&bytes).unwrap_or(Value::Null));
                }
                Ok(response) => {
                    let status = response.status();
                    last = format!("{status}: {}", response.text().await.unwrap_or_default());
                    if status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS {
                        break;
                    }
                }
                Err(e) => last = e.to_string(),
            }
        }
        self.failed_posts.fetch_add(1, Ordering::Relaxed);
        bail!("POST {path}: {last}")
    }

    async fn run_job(self, id: Uuid) {
        let pushed = json!({"type": "PUSHED",
            "image": format!("registry.example/workshops/bench/desk:{}", id.simple()),
            "manifestDigest": format!("sha256:{}{}", id.simple(), id.simple()),
            "configDigest": format!("sha256:{}", "b".repeat(64)),
            "layerDigest": format!("sha256:{}", "c".repeat(64)),
            "layerDiffId": format!("sha256:{}", "d".repeat(64)),
            "layerSize": 1234, "layerMediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "uncompressedSize": 4096, "baseImage": "registry.example/base/desktop:1",
            "baseDigest": format!("sha256:{}", "e".repeat(64)),
            "pausedMs": 3, "durationMs": 40, "method": "overlay"});
        let kinds = [
            json!({"type": "DIFFING"}),
            json!({"type": "PUSHING", "bytesDone": 500, "bytesTotal": 1000}),
            pushed,
        ];
        for (seq, kind) in kinds.into_iter().enumerate() {
            tokio::time::sleep(self.step).await;
            let event = json!({"snapshotId": id, "node": self.node, "instanceId": self.instance,
                "seq": seq + 1, "at": chrono::Utc::now().to_rfc3339(), "kind": kind});
            match self.post(api_paths::EVENTS, &event).await {
                Ok(_) => {
                    self.events.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => eprintln!("agent: {e}"),
            }
        }
        self.running.lock().unwrap().remove(&id);
    }
}

async fn agent_handler(
    State(state): State<AgentState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let authorised = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|t| state.secret.verify(t, AGENT_AUDIENCE).ok())
        .is_some_and(|c| c.sub == state.node);
    if !authorised {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    match (method, uri.path()) {
        (Method::POST, agent_paths::JOBS) => {
            let Ok(job) = serde_json::from_slice::<JobRequest>(&body) else {
                return StatusCode::BAD_REQUEST.into_response();
            };
            state.jobs.fetch_add(1, Ordering::Relaxed);
            let fresh = state.running.lock().unwrap().insert(job.snapshot_id);
            if fresh {
                tokio::spawn(state.clone().run_job(job.snapshot_id));
            }
            let accepted = JobAccepted {
                snapshot_id: job.snapshot_id,
                queued: false,
                instance_id: None,
            };
            (StatusCode::ACCEPTED, axum::Json(accepted)).into_response()
        }
        (Method::GET, agent_paths::HEALTHZ | agent_paths::READYZ) => "ok".into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn agent(args: Args) -> anyhow::Result<()> {
    let api = args.text("api")?;
    let node = args.text("node")?;
    let containers = args.number("containers", 1000.0)? as usize;
    let secret = SharedSecret::new(std::fs::read(args.text("secret-file")?)?)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    // Image digests the containers run (one a line): the snapshots taken of
    // them get a parent.
    let digests: Vec<String> = match args.0.get("digests") {
        Some(file) => std::fs::read_to_string(file)?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect(),
        None => Vec::new(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let state = AgentState {
        node: node.clone(),
        instance: Uuid::new_v4(),
        api,
        secret,
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .timeout(Duration::from_secs(30))
            .build()?,
        step: Duration::from_millis(args.number("step-ms", 20.0)? as u64),
        running: Arc::default(),
        jobs: Arc::default(),
        events: Arc::default(),
        failed_posts: Arc::default(),
    };
    let router = Router::new()
        .fallback(agent_handler)
        .with_state(state.clone());
    let server = tokio::spawn(async move { axum::serve(listener, router).await });

    let registration = json!({"node": node, "instanceId": state.instance, "url": url,
        "version": "bench", "containerdVersion": "bench", "maxConcurrentJobs": 100_000});
    state.post(api_paths::REGISTER, &registration).await?;
    let list: Vec<Value> = (0..containers)
        .map(|i| {
            // The first ten desktops are alice's, the others belong to
            // speaker-N.
            let owner = if i < 10 {
                "alice".to_string()
            } else {
                format!("speaker-{}", i % 100)
            };
            let digest = (!digests.is_empty()).then(|| digests[i % digests.len()].clone());
            json!({"id": format!("c-{i:04}"), "image": "registry.example/workshops/bench/desk:v1",
                   "imageDigest": digest, "state": "running", "snapshotter": "overlayfs",
                   "podName": format!("desk-{i:04}"), "podNamespace": "workshop",
                   "containerName": "desktop", "owner": owner})
        })
        .collect();
    let inventory = json!({"node": node, "instanceId": state.instance, "containers": list});
    let ack = state.post(api_paths::INVENTORY, &inventory).await?;
    if ack["known"] != true {
        bail!("the inventory was not accepted: {ack}");
    }
    let beating = state.clone();
    let heartbeat = tokio::spawn(async move {
        loop {
            let running: Vec<Uuid> = beating.running.lock().unwrap().iter().copied().collect();
            let beat =
                json!({"node": beating.node, "instanceId": beating.instance, "runningJobs": running});
            if let Err(e) = beating.post(api_paths::HEARTBEAT, &beat).await {
                eprintln!("agent: heartbeat: {e}");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    println!("{url}");
    eprintln!("agent: registered {node} at {url} with {containers} containers");
    terminated().await;
    heartbeat.abort();
    server.abort();
    println!(
        "{}",
        json!({"jobs": state.jobs.load(Ordering::Relaxed),
               "events": state.events.load(Ordering::Relaxed),
               "failedPosts": state.failed_posts.load(Ordering::Relaxed),
               "running": state.running.lock().unwrap().len()})
    );
    Ok(())
}

// --- subscribe -------------------------------------------------------------------------

#[derive(Default)]
struct Received {
    /// (snapshot, status, bytesDone), the event's `at` and its latency, for
    /// each delivery in arrival order.
    deliveries: Vec<(String, chrono::DateTime<chrono::Utc>, f64)>,
    errors: Vec<String>,
}

async fn one_subscription(
    url: String,
    token: String,
    query: String,
    acked: Arc<tokio::sync::Semaphore>,
    sink: Arc<Mutex<Received>>,
) -> anyhow::Result<()> {
    let mut request = url.into_client_request()?;
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse()?);
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await?;
    let init = json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {token}")}});
    socket.send(Message::text(init.to_string())).await?;
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => {
                let value: Value = serde_json::from_str(&text)?;
                if value["type"] == "connection_ack" {
                    break;
                }
                bail!("before the ack: {value}");
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
            None => bail!("closed before the ack"),
        }
    }
    let subscribe = json!({"id": "1", "type": "subscribe", "payload": {"query": query}});
    socket.send(Message::text(subscribe.to_string())).await?;
    acked.add_permits(1);
    let mut local = Received::default();
    while let Some(message) = socket.next().await {
        let text = match message {
            Ok(Message::Text(text)) => text,
            Ok(Message::Close(frame)) => {
                local.errors.push(format!("closed: {frame:?}"));
                break;
            }
            Ok(_) => continue,
            Err(e) => {
                local.errors.push(e.to_string());
                break;
            }
        };
        let arrived = chrono::Utc::now();
        let value: Value = serde_json::from_str(&text)?;
        match value["type"].as_str() {
            Some("next") => {
                let event = &value["payload"]["data"]["snapshotEvents"];
                let Some(at) = event["at"]
                    .as_str()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                else {
                    local.errors.push(format!("no at: {text}"));
                    continue;
                };
                let at = at.to_utc();
                let ms = (arrived - at).num_microseconds().unwrap_or(0) as f64 / 1e3;
                let key = format!(
                    "{}/{}/{}",
                    event["snapshotId"].as_str().unwrap_or(""),
                    event["status"].as_str().unwrap_or(""),
                    event["bytesDone"]
                );
                // Straight into the shared record: the task is aborted at the
                // end, and a local buffer would be lost with it.
                sink.lock().unwrap().deliveries.push((key, at, ms));
            }
            Some("ping") => {
                socket
                    .send(Message::text(json!({"type": "pong"}).to_string()))
                    .await?;
            }
            _ => local.errors.push(text.to_string()),
        }
    }
    let mut shared = sink.lock().unwrap();
    shared.deliveries.append(&mut local.deliveries);
    shared.errors.append(&mut local.errors);
    Ok(())
}

async fn subscribe(args: Args) -> anyhow::Result<()> {
    let url = args.text("url")?;
    let token = args.text("token")?;
    let count = args.number("count", 500.0)? as usize;
    let ready_file = args.text("ready-file")?;
    let query = "subscription { snapshotEvents { snapshotId status bytesDone at } }".to_string();
    let acked = Arc::new(tokio::sync::Semaphore::new(0));
    let sinks: Vec<Arc<Mutex<Received>>> = (0..count).map(|_| Arc::default()).collect();
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut tasks = Vec::new();
    for sink in &sinks {
        let (url, token, query, acked, sink, failures) = (
            url.clone(),
            token.clone(),
            query.clone(),
            acked.clone(),
            sink.clone(),
            failures.clone(),
        );
        tasks.push(tokio::spawn(async move {
            if let Err(e) = one_subscription(url, token, query, acked.clone(), sink).await {
                failures.lock().unwrap().push(e.to_string());
                // Counted as connected-and-done, so the wait below ends.
                acked.add_permits(1);
            }
        }));
        // Do not open 500 sockets in one instant.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let settle = chrono::Duration::milliseconds(args.number("settle-seconds", 3.0)? as i64 * 1000);
    let all = acked.acquire_many(count as u32).await?;
    all.forget();
    // The subscribe messages are on their way; give the server a moment to
    // register every stream before the caller starts writing.
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Only events of the window count: from here to `settle` before the end
    // (events of other moments reach only the sockets open at the time).
    let window_start = chrono::Utc::now();
    std::fs::write(&ready_file, "ready\n")?;
    terminated().await;
    let window_end = chrono::Utc::now() - settle;
    for task in &tasks {
        task.abort();
    }
    for task in tasks {
        let _ = task.await;
    }
    // A socket listens from its first delivery on (the server may register
    // a subscription well after its `subscribe` message was sent): the window
    // starts a second after the last socket's first event.
    let received: Vec<Received> = sinks
        .iter()
        .map(|sink| std::mem::take(&mut *sink.lock().unwrap()))
        .collect();
    let last_first = received
        .iter()
        .filter_map(|r| r.deliveries.first().map(|d| d.1))
        .max();
    let window_start = match last_first {
        Some(at) => window_start.max(at + chrono::Duration::seconds(1)),
        None => window_start,
    };
    let mut union = HashSet::new();
    let mut per_connection = Vec::new();
    let mut latencies = Vec::new();
    let mut deliveries = 0usize;
    let mut duplicates = 0usize;
    let mut errors = failures.lock().unwrap().clone();
    let mut outside = 0usize;
    for received in received {
        let mut distinct = HashSet::new();
        for (key, at, ms) in received.deliveries {
            if at < window_start || at > window_end {
                outside += 1;
                continue;
            }
            deliveries += 1;
            latencies.push(ms);
            if !distinct.insert(key) {
                duplicates += 1;
            }
        }
        per_connection.push(distinct.len());
        union.extend(distinct);
        errors.extend(received.errors);
    }
    latencies.sort_by(f64::total_cmp);
    let events = union.len();
    let missing: usize = per_connection.iter().map(|n| events - n).sum();
    let worst = per_connection.iter().map(|n| events - n).max().unwrap_or(0);
    println!(
        "{}",
        json!({"connections": count, "events": events, "deliveries": deliveries,
               "expectedDeliveries": events * count, "missing": missing,
               "duplicates": duplicates, "outsideWindow": outside,
               "windowSeconds": round1((window_end - window_start).num_milliseconds() as f64 / 1e3),
               "worstConnectionMissing": worst,
               "p50Ms": round1(percentile(&latencies, 50.0)),
               "p99Ms": round1(percentile(&latencies, 99.0)),
               "maxMs": round1(latencies.last().copied().unwrap_or(0.0)),
               "errors": errors.len(), "firstError": errors.first()})
    );
    Ok(())
}

// --- create ----------------------------------------------------------------------------

async fn create_one(
    http: &reqwest::Client,
    api: &str,
    token: &str,
    container: &str,
    n: u64,
) -> Result<f64, String> {
    let body = json!({
        "query": "mutation($input: CreateSnapshotInput!) { createSnapshot(input: $input) { id status } }",
        "variables": {"input": {"containerId": container,
            "target": format!("registry.example/workshops/bench/desk:w{n}"),
            "message": "bench"}}});
    let started = Instant::now();
    let response = http
        .post(format!("{api}/graphql"))
        .bearer_auth(token)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let bytes = response.bytes().await.map_err(|e| e.to_string())?;
    let elapsed = started.elapsed().as_secs_f64() * 1e3;
    let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if !status.is_success() || value.get("errors").is_some() {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&bytes)));
    }
    Ok(elapsed)
}

async fn create(args: Args) -> anyhow::Result<()> {
    let api = args.text("api")?;
    let token = args.text("token")?;
    let first = args.number("first-container", 0.0)? as usize;
    let containers = args.number("containers", 100.0)? as usize;
    let concurrency = args.number("concurrency", 1.0)? as usize;
    let count = args.number("count", 0.0)? as u64;
    let rate = args.number("rate", 0.0)?;
    let seconds = args.number("seconds", 0.0)?;
    let pause = Duration::from_millis(args.number("pause-ms", 1000.0)? as u64);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency.max(4))
        .timeout(Duration::from_secs(30))
        .build()?;
    let results: Arc<Mutex<Vec<Result<f64, String>>>> = Arc::default();
    let counter = Arc::new(AtomicU64::new(0));
    // Every container name used once per round, so that no desktop has two
    // snapshots in flight.
    let name = move |n: u64| format!("c-{:04}", first + (n as usize % containers));
    let run_id = std::process::id() as u64 * 1_000_000;
    let started = Instant::now();
    if rate > 0.0 {
        let stop = tokio::spawn(terminated());
        let interval = Duration::from_secs_f64(1.0 / rate);
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            tick.tick().await;
            if stop.is_finished() || (seconds > 0.0 && started.elapsed().as_secs_f64() >= seconds) {
                break;
            }
            let n = counter.fetch_add(1, Ordering::Relaxed);
            let (http, api, token, results, container) =
                (http.clone(), api.clone(), token.clone(), results.clone(), name(n));
            tasks.spawn(async move {
                let result = create_one(&http, &api, &token, &container, run_id + n).await;
                results.lock().unwrap().push(result);
            });
            while tasks.try_join_next().is_some() {}
        }
        while tasks.join_next().await.is_some() {}
    } else {
        let mut busy = Duration::ZERO;
        while counter.load(Ordering::Relaxed) < count {
            let burst_started = Instant::now();
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..concurrency {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                if n >= count {
                    break;
                }
                let (http, api, token, results, container) =
                    (http.clone(), api.clone(), token.clone(), results.clone(), name(n));
                tasks.spawn(async move {
                    let result = create_one(&http, &api, &token, &container, run_id + n).await;
                    results.lock().unwrap().push(result);
                });
            }
            while tasks.join_next().await.is_some() {}
            busy += burst_started.elapsed();
            if counter.load(Ordering::Relaxed) < count {
                tokio::time::sleep(pause).await;
            }
        }
        // Throughput over the bursts themselves, not the pauses.
        let results = std::mem::take(&mut *results.lock().unwrap());
        return summary(results, busy.as_secs_f64(), json!({}));
    }
    let results = std::mem::take(&mut *results.lock().unwrap());
    summary(results, started.elapsed().as_secs_f64(), json!({}))
}

/// Prints the run's figures as one JSON object, with `extra`'s fields added.
fn summary(
    results: Vec<Result<f64, String>>,
    seconds: f64,
    extra: serde_json::Value,
) -> anyhow::Result<()> {
    let mut latencies: Vec<f64> = results.iter().filter_map(|r| r.as_ref().ok()).copied().collect();
    let errors: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    latencies.sort_by(f64::total_cmp);
    let mut figures = json!({"requests": results.len(), "errors": errors.len(),
           "seconds": round1(seconds),
           "rps": round1(results.len() as f64 / seconds.max(1e-9)),
           "p50Ms": round1(percentile(&latencies, 50.0)),
           "p99Ms": round1(percentile(&latencies, 99.0)),
           "firstError": errors.first().map(|e| e.chars().take(300).collect::<String>())});
    if let (Some(figures), serde_json::Value::Object(extra)) = (figures.as_object_mut(), extra) {
        figures.extend(extra);
    }
    println!("{figures}");
    Ok(())
}

// --- load ------------------------------------------------------------------------------

async fn load(args: Args) -> anyhow::Result<()> {
    let url = args.text("url")?;
    let token = args.text("token")?;
    let body = Bytes::from(std::fs::read(args.text("body-file")?)?);
    let rate = args.number("rate", 100.0)?;
    let connections = args.number("connections", 200.0)? as usize;
    let seconds = args.number("seconds", 10.0)?;
    if rate <= 0.0 {
        bail!("--rate must be positive");
    }
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .timeout(Duration::from_secs(30))
        .build()?;
    let slots = Arc::new(tokio::sync::Semaphore::new(connections));
    let results: Arc<Mutex<Vec<Result<f64, String>>>> = Arc::default();
    // (second of the run the request was due in, its latency): to tell a
    // tail spread over the run from a stall of a few hundred milliseconds.
    let timeline: Arc<Mutex<Vec<(u64, f64)>>> = Arc::default();
    let total = (rate * seconds).round() as u64;
    let start = tokio::time::Instant::now() + Duration::from_millis(100);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due).await;
        let slot = slots.clone().acquire_owned().await?;
        let (http, url, token, body, results, timeline) = (
            http.clone(),
            url.clone(),
            token.clone(),
            body.clone(),
            results.clone(),
            timeline.clone(),
        );
        let second = (i as f64 / rate) as u64;
        tasks.spawn(async move {
            let sent = http
                .post(&url)
                .bearer_auth(&token)
                .header(header::CONTENT_TYPE, "application/json")
                .body(body)
                .send()
                .await;
            let outcome = match sent {
                Ok(response) => {
                    let status = response.status();
                    match response.bytes().await {
                        Ok(bytes) if status.is_success() && !contains(&bytes, b"\"errors\"") => {
                            Ok(due.elapsed().as_secs_f64() * 1e3)
                        }
                        Ok(bytes) => Err(format!("{status}: {}", String::from_utf8_lossy(&bytes))),
                        Err(e) => Err(e.to_string()),
                    }
                }
                Err(e) => Err(e.to_string()),
            };
            drop(slot);
            if let Ok(latency) = &outcome {
                timeline.lock().unwrap().push((second, *latency));
            }
            results.lock().unwrap().push(outcome);
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = start.elapsed().as_secs_f64();
    let results = std::mem::take(&mut *results.lock().unwrap());
    summary(results, elapsed, json!({"slowestSeconds": slowest_seconds(&timeline.lock().unwrap())}))
}

/// The three seconds of the run with the highest latency: second, max ms,
/// requests due in it over 50 ms, requests due in it.
fn slowest_seconds(timeline: &[(u64, f64)]) -> Vec<serde_json::Value> {
    let mut by_second: std::collections::BTreeMap<u64, (f64, usize, usize)> = Default::default();
    for (second, latency) in timeline {
        let entry = by_second.entry(*second).or_default();
        entry.0 = entry.0.max(*latency);
        entry.1 += usize::from(*latency > 50.0);
        entry.2 += 1;
    }
    let mut seconds: Vec<_> = by_second.into_iter().collect();
    seconds.sort_by(|a, b| b.1.0.total_cmp(&a.1.0));
    seconds
        .into_iter()
        .take(3)
        .map(|(second, (max, slow, all))| json!([second, round1(max), slow, all]))
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
