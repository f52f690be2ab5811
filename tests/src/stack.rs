//! The whole service as real processes: `dcs-api` on Postgres (a fresh
//! database per test) or on its SQLite default, and `dcs-agent serve`
//! against the test containerd.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::{TestEnv, unique};

/// An HTTP client; ring is the one TLS provider of the workspace.
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// A free loopback port (bound, then released for the child to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A fresh Postgres database, dropped at the end of the test.
pub struct Database {
    pub url: String,
    name: String,
    server_url: String,
}

impl Database {
    pub fn fresh() -> Self {
        let server_url = std::env::var("DATABASE_URL").unwrap_or_else(|_| {
            panic!(
                "DATABASE_URL is not set: the tests need PostgreSQL; run \
                 `scripts/dev-env.sh start && source .dcs-env/env.sh`"
            )
        });
        let name = unique("dcs_e2e").replace('-', "_");
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

    /// Runs SQL in this database; returns the output rows (unaligned).
    pub fn query(&self, sql: &str) -> String {
        psql(&self.url, sql)
    }
}

impl Drop for Database {
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

/// A child process that is killed when dropped.
struct Process {
    child: Option<Child>,
    log: PathBuf,
}

impl Process {
    fn spawn(mut command: Command, log: PathBuf) -> Self {
        let file = File::create(&log).expect("log file");
        let child = command
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn process");
        Self {
            child: Some(child),
            log,
        }
    }

    fn signal(&mut self, signal: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args([&format!("-{signal}"), &child.id().to_string()])
                .status();
        }
    }

