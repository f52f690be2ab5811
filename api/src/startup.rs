//! Builds the shared state: the one recipe used by the server (`cli`) and
//! by the in-process tests, so a field added to the state is set in one
//! place and the tests run the state the server runs.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use dcs_protocol::token::SharedSecret;
use sea_orm::DatabaseConnection;
use tokio::sync::Notify;

use crate::agents::{AgentClient, PreviewLimits};
use crate::auth::JwtVerifier;
use crate::auth::policy::Policy;
use crate::bus::Bus;
use crate::kubernetes::Kubernetes;
use crate::metrics::Metrics;
use crate::persisted::{self, PersistedQueries};
use crate::registry::{Registries, RegistrySettings};
use crate::state::{AppState, Shared};
use crate::webhooks::settings::WebhookSettings;
use crate::webhooks::ssrf::EgressPolicy;

/// The state's parts that have no sensible default are given to `new`;
/// the rest default to the server's defaults and may be overridden.
#[derive(Debug)]
pub struct StateBuilder {
    db: DatabaseConnection,
    verifier: JwtVerifier,
    agent_secret: SharedSecret,
    policy: Policy,
    agent_timeout: Duration,
    agent_call_token_file: Option<PathBuf>,
    preview_limits: PreviewLimits,
    webhooks: Option<WebhookSettings>,
    kubernetes: Option<Kubernetes>,
    persisted_queries: persisted::Settings,
    registries: RegistrySettings,
    layer_budget: u32,
}

impl StateBuilder {
    pub fn new(db: DatabaseConnection, verifier: JwtVerifier, agent_secret: SharedSecret) -> Self {
        Self {
            db,
            verifier,
            agent_secret,
            policy: Policy::default(),
            // The defaults of `ServeArgs`.
            agent_timeout: Duration::from_secs(20),
            agent_call_token_file: None,
            preview_limits: PreviewLimits::default(),
            webhooks: None,
            kubernetes: None,
            persisted_queries: persisted::Settings::default(),
            registries: RegistrySettings::default(),
            layer_budget: crate::service::layers::DEFAULT_LAYER_BUDGET,
        }
    }

    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    pub fn agent_timeout(mut self, timeout: Duration) -> Self {
        self.agent_timeout = timeout;
        self
    }

    pub fn agent_call_token_file(mut self, file: Option<PathBuf>) -> Self {
        self.agent_call_token_file = file;
        self
    }

    pub fn preview_limits(mut self, limits: PreviewLimits) -> Self {
        self.preview_limits = limits;
        self
    }

    pub fn webhooks(mut self, settings: WebhookSettings) -> Self {
        self.webhooks = Some(settings);
        self
    }

    pub fn kubernetes(mut self, kubernetes: Option<Kubernetes>) -> Self {
        self.kubernetes = kubernetes;
        self
    }

    pub fn persisted_queries(mut self, settings: persisted::Settings) -> Self {
        self.persisted_queries = settings;
        self
    }

    pub fn registries(mut self, settings: RegistrySettings) -> Self {
        self.registries = settings;
        self
    }

    pub fn layer_budget(mut self, budget: u32) -> Self {
        self.layer_budget = budget;
        self
    }

    pub fn build(self) -> anyhow::Result<AppState> {
        let webhooks = match self.webhooks {
            Some(settings) => settings,
            // The defaults of `ServeArgs`: the strict egress policy, a 15 s
            // attempt, a 30 s claim, the real schedule.
            None => WebhookSettings::new(
                EgressPolicy::default(),
                Duration::from_secs(15),
                Duration::from_secs(30),
                1.0,
            )
            .context("building the webhook client")?,
        };
        let agents = AgentClient::new(
            self.agent_secret.clone(),
            self.agent_call_token_file,
            self.preview_limits,
        )
        .context("building the agent client")?;
        let metrics = Metrics::new();
        let persisted = PersistedQueries::new(
            self.db.clone(),
            self.persisted_queries,
            metrics.persisted_queries.clone(),
        );
        Ok(AppState::new(Shared {
            bus: Bus::for_database(&self.db),
            db: self.db,
            verifier: self.verifier,
            policy: self.policy,
            agent_secret: self.agent_secret,
            metrics,
            dispatch_wakeup: Notify::new(),
            agent_timeout: self.agent_timeout,
            agents,
            webhooks,
            kubernetes: self.kubernetes,
            webhook_wakeup: Notify::new(),
            persisted,
            registries: Registries::new(self.registries).context("building the registry client")?,
            layer_budget: self.layer_budget,
        }))
    }
}
