//! `dcs-api`: serve (the default), migrate, mint a token, print the schema.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use dcs_protocol::token::SharedSecret;
use dcs_support::telemetry;
use tokio_util::sync::CancellationToken;

use crate::auth::policy::{Policy, Quotas};
use crate::auth::{JwtSigner, JwtVerifier, Role};
use crate::config::{AuthArgs, ServeArgs};
use crate::graphql::{SchemaLimits, build_schema, sdl};
use crate::startup::StateBuilder;
use crate::webhooks::settings::WebhookSettings;

#[derive(Debug, Parser)]
#[command(
    name = "dcs-api",
    version,
    about = "Desktop customisation service API server"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the API server (the default).
    Serve,
    /// Applies the database migrations and exits.
    Migrate,
    /// Mints a user token with the configured key, for local use.
    Token {
        #[arg(long)]
        sub: String,
        #[arg(long, value_enum, default_value = "speaker")]
        role: RoleArg,
        /// Pod namespaces the speaker may work in (comma-separated).
        #[arg(long, value_delimiter = ',')]
        namespaces: Vec<String>,
        #[arg(long, default_value_t = 12 * 3600)]
        ttl_seconds: u64,
    },
    /// Prints the GraphQL schema (SDL).
    Schema,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum RoleArg {
    Speaker,
    Admin,
}

/// The API in its traces: its own spans and those of the shared crate.
const SERVICE: telemetry::Service = telemetry::Service {
    name: "dcs-api",
    crates: &["api", "dcs_support"],
};

