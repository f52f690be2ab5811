//! Settings, read once from flags and environment.
//!
//! With nothing set, the server starts locally: a SQLite file and random
//! secrets (created once, mode 0600) in the data directory.

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;

#[derive(Debug, Args)]
pub struct AuthArgs {
    /// HS256 (with a secret), RS256 or ES256 (with a public key).
    #[arg(
        long,
        env = "DCS_JWT_ALGORITHM",
        value_enum,
        ignore_case = true,
        default_value = "HS256",
        global = true
    )]
    pub jwt_algorithm: crate::auth::JwtAlgorithm,
    /// HS256 secret [default: <data-dir>/jwt-secret, created if missing].
    #[arg(long, env = "DCS_JWT_SECRET_FILE", global = true)]
    pub jwt_secret_file: Option<PathBuf>,
    /// PEM public key for RS256/ES256.
    #[arg(long, env = "DCS_JWT_PUBLIC_KEY_FILE", global = true)]
    pub jwt_public_key_file: Option<PathBuf>,
    /// PEM private key for RS256/ES256, used only by `dcs-api token`.
    #[arg(long, env = "DCS_JWT_PRIVATE_KEY_FILE", global = true)]
    pub jwt_private_key_file: Option<PathBuf>,
    /// Required `iss` of user tokens.
    #[arg(long, env = "DCS_JWT_ISSUER", default_value = "dcs", global = true)]
    pub jwt_issuer: String,
    /// Required `aud` of user tokens.
    #[arg(
        long,
        env = "DCS_JWT_AUDIENCE",
        default_value = "dcs-api",
        global = true
    )]
    pub jwt_audience: String,
}

