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

/// A binary of this workspace's build.
pub fn binary(name: &str) -> PathBuf {
    let path = crate::agent_binary().with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: build it first with `cargo build --bins`",
        path.display()
    );
    path
}

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
        let mut command = Command::new(binary("dcs-api"));
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
        let listen = format!("127.0.0.1:{}", self.port);
        let timeout = self.agent_timeout_seconds.to_string();
        let mut args = vec![
            "serve",
            "--listen",
            &listen,
            "--agent-timeout-seconds",
            &timeout,
        ];
        for prefix in &self.speaker_prefixes {
            args.push("--speaker-repository-prefix");
            args.push(prefix);
        }
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
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
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
        };
        agent.launch(&api.data_dir);
        agent
    }

    fn launch(&mut self, log_dir: &Path) {
        let mut command = Command::new(crate::agent_binary());
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
