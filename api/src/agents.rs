//! Calls from the API to node agents: the one place that knows their URLs
//! and signs the API's tokens for them. The dispatcher sends jobs through
//! it and the snapshot service cancels them through it; neither builds a
//! request to an agent itself.

use std::path::PathBuf;
use std::time::Duration;

use dcs_protocol::token::{AGENT_AUDIENCE, API_ISSUER, SharedSecret};
use dcs_protocol::{JobRequest, agent_paths};
use uuid::Uuid;

/// The API's client for its agents, owned by the shared state.
/// (Debug: the shared secret prints redacted.)
#[derive(Debug)]
pub struct AgentClient {
    http: reqwest::Client,
    /// Signs tokens to agents (and, in `agent_api`, checks theirs).
    secret: SharedSecret,
    /// In a cluster: the API's projected service-account token for calls
    /// to agents (re-read at every call: kubelet rotates it).
    call_token_file: Option<PathBuf>,
}

impl AgentClient {
    /// Short timeouts: a job is handed over, not run, during the call, and
    /// an agent that does not answer is retried by the dispatcher.
    pub fn new(secret: SharedSecret, call_token_file: Option<PathBuf>) -> reqwest::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            http,
            secret,
            call_token_file,
        })
    }

    /// Hands a job to the agent at `url` (the node's registered URL).
    #[tracing::instrument(skip_all, fields(snapshot_id = %request.snapshot_id, node = %node))]
    pub async fn send_job(
        &self,
        node: &str,
        url: &str,
        request: &JobRequest,
    ) -> reqwest::Result<reqwest::Response> {
        self.http
            .post(format!(
                "{}{}",
                url.trim_end_matches('/'),
                agent_paths::JOBS
            ))
            .bearer_auth(self.token(node))
            .json(request)
            .send()
            .await
    }

    /// Asks the agent at `url` to cancel a job; its result comes back as
    /// the agent's event.
    #[tracing::instrument(skip_all, fields(snapshot_id = %job, node = %node))]
    pub async fn cancel_job(
        &self,
        node: &str,
        url: &str,
        job: Uuid,
    ) -> reqwest::Result<reqwest::Response> {
        let url = format!("{}{}/{}", url.trim_end_matches('/'), agent_paths::JOBS, job);
        self.http
            .delete(url)
            .bearer_auth(self.token(node))
            .send()
            .await
    }

    /// The bearer token for a call to the agent of `node`.
    fn token(&self, node: &str) -> String {
        if let Some(path) = &self.call_token_file {
            match std::fs::read_to_string(path) {
                Ok(token) => return token.trim().to_string(),
                Err(e) => tracing::warn!(path = %path.display(), error = %e,
                    "cannot read the service-account token; using the shared secret"),
            }
        }
        self.secret.sign(API_ISSUER, AGENT_AUDIENCE, node)
    }
}