impl AuthArgs {
    /// The HS256 secret file; a local default is created when none is set.
    pub fn secret_file(&self, data_dir: &Path) -> anyhow::Result<Option<PathBuf>> {
        if self.jwt_algorithm != crate::auth::JwtAlgorithm::Hs256 {
            return Ok(self.jwt_secret_file.clone());
        }
        match &self.jwt_secret_file {
            Some(path) => Ok(Some(path.clone())),
            None => Ok(Some(ensure_secret(&data_dir.join("jwt-secret"))?)),
        }
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub auth: AuthArgs,
    #[arg(
        long,
        env = "DCS_API_LISTEN",
        default_value = "127.0.0.1:8080",
        global = true
    )]
    pub listen: SocketAddr,
    /// Postgres URL; unset means a SQLite file in the data directory.
    #[arg(long, env = "DATABASE_URL", global = true)]
    pub database_url: Option<String>,
    /// A file holding the Postgres URL (a mounted Secret), instead of
    /// `DATABASE_URL`.
    #[arg(
        long,
        env = "DCS_DATABASE_URL_FILE",
        global = true,
        conflicts_with = "database_url"
    )]
    pub database_url_file: Option<PathBuf>,
    /// Local state: the SQLite default and generated secrets.
    #[arg(
        long,
        env = "DCS_API_DATA_DIR",
        default_value = ".dcs-api",
        global = true
    )]
    pub data_dir: PathBuf,
    /// Secret shared with agents [default: <data-dir>/agent-secret, created if missing].
    #[arg(long, env = "DCS_AGENT_SECRET_FILE", global = true)]
    pub agent_secret_file: Option<PathBuf>,
    /// Where speakers may push, e.g. `registry.example/workshops/{sub}`.
    /// Repeatable; `{sub}` is the token's subject.
    #[arg(
        long = "speaker-repository-prefix",
        env = "DCS_SPEAKER_REPOSITORY_PREFIXES",
        value_delimiter = ',',
        global = true
    )]
    pub speaker_repository_prefixes: Vec<String>,
    /// Per speaker: snapshots in progress at once (default: no limit).
    #[arg(long, env = "DCS_QUOTA_IN_FLIGHT", global = true)]
    pub quota_in_flight: Option<u64>,
    /// Per speaker: snapshots requested in any 24 hours (default: no limit).
    #[arg(long, env = "DCS_QUOTA_PER_DAY", global = true)]
    pub quota_per_day: Option<u64>,
    /// Per speaker: compressed layer bytes of their pushed snapshots
    /// (default: no limit).
    #[arg(long, env = "DCS_QUOTA_BYTES", global = true)]
    pub quota_bytes: Option<u64>,
    /// A `dockerconfigjson` file with registry credentials that may delete
    /// manifests (`deleteSnapshot`, retention); without it deletes are
    /// sent without credentials.
    #[arg(long, env = "DCS_REGISTRY_CONFIG", global = true)]
    pub registry_config: Option<PathBuf>,
    /// A registry (`host:port`) reached over plain HTTP. Repeatable.
    #[arg(
        long = "insecure-registry",
        env = "DCS_INSECURE_REGISTRIES",
        value_delimiter = ',',
        global = true
    )]
    pub insecure_registries: Vec<String>,
    /// Retention: per repository, keep the newest N pushed snapshots and
    /// delete older ones (default: keep all). Never deletes a snapshot
    /// whose image a desktop runs.
    #[arg(long, env = "DCS_RETENTION_KEEP", global = true,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub retention_keep: Option<u64>,
    /// Seconds between retention passes.
    #[arg(
        long,
        env = "DCS_RETENTION_INTERVAL_SECONDS",
        default_value_t = 300,
        global = true
    )]
    pub retention_interval_seconds: u64,
    /// Layers a snapshot's image may have above its lineage base (the
    /// first image no snapshot made): a snapshot that would go past it is
    /// flattened onto the base, and one with room for a single layer is
    /// made with exactly one. 0 turns automatic flattening off.
    #[arg(
        long,
        env = "DCS_LAYER_BUDGET",
        default_value_t = crate::service::layers::DEFAULT_LAYER_BUDGET,
        global = true
    )]
    pub layer_budget: u32,
    /// An agent silent this long is lost, and its running snapshots fail.
    #[arg(
        long,
        env = "DCS_AGENT_TIMEOUT_SECONDS",
        default_value_t = 20,
        global = true
    )]
    pub agent_timeout_seconds: u64,
    #[arg(long, default_value_t = 12, global = true)]
    pub max_query_depth: usize,
    #[arg(long, default_value_t = 2_000, global = true)]
    pub max_query_complexity: usize,
    /// Turn off schema introspection.
    #[arg(long, env = "DCS_NO_INTROSPECTION", global = true)]
    pub no_introspection: bool,
    /// Largest request body any HTTP endpoint accepts (bytes); larger
    /// ones are refused with 413 before they are read.
    #[arg(
        long,
        env = "DCS_API_MAX_BODY_BYTES",
        default_value_t = 1024 * 1024,
        global = true
    )]
    pub max_body_bytes: usize,
    /// Largest body of an agent's job event (bytes): a final event carries
    /// the scan report, up to a thousand findings with their paths.
    #[arg(
        long,
        env = "DCS_API_MAX_EVENT_BODY_BYTES",
        default_value_t = 32 * 1024 * 1024,
        global = true
    )]
    pub max_event_body_bytes: usize,
    /// How long `previewSnapshot` waits for the agent, which walks the
    /// desktop's whole change (the request's deadline grows to this).
    #[arg(
        long,
        env = "DCS_API_PREVIEW_TIMEOUT_SECONDS",
        default_value_t = 60,
        global = true
    )]
    pub preview_timeout_seconds: u64,
    /// Largest preview answer read from an agent (bytes).
    #[arg(
        long,
        env = "DCS_API_MAX_PREVIEW_ANSWER_BYTES",
        default_value_t = 32 * 1024 * 1024,
        global = true
    )]
    pub max_preview_answer_bytes: usize,
    /// Previews this process waits for at once; more are refused with
    /// `RATE_LIMITED`.
    #[arg(long, env = "DCS_API_MAX_PREVIEWS", default_value_t = 8, global = true)]
    pub max_previews: usize,
    /// A request's work stops after this many seconds (GraphQL queries and
    /// mutations, and the database statements they started).
    #[arg(
        long,
        env = "DCS_API_REQUEST_TIMEOUT_SECONDS",
        default_value_t = 10,
        global = true
    )]
    pub request_timeout_seconds: u64,
    /// GraphQL queries and mutations executed at once by this process;
    /// more wait for a turn within their deadline (subscriptions are not
    /// counted).
    #[arg(
        long,
        env = "DCS_API_MAX_CONCURRENT_REQUESTS",
        default_value_t = 32,
        global = true
    )]
    pub max_concurrent_requests: usize,
    /// Database connections kept at most by this process.
    #[arg(long, env = "DCS_DB_POOL_SIZE", default_value_t = 16, global = true)]
    pub db_pool_size: u32,
    /// How long a request waits for a database connection before it fails
    /// with `UNAVAILABLE` (while the database is away, say).
    #[arg(
        long,
        env = "DCS_DB_ACQUIRE_TIMEOUT_SECONDS",
        default_value_t = 5,
        global = true
    )]
    pub db_acquire_timeout_seconds: u64,
    /// Postgres stops statements running longer than this; by default the
    /// request deadline.
    #[arg(long, env = "DCS_DB_STATEMENT_TIMEOUT_MS", global = true)]
    pub db_statement_timeout_ms: Option<u64>,
    /// On SIGTERM, requests still running after this many seconds are
    /// abandoned and the process exits.
    #[arg(
        long,
        env = "DCS_API_SHUTDOWN_GRACE_SECONDS",
        default_value_t = 10,
        global = true
    )]
    pub shutdown_grace_seconds: u64,
    /// Largest WebSocket message a client may send (bytes).
    #[arg(
        long,
        env = "DCS_API_WS_MAX_MESSAGE_BYTES",
        default_value_t = 64 * 1024,
        global = true
    )]
    pub ws_max_message_bytes: usize,
    /// Seconds a WebSocket client has to send `connection_init`.
    #[arg(
        long,
        env = "DCS_API_WS_INIT_TIMEOUT_SECONDS",
        default_value_t = 10,
        global = true
    )]
    pub ws_init_timeout_seconds: u64,
    /// Subscriptions one WebSocket connection may hold at once.
    #[arg(
        long,
        env = "DCS_API_WS_MAX_SUBSCRIPTIONS",
        default_value_t = 20,
        global = true
    )]
    pub ws_max_subscriptions: usize,
    /// Serve `/metrics` on this address only (e.g. `0.0.0.0:9090`), instead
    /// of on the API's listen address.
    #[arg(long, env = "DCS_API_METRICS_LISTEN", global = true)]
    pub metrics_listen: Option<SocketAddr>,
    #[arg(long, value_enum, default_value = "text", global = true)]
    pub log_format: dcs_support::logging::LogFormat,
    #[command(flatten)]
    pub traces: dcs_support::telemetry::TraceArgs,
    /// Use the Kubernetes API: pods by name, agents by service-account
    /// token (TokenReview).
    #[arg(long, env = "DCS_KUBERNETES", global = true)]
    pub kubernetes: bool,
    /// Talk to this API server (plain, unauthenticated) instead of the
    /// in-cluster one; for tests.
    #[arg(long, env = "DCS_KUBERNETES_API_URL", global = true, hide = true)]
    pub kubernetes_api_url: Option<String>,
    /// Audience of the agents' projected service-account tokens.
    #[arg(
        long,
        env = "DCS_AGENT_TOKEN_AUDIENCE",
        default_value = "dcs-agent",
        global = true
    )]
    pub agent_token_audience: String,
    /// In a cluster: the API's projected service-account token, presented
    /// to agents instead of a shared-secret token.
    #[arg(long, env = "DCS_API_SA_TOKEN_FILE", global = true)]
    pub agent_call_token_file: Option<PathBuf>,
    /// The agents' service account, `<namespace>:<name>`.
    #[arg(
        long,
        env = "DCS_AGENT_SERVICE_ACCOUNT",
        default_value = "dcs-system:dcs-agent",
        global = true
    )]
    pub agent_service_account: String,
    /// Let webhooks use plain HTTP (else HTTPS only).
    #[arg(long, env = "DCS_WEBHOOK_ALLOW_HTTP", global = true)]
    pub webhook_allow_http: bool,
    /// Hosts or networks (CIDR) webhooks may reach although the egress
    /// policy blocks them (loopback, private, link-local, ...). Repeatable.
    #[arg(
        long = "webhook-allow",
        env = "DCS_WEBHOOK_ALLOW",
        value_delimiter = ',',
        global = true
    )]
    pub webhook_allow: Vec<String>,
    /// Seconds an attempt may take.
    #[arg(
        long,
        env = "DCS_WEBHOOK_TIMEOUT_SECONDS",
        default_value_t = 15,
        global = true
    )]
    pub webhook_timeout_seconds: u64,
    /// Seconds a claimed delivery stays reserved for the replica sending it.
    #[arg(
        long,
        env = "DCS_WEBHOOK_CLAIM_SECONDS",
        default_value_t = 30,
        global = true
    )]
    pub webhook_claim_seconds: u64,
    /// Milliseconds the webhook worker waits at most between looks for due
    /// deliveries. On PostgreSQL new deliveries wake it at once (LISTEN):
    /// the poll only catches what a lost notification did not announce.
    #[arg(
        long,
        env = "DCS_WEBHOOK_POLL_MS",
        default_value_t = 250,
        global = true
    )]
    pub webhook_poll_ms: u64,
    /// Scales the retry schedule (tests run it faster); 1 in production.
    #[arg(
        long,
        env = "DCS_WEBHOOK_SCHEDULE_SCALE",
        default_value_t = 1.0,
        global = true,
        hide = true
    )]
    pub webhook_schedule_scale: f64,
    /// Whose desktops a speaker reaches inside their token's namespaces:
    /// `owner`, only pods labelled `dcs.io/owner=<their sub>`; `namespace`,
    /// every pod there (when each speaker has a namespace of their own).
    #[arg(
        long,
        env = "DCS_ACCESS_SCOPE",
        value_enum,
        default_value_t = crate::auth::policy::AccessScope::Owner,
        global = true
    )]
    pub access_scope: crate::auth::policy::AccessScope,
    /// Which queries run: `automatic`, any query, and a query sent with
    /// its SHA-256 is kept so that its hash alone runs it next time
    /// (automatic persisted queries); `registered-only`, only queries
    /// registered by an admin or the manifest, by hash or in full (admins
    /// may still send any query).
    #[arg(
        long,
        env = "DCS_PERSISTED_QUERIES",
        value_enum,
        default_value_t = crate::persisted::Mode::Automatic,
        global = true
    )]
    pub persisted_queries: crate::persisted::Mode,
    /// A persisted query manifest (Apollo's JSON format) whose operations
    /// are registered at start-up; a bad one stops the start.
    #[arg(long, env = "DCS_PERSISTED_QUERY_MANIFEST", global = true)]
    pub persisted_query_manifest: Option<PathBuf>,
    /// Automatic persisted queries kept in the database, shared by all
    /// replicas; beyond it the least recently used are deleted (within 1 %
    /// per replica). 0 keeps none.
    #[arg(
        long,
        env = "DCS_PERSISTED_QUERY_CACHE_ENTRIES",
        default_value_t = 10_000,
        global = true
    )]
    pub persisted_query_cache_entries: u64,
    /// Longest query kept or registered (bytes); a longer one sent with
    /// its hash runs without being kept.
    #[arg(
        long,
        env = "DCS_PERSISTED_QUERY_MAX_BYTES",
        default_value_t = 64 * 1024,
        global = true
    )]
    pub persisted_query_max_bytes: usize,
    /// A persisted query's last use is written at most this often per
    /// replica (seconds); tests set 0.
    #[arg(
        long,
        env = "DCS_PERSISTED_QUERY_TOUCH_SECONDS",
        default_value_t = 60,
        global = true,
        hide = true
    )]
    pub persisted_query_touch_seconds: u64,
}