    fn wait(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.child.as_mut().map(|c| c.try_wait()) {
                Some(Ok(Some(_))) | None => {
                    self.child = None;
                    return true;
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        false
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Options of an API process.
pub struct ApiOptions {
    /// `None`: the SQLite default.
    pub database_url: Option<String>,
    pub speaker_prefixes: Vec<String>,
    pub agent_timeout_seconds: u64,
}

/// A running `dcs-api`.
pub struct Api {
    process: Process,
    pub port: u16,
    pub url: String,
    pub data_dir: PathBuf,
    options_database_url: Option<String>,
    speaker_prefixes: Vec<String>,
    agent_timeout_seconds: u64,
    http: reqwest::Client,
}

impl Api {
    pub async fn start(options: ApiOptions) -> Self {
        let data_dir = std::env::temp_dir().join(unique("dcs-api"));
        std::fs::create_dir_all(&data_dir).expect("data dir");
        let port = free_port();
        let mut api = Self {
            process: Process {
                child: None,
                log: data_dir.join("api.log"),
            },
            port,
            url: format!("http://127.0.0.1:{port}"),
            data_dir,
            options_database_url: options.database_url,
            speaker_prefixes: options.speaker_prefixes,
            agent_timeout_seconds: options.agent_timeout_seconds,
            http: http_client(),
        };
        api.launch().await;
        api
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(crate::built_binary("dcs-api"));
        command
            .env_remove("DATABASE_URL")
            .env("RUST_LOG", "info,tower_http=warn,sqlx=warn")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(args);
        if let Some(url) = &self.options_database_url {
            command.env("DATABASE_URL", url);
        }
        command
    }

    async fn launch(&mut self) {
        self.launch_with(&[]).await;
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts it again with the same data directory and database.
    pub async fn restart(&mut self) {
        self.process.kill();
        self.launch().await;
    }

    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }

    /// The secret agents share with this API.
    pub fn agent_secret_file(&self) -> PathBuf {
        self.data_dir.join("agent-secret")
    }

    /// A user token minted with the API's key.
    pub fn token(&self, sub: &str, role: &str, namespaces: &[&str]) -> String {
        let joined = namespaces.join(",");
        let mut args = vec!["token", "--sub", sub, "--role", role];
        if !namespaces.is_empty() {
            args.extend(["--namespaces", &joined]);
        }
        let output = self.command(&args).output().expect("dcs-api token");
        assert!(
            output.status.success(),
            "dcs-api token: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    /// The JWT secret (HS256) of this API, for hand-made tokens.
    pub fn jwt_secret(&self) -> Vec<u8> {
        std::fs::read(self.data_dir.join("jwt-secret"))
            .expect("jwt secret")
            .trim_ascii()
            .to_vec()
    }

    /// Posts a GraphQL request; returns the whole response body.
    pub async fn graphql(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let mut request = self
            .http
            .post(format!("{}/graphql", self.url))
            .json(&json!({"query": query, "variables": variables}));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("POST /graphql");
        response.json().await.expect("GraphQL JSON")
    }

    /// Like `graphql`, failing the test on any GraphQL error; returns `data`.
    pub async fn data(&self, token: &str, query: &str, variables: Value) -> Value {
        let body = self.graphql(Some(token), query, variables).await;
        assert!(
            body["errors"].is_null(),
            "GraphQL errors: {body}\nAPI log:\n{}",
            self.log_tail()
        );
        body["data"].clone()
    }

    /// Waits until `check` holds on a query's data, or fails the test.
    /// `createSnapshot` of `container` to `target` (gzip); the new id. The
    /// snapshot must be accepted (`QUEUED`).
    pub async fn create_snapshot(&self, token: &str, container: &str, target: &str) -> String {
        let created = self
            .data(
                token,
                documents::CREATE,
                json!({"input": {"containerId": container, "target": target, "compression": "GZIP"}}),
            )
            .await;
        assert_eq!(created["createSnapshot"]["status"], "QUEUED", "{created}");
        created["createSnapshot"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The snapshot as `documents::SNAPSHOT` shows it to `token`'s caller.
    pub async fn snapshot(&self, token: &str, id: &str) -> Value {
        self.data(token, documents::SNAPSHOT, json!({"id": id}))
            .await["snapshot"]
            .clone()
    }

    /// Waits until the snapshot's status is one of `statuses`; returns it.
    pub async fn wait_for_status(
        &self,
        token: &str,
        id: &str,
        statuses: &[&str],
        timeout: Duration,
    ) -> Value {
        let statuses: Vec<String> = statuses.iter().map(|s| s.to_string()).collect();
        self.wait_for(
            token,
            documents::SNAPSHOT,
            json!({"id": id}),
            timeout,
            move |d| {
                d["snapshot"]["status"]
                    .as_str()
                    .is_some_and(|s| statuses.iter().any(|w| w == s))
            },
        )
        .await["snapshot"]
            .clone()
    }

    /// Waits until `token`'s caller sees container `id` running; returns it
    /// as the `containers` query shows it.
    pub async fn wait_for_running_container(&self, token: &str, id: &str) -> Value {
        let wait = Duration::from_secs(90);
        let data = self
            .wait_for(token, documents::CONTAINERS, json!({}), wait, |d| {
                d["containers"].as_array().is_some_and(|list| {
                    list.iter()
                        .any(|c| c["id"] == id && c["state"] == "running")
                })
            })
            .await;
        data["containers"]
            .as_array()
            .and_then(|list| list.iter().find(|c| c["id"] == id))
            .cloned()
            .unwrap_or_default()
    }

    pub async fn wait_for(
        &self,
        token: &str,
        query: &str,
        variables: Value,
        timeout: Duration,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let data = self.data(token, query, variables.clone()).await;
            if check(&data) {
                return data;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting; last data: {data}\nAPI log:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Opens a `graphql-transport-ws` subscription.
    pub async fn subscribe(&self, token: &str, query: &str, variables: Value) -> Subscription {
        let mut request = format!("ws://127.0.0.1:{}/graphql", self.port)
            .into_client_request()
            .expect("ws request");
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            "graphql-transport-ws".parse().expect("header"),
        );
        let (mut socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("WebSocket connect");
        let init = json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {token}")}});
        socket
            .send(Message::text(init.to_string()))
            .await
            .expect("send init");
        loop {
            let message = socket.next().await.expect("ack").expect("ws message");
            if let Message::Text(text) = message {
                let value: Value = serde_json::from_str(&text).expect("json");
                assert_eq!(value["type"], "connection_ack", "{value}");
                break;
            }
        }
        let subscribe = json!({"id": "1", "type": "subscribe", "payload": {"query": query, "variables": variables}});
        socket
            .send(Message::text(subscribe.to_string()))
            .await
            .expect("send subscribe");
        Subscription { socket }
    }
}

/// An open subscription.
pub struct Subscription {
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl Subscription {
    /// The next `next` payload's data, or `None` at `complete`, an error or
    /// the timeout.
    pub async fn next(&mut self, timeout: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let message = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .ok()??
                .ok()?;
            let Message::Text(text) = message else {
                continue;
            };
            let value: Value = serde_json::from_str(&text).ok()?;
            match value["type"].as_str() {
                Some("next") => return Some(value["payload"]["data"].clone()),
                Some("ping") => {
                    let _ = self
                        .socket
                        .send(Message::text(json!({"type": "pong"}).to_string()))
                        .await;
                }
                _ => return None,
            }
        }
    }
}

/// A running `dcs-agent serve`.
pub struct Agent {
    process: Process,
    pub node: String,
    pub port: u16,
    args: Vec<String>,
    /// A program the agent runs under (e.g. `faketime`), with its arguments.
    wrapper: Vec<String>,
}

impl Agent {
    pub fn start(env: &TestEnv, api: &Api, node: &str, namespace: &str) -> Self {
        let port = free_port();
        let state_dir = env.state_dir.to_string_lossy().to_string();
        let args = vec![
            "serve".to_string(),
            "--containerd-socket".into(),
            env.containerd_socket.to_string_lossy().to_string(),
            "--namespace".into(),
            namespace.into(),
            "--node-name".into(),
            node.into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--api-url".into(),
            api.url.clone(),
            "--shared-secret-file".into(),
            api.agent_secret_file().to_string_lossy().to_string(),
            "--insecure-registry".into(),
            env.registry.clone(),
            "--insecure-registry".into(),
            env.auth_registry.clone(),
            "--state-dir".into(),
            state_dir,
            "--heartbeat-seconds".into(),
            "1".into(),
            "--shutdown-grace-seconds".into(),
            "20".into(),
        ];
        let mut agent = Self {
            process: Process {
                child: None,
                log: PathBuf::new(),
            },
            node: node.to_string(),
            port,
            args,
            wrapper: Vec::new(),
        };
        agent.launch(&api.data_dir);
        agent
    }

    fn launch(&mut self, log_dir: &Path) {
        let mut command = match self.wrapper.split_first() {
            Some((program, rest)) => {
                let mut command = Command::new(program);
                command.args(rest).arg(crate::agent_binary());
                command
            }
            None => Command::new(crate::agent_binary()),
        };
        command
            .env("RUST_LOG", "info")
            .env_remove("DCS_CONTAINERD_SOCKET")
            .args(&self.args);
        let log = log_dir.join(format!("agent-{}-{}.log", self.node, unique("run")));
        self.process = Process::spawn(command, log);
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// SIGTERM, then waits for the exit.
    pub fn terminate(&mut self, timeout: Duration) -> bool {
        self.process.signal("TERM");
        self.process.wait(timeout)
    }

    pub fn restart(&mut self, api: &Api) {
        self.process.kill();
        self.launch(&api.data_dir);
    }

    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }
}

/// GraphQL documents the tests share.
pub mod documents {
    pub const CONTAINERS: &str =
        "{ containers { id node podNamespace podName containerName state imageDigest } }";
    pub const CREATE: &str =
        "mutation($input: CreateSnapshotInput!) { createSnapshot(input: $input) { id status } }";
    pub const SNAPSHOT: &str = "query($id: ID!) { snapshot(id: $id) { id status manifestDigest layerDigest failureCode failureReason pausedMs target parent { id } progress { bytesDone bytesTotal } } }";
    pub const EVENTS: &str =
        "subscription { snapshotEvents { snapshotId status bytesDone bytesTotal } }";
}

// ---------------------------------------------------------------------------
// Helpers for the auth and fault tests (snapshot_auth.rs, snapshot_faults.rs).
// ---------------------------------------------------------------------------

/// Hand-made JWTs, built without a JWT library so the tests can also make
/// the tokens a library refuses to make (`alg: none`, tampered payloads):
/// base64url (no padding) and HMAC (RFC 2104) over `sha2`.
pub mod jwt {
    use serde_json::Value;
    use sha2::Digest;

    /// base64url without padding (RFC 7515 §2).
    pub fn base64url(data: &[u8]) -> String {
        const TABLE: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
        for chunk in data.chunks(3) {
            let n =
                chunk.iter().fold(0u32, |a, &b| (a << 8) | u32::from(b)) << (8 * (3 - chunk.len()));
            for i in 0..=chunk.len() {
                out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }

    fn hmac<D: Digest>(block_size: usize, key: &[u8], message: &[u8]) -> Vec<u8> {
        let mut block = if key.len() > block_size {
            D::digest(key).to_vec()
        } else {
            key.to_vec()
        };
        block.resize(block_size, 0);
        let inner_pad: Vec<u8> = block.iter().map(|b| b ^ 0x36).collect();
        let outer_pad: Vec<u8> = block.iter().map(|b| b ^ 0x5c).collect();
        let mut inner = D::new();
        inner.update(&inner_pad);
        inner.update(message);
        let inner = inner.finalize();
        let mut outer = D::new();
        outer.update(&outer_pad);
        outer.update(inner);
        outer.finalize().to_vec()
    }

    pub fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
        hmac::<sha2::Sha256>(64, key, message)
    }

    pub fn hmac_sha384(key: &[u8], message: &[u8]) -> Vec<u8> {
        hmac::<sha2::Sha384>(128, key, message)
    }

    pub fn hmac_sha512(key: &[u8], message: &[u8]) -> Vec<u8> {
        hmac::<sha2::Sha512>(128, key, message)
    }

    /// `header.claims.signature`, signed as the header's `alg` says
    /// (`HS256`, `HS384`, `HS512`; `none` gives an empty signature).
    pub fn encode(key: &[u8], header: &Value, claims: &Value) -> String {
        let signing_input = format!(
            "{}.{}",
            base64url(header.to_string().as_bytes()),
            base64url(claims.to_string().as_bytes())
        );
        let signature = match header["alg"].as_str() {
            Some("HS256") => hmac_sha256(key, signing_input.as_bytes()),
            Some("HS384") => hmac_sha384(key, signing_input.as_bytes()),
            Some("HS512") => hmac_sha512(key, signing_input.as_bytes()),
            Some("none") => Vec::new(),
            other => panic!("jwt::encode cannot sign with {other:?}"),
        };
        format!("{signing_input}.{}", base64url(&signature))
    }

    /// An HS256 token.
    pub fn hs256(key: &[u8], claims: &Value) -> String {
        encode(
            key,
            &serde_json::json!({"alg": "HS256", "typ": "JWT"}),
            claims,
        )
    }

    /// Seconds since the epoch.
    pub fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs() as i64
    }

    /// The claims `dcs-api token` puts in a user token (issuer `dcs`,
    /// audience `dcs-api`, the defaults), valid for an hour.
    pub fn user_claims(sub: &str, role: &str, namespaces: &[&str]) -> Value {
        let now = now();
        serde_json::json!({
            "sub": sub, "role": role, "namespaces": namespaces,
            "iss": "dcs", "aud": "dcs-api",
            "iat": now, "nbf": now, "exp": now + 3600,
        })
    }

    /// The claims of a token between the API and an agent.
    pub fn service_claims(issuer: &str, audience: &str, node: &str) -> Value {
        let now = now();
        serde_json::json!({"iss": issuer, "aud": audience, "sub": node, "iat": now, "exp": now + 60})
    }
}

/// What the server answered to a `connection_init`.
#[derive(Debug, Clone, PartialEq)]
pub enum WsOutcome {
    /// `connection_ack`.
    Ack,
    /// The server closed the socket (code, reason).
    Closed(u16, String),
    /// Another message.
    Message(Value),
    /// The stream ended without a close frame, or nothing came in time.
    Ended(String),
}

impl Api {
    /// The whole log of the current process.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.process.log).unwrap_or_default()
    }

    /// The whole log of every run of this API (restarts included).
    pub fn all_logs(&self) -> String {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.data_dir)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        names.retain(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("api-") && n.ends_with(".log"))
        });
        names.sort();
        names
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The secret shared with agents, as the API reads it.
    pub fn agent_secret(&self) -> Vec<u8> {
        std::fs::read(self.agent_secret_file())
            .expect("agent secret")
            .trim_ascii()
            .to_vec()
    }

    /// A token such as the agent of `node` sends to the API.
    pub fn agent_token(&self, node: &str) -> String {
        jwt::hs256(
            &self.agent_secret(),
            &jwt::service_claims("dcs-agent", "dcs-api", node),
        )
    }

    /// `GET /metrics` (Prometheus text).
    pub async fn metrics(&self) -> String {
        let response = self
            .http
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .expect("GET /metrics");
        assert!(
            response.status().is_success(),
            "GET /metrics: {}",
            response.status()
        );
        response.text().await.expect("metrics text")
    }

    /// Opens a `graphql-transport-ws` socket, sends `connection_init` with
    /// this payload (`None`: none at all) and reports the first answer.
    pub async fn ws_init(&self, payload: Option<Value>) -> WsOutcome {
        let mut request = format!("ws://127.0.0.1:{}/graphql", self.port)
            .into_client_request()
            .expect("ws request");
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            "graphql-transport-ws".parse().expect("header"),
        );
        let (mut socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("WebSocket connect");
        let init = match payload {
            Some(payload) => json!({"type": "connection_init", "payload": payload}),
            None => json!({"type": "connection_init"}),
        };
        socket
            .send(Message::text(init.to_string()))
            .await
            .expect("send init");
        ws_first_answer(&mut socket).await
    }

    /// Opens a socket and sends `subscribe` without any `connection_init`.
    pub async fn ws_subscribe_without_init(&self, query: &str) -> WsOutcome {
        let mut request = format!("ws://127.0.0.1:{}/graphql", self.port)
            .into_client_request()
            .expect("ws request");
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            "graphql-transport-ws".parse().expect("header"),
        );
        let (mut socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("WebSocket connect");
        let subscribe = json!({"id": "1", "type": "subscribe", "payload": {"query": query}});
        socket
            .send(Message::text(subscribe.to_string()))
            .await
            .expect("send subscribe");
        ws_first_answer(&mut socket).await
    }
}

async fn ws_first_answer(
    socket: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> WsOutcome {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let message = match tokio::time::timeout_at(deadline, socket.next()).await {
            Err(_) => return WsOutcome::Ended("no answer within 10 s".into()),
            Ok(None) => return WsOutcome::Ended("stream ended".into()),
            Ok(Some(Err(e))) => return WsOutcome::Ended(format!("error: {e}")),
            Ok(Some(Ok(message))) => message,
        };
        match message {
            Message::Text(text) => {
                let value: Value = serde_json::from_str(&text).expect("json");
                if value["type"] == "connection_ack" {
                    return WsOutcome::Ack;
                }
                return WsOutcome::Message(value);
            }
            Message::Close(frame) => {
                return match frame {
                    Some(frame) => WsOutcome::Closed(frame.code.into(), frame.reason.to_string()),
                    None => WsOutcome::Closed(1005, String::new()),
                };
            }
            _ => continue,
        }
    }
}

impl Agent {
    /// Like `start_with`, the agent running under `wrapper` (a program and
    /// its arguments, e.g. `faketime -f -120s` for a node whose clock is off).
    pub fn start_wrapped(
        env: &TestEnv,
        api: &Api,
        node: &str,
        namespace: &str,
        wrapper: &[&str],
        extra: &[&str],
    ) -> Self {
        let mut agent = Self::start_with(env, api, node, namespace, extra);
        agent.wrapper = wrapper.iter().map(|w| w.to_string()).collect();
        agent.process.kill();
        agent.launch(&api.data_dir);
        agent
    }

    /// Like `start`, with more arguments for `dcs-agent serve`; a flag
    /// given here replaces the same flag of `start`'s defaults (except the
    /// repeatable `--insecure-registry`, which is added).
    pub fn start_with(
        env: &TestEnv,
        api: &Api,
        node: &str,
        namespace: &str,
        extra: &[&str],
    ) -> Self {
        let port = free_port();
        let mut args: Vec<String> = [
            "serve",
            "--containerd-socket",
            &env.containerd_socket.to_string_lossy(),
            "--namespace",
            namespace,
            "--node-name",
            node,
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--api-url",
            &api.url,
            "--shared-secret-file",
            &api.agent_secret_file().to_string_lossy(),
            "--insecure-registry",
            &env.registry,
            "--insecure-registry",
            &env.auth_registry,
            "--state-dir",
            &env.state_dir.to_string_lossy(),
            "--heartbeat-seconds",
            "1",
            "--shutdown-grace-seconds",
            "20",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for flag in extra.iter().filter(|a| a.starts_with("--")) {
            if *flag == "--insecure-registry" {
                continue;
            }
            if let Some(at) = args.iter().position(|a| a == flag) {
                args.drain(at..at + 2);
            }
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut agent = Self {
            process: Process {
                child: None,
                log: PathBuf::new(),
            },
            node: node.to_string(),
            port,
            args,
            wrapper: Vec::new(),
        };
        agent.launch(&api.data_dir);
        agent
    }

    /// The whole log of the current process.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.process.log).unwrap_or_default()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.process.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => true,
            Some(Ok(Some(_))) | Some(Err(_)) => {
                self.process.child = None;
                false
            }
            None => false,
        }
    }

    /// A token such as the API sends to this agent.
    pub fn api_token(&self, api: &Api) -> String {
        jwt::hs256(
            &api.agent_secret(),
            &jwt::service_claims("dcs-api", "dcs-agent", &self.node),
        )
    }

    /// The agent's `/metrics`, fetched with the API's credentials.
    pub async fn metrics(&self, api: &Api) -> String {
        let response = http_client()
            .get(format!("{}/metrics", self.url()))
            .bearer_auth(self.api_token(api))
            .send()
            .await
            .expect("GET agent /metrics");
        assert!(
            response.status().is_success(),
            "agent /metrics: {}",
            response.status()
        );
        response.text().await.expect("metrics text")
    }
}

/// The value of a Prometheus sample (`name{labels} value`), 0 when absent.
pub fn metric_value(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == sample).then(|| value.parse::<f64>().ok())?
        })
        .unwrap_or(0.0)
}

/// `skopeo inspect --raw` of a reference on a plain-HTTP registry: the
/// manifest bytes, or skopeo's error.
pub fn skopeo_inspect(reference: &str) -> Result<Vec<u8>, String> {
    let output = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .output()
        .expect("run skopeo");
    if output.status.success() {
        Ok(output.stdout)
    } else {
        Err(String::from_utf8_lossy(&output.stderr).to_string())
    }
}

/// The digest the registry serves for a reference; fails the test if none.
pub fn registry_digest(reference: &str) -> String {
    let manifest =
        skopeo_inspect(reference).unwrap_or_else(|e| panic!("skopeo inspect {reference}: {e}"));
    crate::layer::sha256_hex(&manifest)
}

/// The status of a container's task (`RUNNING`, `PAUSED`, `STOPPED`, ...)
/// as `ctr tasks ls` shows it; `None` without a task.
pub fn task_status(ctr: &crate::Ctr, id: &str) -> Option<String> {
    ctr.run(&["tasks", "ls"]).lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.first() == Some(&id)).then(|| fields.last().unwrap_or(&"").to_string())
    })
}

impl Subscription {
    /// The next server message as it is (`next`, `error`, `complete`, ...),
    /// answering pings; `None` when the socket ends or nothing comes in time.
    pub async fn next_message(&mut self, timeout: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let message = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .ok()??
                .ok()?;
            match message {
                Message::Text(text) => {
                    let value: Value = serde_json::from_str(&text).ok()?;
                    if value["type"] == "ping" {
                        let _ = self
                            .socket
                            .send(Message::text(json!({"type": "pong"}).to_string()))
                            .await;
                        continue;
                    }
                    return Some(value);
                }
                Message::Close(frame) => {
                    return Some(
                        json!({"type": "close", "frame": frame.map(|f| f.reason.to_string())}),
                    );
                }
                _ => continue,
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Helpers for the webhook tests (webhooks.rs) and scripts/stress-webhooks.sh.
// ---------------------------------------------------------------------------

impl Api {
    /// Like `start`, with more arguments appended after `serve ...` (for
    /// example `--webhook-allow 127.0.0.0/8 --webhook-allow-http`). `restart`
    /// does not repeat them: use `restart_with`.
    pub async fn start_with(options: ApiOptions, extra_args: Vec<String>) -> Self {
        let data_dir = std::env::temp_dir().join(unique("dcs-api"));
        std::fs::create_dir_all(&data_dir).expect("data dir");
        let port = free_port();
        let mut api = Self {
            process: Process {
                child: None,
                log: data_dir.join("api.log"),
            },
            port,
            url: format!("http://127.0.0.1:{port}"),
            data_dir,
            options_database_url: options.database_url,
            speaker_prefixes: options.speaker_prefixes,
            agent_timeout_seconds: options.agent_timeout_seconds,
            http: http_client(),
        };
        api.launch_with(&extra_args).await;
        api
    }

    /// Kills the process (SIGKILL, if it still runs) and starts it again
    /// with the same data directory, database and port, plus these
    /// arguments after `serve ...`.
    pub async fn restart_with(&mut self, extra_args: &[String]) {
        self.process.kill();
        self.launch_with(extra_args).await;
    }

    /// The process id of the running API, if any.
    pub fn pid(&self) -> Option<u32> {
        self.process.child.as_ref().map(|c| c.id())
    }

    async fn launch_with(&mut self, extra_args: &[String]) {
        let listen = format!("127.0.0.1:{}", self.port);
        let timeout = self.agent_timeout_seconds.to_string();
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--listen".into(),
            listen,
            "--agent-timeout-seconds".into(),
            timeout,
        ];
        for prefix in &self.speaker_prefixes {
            args.push("--speaker-repository-prefix".into());
            args.push(prefix.clone());
        }
        args.extend(extra_args.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let command = self.command(&args);
        let log = self.data_dir.join(format!("api-{}.log", unique("run")));
        self.process = Process::spawn(command, log);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = self.http.get(format!("{}/healthz", self.url)).send().await
                && r.status().is_success()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "dcs-api did not start:\n{}",
                self.process.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Agent {
    /// Sends a signal (`STOP`, `CONT`, `TERM`, ...) to the agent process.
    pub fn signal(&mut self, signal: &str) {
        self.process.signal(signal);
    }
}
