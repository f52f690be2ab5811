//! A running `dcs-api`, started by [`ApiBuilder`]: `Api::start(options)`
//! for the defaults, `Api::builder(options).args(..).start()` for more.

use std::fmt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use super::jwt;
use super::process::Process;
use super::{Database, free_port, http_client};
use crate::unique;

/// Options of an API process.
#[derive(Clone)]
pub struct ApiOptions {
    /// `None`: the SQLite default.
    pub database_url: Option<String>,
    pub speaker_prefixes: Vec<String>,
    /// Registries the API speaks plain HTTP to (its manifest deletes):
    /// the test registry.
    pub insecure_registries: Vec<String>,
    pub agent_timeout_seconds: u64,
    /// `--layer-budget`; `None`: the API's default.
    pub layer_budget: Option<u32>,
}

/// Without the database URL, which may carry a password.
impl fmt::Debug for ApiOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let database = match self.database_url {
            Some(_) => "postgres (URL not shown)",
            None => "sqlite",
        };
        f.debug_struct("ApiOptions")
            .field("database", &database)
            .field("speaker_prefixes", &self.speaker_prefixes)
            .field("insecure_registries", &self.insecure_registries)
            .field("agent_timeout_seconds", &self.agent_timeout_seconds)
            .field("layer_budget", &self.layer_budget)
            .finish()
    }
}

impl ApiOptions {
    /// On the Postgres database `db`; speakers push under
    /// `<registry>/workshops/<sub>`; an agent silent for
    /// `agent_timeout_seconds` is lost.
    pub fn postgres(db: &Database, registry: &str, agent_timeout_seconds: u64) -> Self {
        Self {
            database_url: Some(db.url.clone()),
            ..Self::sqlite(registry, agent_timeout_seconds)
        }
    }

    /// The same on the API's SQLite default.
    pub fn sqlite(registry: &str, agent_timeout_seconds: u64) -> Self {
        Self {
            database_url: None,
            speaker_prefixes: vec![format!("{registry}/workshops/{{sub}}")],
            insecure_registries: vec![registry.to_string()],
            agent_timeout_seconds,
            layer_budget: None,
        }
    }
}

/// A running `dcs-api`.
#[derive(Debug)]
pub struct Api {
    process: Process,
    pub port: u16,
    pub url: String,
    pub data_dir: PathBuf,
    options: ApiOptions,
    /// Environment variables of every run (see `ApiBuilder::env`).
    variables: Vec<(String, String)>,
    pub(super) http: reqwest::Client,
}

/// An API to start: its options, and arguments added after `serve ...`
/// (for example `--webhook-allow 127.0.0.0/8 --webhook-allow-http`).
#[derive(Debug)]
pub struct ApiBuilder {
    options: ApiOptions,
    args: Vec<String>,
    variables: Vec<(String, String)>,
}

impl ApiBuilder {
    /// More arguments after `serve ...`. `Api::restart` does not repeat
    /// them: use `Api::restart_with`.
    pub fn args<S: AsRef<str>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_string()));
        self
    }

    /// Another replica of `other`: the same JWT and agent secrets (by
    /// file), so tokens of either are good on both.
    pub fn replica_of(self, other: &Api) -> Self {
        self.args([
            "--jwt-secret-file".to_string(),
            other
                .data_dir
                .join("jwt-secret")
                .to_string_lossy()
                .to_string(),
            "--agent-secret-file".to_string(),
            other.agent_secret_file().to_string_lossy().to_string(),
        ])
    }

    /// An environment variable of the API process (and of its restarts).
    /// The OpenTelemetry endpoint is not inherited from the test's
    /// environment: a test that wants traces sets it here.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.variables.push((name.to_string(), value.to_string()));
        self
    }

    /// Starts the API in a fresh data directory on a free port, and waits
    /// until it answers `/healthz`.
    pub async fn start(self) -> Api {
        let data_dir = std::env::temp_dir().join(unique("dcs-api"));
        std::fs::create_dir_all(&data_dir).expect("data dir");
        let port = free_port();
        let mut api = Api {
            process: Process::not_started(data_dir.join("api.log")),
            port,
            url: format!("http://127.0.0.1:{port}"),
            data_dir,
            options: self.options,
            variables: self.variables,
            http: http_client(),
        };
        api.launch(&self.args).await;
        api
    }
}

impl Api {
    pub fn builder(options: ApiOptions) -> ApiBuilder {
        ApiBuilder {
            options,
            args: Vec::new(),
            variables: Vec::new(),
        }
    }

    /// An API with `options` and no other arguments.
    pub async fn start(options: ApiOptions) -> Self {
        Self::builder(options).start().await
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(crate::built_binary("dcs-api"));
        crate::otlp_receiver::forget_inherited_endpoints(&mut command);
        command
            .env_remove("DATABASE_URL")
            .env("RUST_LOG", "info,tower_http=warn,sqlx=warn")
            .envs(self.variables.iter().map(|(k, v)| (k, v)))
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(args);
        if let Some(url) = &self.options.database_url {
            command.env("DATABASE_URL", url);
        }
        command
    }

    async fn launch(&mut self, extra_args: &[String]) {
        let listen = format!("127.0.0.1:{}", self.port);
        let timeout = self.options.agent_timeout_seconds.to_string();
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--listen".into(),
            listen,
            "--agent-timeout-seconds".into(),
            timeout,
        ];
        for prefix in &self.options.speaker_prefixes {
            args.push("--speaker-repository-prefix".into());
            args.push(prefix.clone());
        }
        for registry in &self.options.insecure_registries {
            args.push("--insecure-registry".into());
            args.push(registry.clone());
        }
        if let Some(budget) = self.options.layer_budget {
            args.push("--layer-budget".into());
            args.push(budget.to_string());
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

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// SIGTERM, then waits for the exit; `false` if it still runs after
    /// `timeout`.
    pub fn terminate(&mut self, timeout: Duration) -> bool {
        self.process.signal("TERM");
        self.process.wait(timeout)
    }

    /// Starts it again with the same data directory and database.
    pub async fn restart(&mut self) {
        self.restart_with(&[]).await;
    }

    /// Kills the process (SIGKILL, if it still runs) and starts it again
    /// with the same data directory, database and port, plus these
    /// arguments after `serve ...`.
    pub async fn restart_with(&mut self, extra_args: &[String]) {
        self.process.kill();
        self.launch(extra_args).await;
    }

    /// The process id of the running API, if any.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }

    /// The whole log of the current process.
    pub fn log(&self) -> String {
        self.process.log()
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

    /// The secret agents share with this API.
    pub fn agent_secret_file(&self) -> PathBuf {
        self.data_dir.join("agent-secret")
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

    /// `GET /metrics` (Prometheus text).
    pub async fn metrics(&self) -> String {
        super::fetch_metrics(&self.http, &self.url, None).await
    }
}