impl ServeArgs {
    /// The database URL from the flag, the environment or the file.
    pub fn database_url(&self) -> anyhow::Result<Option<String>> {
        let Some(path) = &self.database_url_file else {
            return Ok(self.database_url.clone());
        };
        // Never echo the content: it holds a password.
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the database URL file {}", path.display()))?;
        let url = text.trim().to_string();
        if url.is_empty() {
            anyhow::bail!("the database URL file {} is empty", path.display());
        }
        Ok(Some(url))
    }

    pub fn persisted_query_settings(&self) -> crate::persisted::Settings {
        crate::persisted::Settings {
            mode: self.persisted_queries,
            max_automatic_entries: self.persisted_query_cache_entries,
            max_query_bytes: self.persisted_query_max_bytes,
            touch_interval: std::time::Duration::from_secs(self.persisted_query_touch_seconds),
        }
    }

    pub fn agent_secret_file(&self, data_dir: &Path) -> anyhow::Result<PathBuf> {
        match &self.agent_secret_file {
            Some(path) => Ok(path.clone()),
            None => ensure_secret(&data_dir.join("agent-secret")),
        }
    }
}

/// Creates a random secret file (0600) if it does not exist yet.
fn ensure_secret(path: &Path) -> anyhow::Result<PathBuf> {
    if path.exists() {
        return Ok(path.to_path_buf());
    }
    if let Some(dir) = path.parent() {
        // Private from the start (db.rs makes an existing one private too).
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut bytes = [0u8; 48];
    crate::random::fill(&mut bytes);
    let text = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    tracing::info!(path = %path.display(), "created a local secret");
    Ok(path.to_path_buf())
}