pub async fn main() -> ExitCode {
    let cli = Cli::parse();
    // Before any TLS client is built, the trace exporter's included.
    let _ = rustls::crypto::ring::default_provider().install_default();
    if let Err(e) = init_telemetry(&cli) {
        eprintln!("dcs-api: {e:#}");
        return ExitCode::FAILURE;
    }
    let result = run(cli).await;
    let _ = tokio::task::spawn_blocking(telemetry::shutdown).await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dcs-api: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs, and traces for the server: the one-shot commands (a token, the
/// schema, migrations) have nothing worth a trace.
fn init_telemetry(cli: &Cli) -> anyhow::Result<()> {
    let traces_url = match cli.command {
        None | Some(Command::Serve) => cli.serve.traces.traces_url()?,
        Some(_) => None,
    };
    telemetry::init(cli.serve.log_format, "info", traces_url.as_deref(), SERVICE)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(cli.serve).await,
        Command::Migrate => {
            let url = cli.serve.database_url()?;
            crate::db::connect(url.as_deref(), &cli.serve.data_dir).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Token {
            sub,
            role,
            namespaces,
            ttl_seconds,
        } => {
            let signer = signer(&cli.serve.auth, &cli.serve.data_dir)?;
            let role = match role {
                RoleArg::Speaker => Role::Speaker,
                RoleArg::Admin => Role::Admin,
            };
            println!(
                "{}",
                signer.mint(&sub, role, &namespaces, Duration::from_secs(ttl_seconds))
            );
            Ok(())
        }
        Command::Schema => {
            print!("{}", sdl());
            Ok(())
        }
    }
}

fn signer(auth: &AuthArgs, data_dir: &std::path::Path) -> anyhow::Result<JwtSigner> {
    let secret = auth.secret_file(data_dir)?;
    Ok(JwtSigner::new(
        auth.jwt_algorithm,
        secret.as_deref(),
        auth.jwt_private_key_file.as_deref(),
        &auth.jwt_issuer,
        &auth.jwt_audience,
    )?)
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let persisted_queries = args.persisted_query_settings();
    // Checked before anything else starts: a bad manifest is a bad
    // configuration, and stops the start with its sentence.
    let manifest = match &args.persisted_query_manifest {
        Some(path) => Some(
            crate::persisted::manifest::read(path, persisted_queries.max_query_bytes)
                .with_context(|| format!("persisted query manifest {}", path.display()))?,
        ),
        None => None,
    };
    let secret_file = args.auth.secret_file(&args.data_dir)?;
    let verifier = JwtVerifier::new(
        args.auth.jwt_algorithm,
        secret_file.as_deref(),
        args.auth.jwt_public_key_file.as_deref(),
        &args.auth.jwt_issuer,
        &args.auth.jwt_audience,
    )?;
    let agent_secret_file = args.agent_secret_file(&args.data_dir)?;
    let agent_secret = SharedSecret::new(
        std::fs::read(&agent_secret_file)
            .with_context(|| format!("reading {}", agent_secret_file.display()))?,
    )?;
    let database_url = args.database_url()?;
    tracing::info!(database = %crate::db::describe(database_url.as_deref()), "connecting");
    let request_timeout = Duration::from_secs(args.request_timeout_seconds.max(1));
    let pool = crate::db::PoolSettings {
        max_connections: args.db_pool_size,
        acquire_timeout: Duration::from_secs(args.db_acquire_timeout_seconds.max(1)),
        statement_timeout: Some(
            args.db_statement_timeout_ms
                .map(Duration::from_millis)
                .unwrap_or(request_timeout),
        ),
    };
    let db = crate::db::connect_with(database_url.as_deref(), &args.data_dir, &pool).await?;
    if *crate::service::transitions::UNGUARDED {
        tracing::warn!(
            "DCS_TEST_UNGUARDED_TRANSITIONS is set: snapshot transitions are NOT guarded (test-only switch)"
        );
    }

    let webhooks = webhook_settings(&args)?;
    let kubernetes = if args.kubernetes || args.kubernetes_api_url.is_some() {
        Some(
            crate::kubernetes::Kubernetes::connect(
                args.kubernetes_api_url.as_deref(),
                &args.agent_token_audience,
                &args.agent_service_account,
            )
            .await
            .context("connecting to the Kubernetes API")?,
        )
    } else {
        None
    };
    let state = StateBuilder::new(db, verifier, agent_secret)
        .policy(Policy {
            speaker_prefixes: args.speaker_repository_prefixes.clone(),
            access_scope: args.access_scope,
            quotas: Quotas {
                in_flight: args.quota_in_flight,
                per_day: args.quota_per_day,
                bytes: args.quota_bytes,
            },
        })
        .agent_timeout(Duration::from_secs(args.agent_timeout_seconds))
        .layer_budget(args.layer_budget)
        .agent_call_token_file(args.agent_call_token_file.clone())
        .preview_limits(crate::agents::PreviewLimits {
            timeout: Duration::from_secs(args.preview_timeout_seconds.max(1)),
            max_answer_bytes: args.max_preview_answer_bytes,
            max_waiting: args.max_previews,
        })
        .webhooks(webhooks)
        .kubernetes(kubernetes)
        .persisted_queries(persisted_queries)
        .registries(crate::registry::RegistrySettings {
            credentials_file: args.registry_config.clone(),
            insecure: args.insecure_registries.clone(),
        })
        .build()?;
    if let Some(registrations) = manifest {
        state
            .persisted
            .register(&registrations, "manifest")
            .await
            .context("registering the persisted query manifest")?;
        tracing::info!(
            operations = registrations.len(),
            "persisted query manifest registered"
        );
    }
    if persisted_queries.mode == crate::persisted::Mode::RegisteredOnly {
        // The console is a client of this API like any other: in
        // registered-only mode its own documents are registered.
        let console = crate::console::documents::registrations();
        state
            .persisted
            .register(&console, "console")
            .await
            .context("registering the console's queries")?;
    }
    tracing::info!(mode = ?persisted_queries.mode, "persisted queries");
    let schema = build_schema(
        Some(state.clone()),
        SchemaLimits {
            max_depth: args.max_query_depth,
            max_complexity: args.max_query_complexity,
            introspection: !args.no_introspection,
        },
    );

    let limits = crate::http::HttpLimits {
        max_body_bytes: args.max_body_bytes,
        max_event_body_bytes: args.max_event_body_bytes,
        request_timeout,
        max_concurrent_requests: args.max_concurrent_requests,
        ws: crate::http::WsLimits {
            max_message_bytes: args.ws_max_message_bytes,
            init_timeout: Duration::from_secs(args.ws_init_timeout_seconds.max(1)),
            max_subscriptions: args.ws_max_subscriptions,
        },
    };
    let grace = Duration::from_secs(args.shutdown_grace_seconds);

    let stop = CancellationToken::new();
    let dispatcher = tokio::spawn(crate::dispatch::run(state.clone(), stop.clone()));
    let webhook_worker = tokio::spawn(crate::webhooks::worker::run(state.clone(), stop.clone()));
    let webhook_wakeup = tokio::spawn(crate::webhooks::wakeup::listen(state.clone(), stop.clone()));
    let bus_listener = tokio::spawn(state.bus.clone().listen(stop.clone()));
    let retention = args.retention_keep.map(|keep| {
        let settings = crate::retention::Settings {
            keep,
            interval: Duration::from_secs(args.retention_interval_seconds.max(1)),
        };
        tokio::spawn(crate::retention::run(state.clone(), settings, stop.clone()))
    });
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let metrics_server = match args.metrics_listen {
        Some(address) => {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("listening on {address} (metrics)"))?;
            tracing::info!(listen = %address, "metrics serving");
            let router = crate::http::metrics_router(state.clone(), args.max_body_bytes);
            let stop = stop.clone();
            Some(tokio::spawn(async move {
                axum::serve(listener, router)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await
            }))
        }
        None => None,
    };
    tracing::info!(listen = %args.listen, "API serving");
    let router = crate::http::router_with(state, schema, limits, args.metrics_listen.is_none());
    let shutdown = stop.clone();
    let server = axum::serve(
        listener,
        // The peer address limits unknown agent tokens per client.
        router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        wait_for_signal().await;
        tracing::info!(grace_seconds = grace.as_secs(), "shutting down");
        shutdown.cancel();
    });
    // Graceful shutdown waits for every request, forever if one never
    // ends: after the grace period the rest are abandoned. (Requests have
    // a deadline, but a WebSocket or a slow body has none.)
    let finished = async {
        let _ = server.await;
        let _ = dispatcher.await;
        let _ = webhook_worker.await;
        let _ = webhook_wakeup.await;
        let _ = bus_listener.await;
        if let Some(retention) = retention {
            let _ = retention.await;
        }
        if let Some(metrics) = metrics_server {
            let _ = metrics.await;
        }
    };
    tokio::pin!(finished);
    tokio::select! {
        () = &mut finished => return Ok(()),
        () = stop.cancelled() => {}
    }
    if tokio::time::timeout(grace, finished).await.is_err() {
        tracing::warn!(
            grace_seconds = grace.as_secs(),
            "requests still running after the grace period; exiting without them"
        );
        // Returning would drop the runtime, which waits for blocking
        // tasks without limit; the database is consistent (transactions
        // not committed roll back), so leave at once, with the spans of
        // what did finish sent.
        telemetry::shutdown();
        std::process::exit(0);
    }
    Ok(())
}

fn webhook_settings(args: &ServeArgs) -> anyhow::Result<WebhookSettings> {
    let policy = crate::webhooks::ssrf::EgressPolicy::new(
        args.webhook_allow_http,
        args.webhook_allow.iter(),
    )
    .context("--webhook-allow")?;
    Ok(WebhookSettings::new(
        policy,
        Duration::from_secs(args.webhook_timeout_seconds.max(1)),
        Duration::from_secs(
            args.webhook_claim_seconds
                .max(args.webhook_timeout_seconds + 1),
        ),
        args.webhook_schedule_scale.clamp(0.0, 1.0),
    )?
    .poll_every(Duration::from_millis(args.webhook_poll_ms)))
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
