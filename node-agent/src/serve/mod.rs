//! `dcs-agent serve`: the agent as a long-running service next to a node's
//! containerd.
//!
//! - registers with the API and heartbeats (`api_client`);
//! - keeps the API's container inventory current from containerd's event
//!   stream (`inventory`);
//! - accepts commit jobs from the API over authenticated HTTP (`http`) and
//!   runs at most N at once (`jobs`);
//! - reports progress and results as signed, ordered, retried callbacks
//!   (`reporter`);
//! - on SIGTERM stops taking jobs, hands back the ones not started, lets the
//!   running ones finish within a grace period, and flushes its reports.

mod api_client;
mod http;
mod inventory;
mod jobs;
pub mod kube_auth;
mod metrics;
mod reporter;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use dcs_protocol::token::SharedSecret;
use tokio_util::sync::CancellationToken;

use crate::containerd::Containerd;
use crate::registry::RegistryOptions;

pub use api_client::ApiClient;

/// Settings of the service, read once at start-up.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub containerd_socket: PathBuf,
    pub namespace: String,
    pub node_name: String,
    pub listen: SocketAddr,
    /// The URL the API uses to reach this agent.
    pub advertise_url: String,
    pub api_url: String,
    pub shared_secret: SharedSecret,
    pub registry: RegistryOptions,
    pub max_concurrent_jobs: usize,
    pub state_dir: PathBuf,
    /// Where new layers are kept until pushed (see `crate::spool`).
    pub spool_dir: PathBuf,
    /// Also keep each new image in containerd on this node.
    pub local_image: bool,
    pub heartbeat_interval: Duration,
    pub shutdown_grace: Duration,
    /// In a cluster: present this projected service-account token to the
    /// API (re-read at every call: kubelet rotates it).
    pub service_account_token_file: Option<PathBuf>,
    /// In a cluster: accept the API's service-account tokens, checked by
    /// TokenReview (besides tokens signed with the shared secret).
    pub api_reviewer: Option<Arc<kube_auth::ApiTokenReviewer>>,
}

/// Runs until SIGTERM or SIGINT.
pub async fn run(config: ServeConfig) -> anyhow::Result<()> {
    let containerd = Containerd::connect(&config.containerd_socket, &config.namespace)
        .await
        .context("containerd")?;
    let dropped = crate::commit::recover_interrupted_commits(&containerd)
        .await
        .context("cleaning up leftover leases")?;
    if dropped > 0 {
        tracing::info!(dropped, "deleted leases left by an earlier agent");
    }
    let containerd_version = containerd.version().await.unwrap_or_default();

    let instance_id = uuid::Uuid::new_v4();
    let api = ApiClient::new(
        &config.api_url,
        config.shared_secret.clone(),
        &config.node_name,
        instance_id,
        config.service_account_token_file.clone(),
    )?;
    let metrics = Arc::new(metrics::Metrics::new());
    let shutdown = CancellationToken::new();
    let reporter = reporter::Reporter::start(api.clone(), shutdown.clone());
    let jobs = jobs::Jobs::new(
        containerd.clone(),
        reporter.clone(),
        metrics.clone(),
        &config,
        instance_id,
    );

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let state = http::AppState {
        jobs: jobs.clone(),
        secret: config.shared_secret.clone(),
        node: config.node_name.clone(),
        containerd: containerd.clone(),
        metrics: metrics.clone(),
        accepting: shutdown.clone(),
        reviewer: config.api_reviewer.clone(),
        previews: std::sync::Arc::new(tokio::sync::Semaphore::new(http::PREVIEWS_AT_ONCE)),
    };
    let server_stop = CancellationToken::new();
    let server = tokio::spawn({
        let stop = server_stop.clone();
        async move {
            axum::serve(listener, http::router(state))
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        }
    });
    tracing::info!(listen = %config.listen, node = %config.node_name, %instance_id, "agent serving");

    let registration = dcs_protocol::Registration {
        node: config.node_name.clone(),
        instance_id,
        url: config.advertise_url.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        containerd_version,
        max_concurrent_jobs: config.max_concurrent_jobs as u32,
    };
    let inventory = inventory::Inventory::new(containerd.clone(), api.clone());
    let background = tokio::spawn(api_client::keep_registered(
        api.clone(),
        registration,
        inventory.clone(),
        jobs.clone(),
        config.heartbeat_interval,
        shutdown.clone(),
    ));
    let watcher = tokio::spawn(inventory.watch(shutdown.clone()));

    wait_for_signal().await;
    tracing::info!("shutting down: no new jobs; finishing or handing back the others");
    shutdown.cancel();
    jobs.shutdown(config.shutdown_grace).await;
    reporter.flush(config.shutdown_grace).await;
    server_stop.cancel();
    let _ = server.await;
    background.abort();
    watcher.abort();
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
