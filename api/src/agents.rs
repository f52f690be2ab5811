//! Calls from the API to node agents: the one place that knows their URLs
//! and signs the API's tokens for them. The dispatcher sends jobs through
//! it, the snapshot service cancels them and asks for previews through it;
//! none of them builds a request to an agent itself.

use std::path::PathBuf;
use std::time::Duration;

use dcs_protocol::token::{AGENT_AUDIENCE, API_ISSUER, SharedSecret};
use dcs_protocol::{JobRequest, Preview, PreviewRequest, agent_paths};
use tokio::sync::Semaphore;
use uuid::Uuid;

/// Bounds on previews: unlike a job, a preview is answered during the
/// call, after the agent has walked the desktop's whole change.
#[derive(Debug, Clone, Copy)]
pub struct PreviewLimits {
    /// How long the API waits for an agent's preview.
    pub timeout: Duration,
    /// The largest answer read; a longer one is dropped unread.
    pub max_answer_bytes: usize,
    /// Previews this process waits for at once (on all agents); more are
    /// refused at once. Each agent runs at most two at a time itself.
    pub max_waiting: usize,
}

impl Default for PreviewLimits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(60),
            max_answer_bytes: 32 * 1024 * 1024,
            max_waiting: 8,
        }
    }
}

/// Why an agent's preview has no answer.
#[derive(Debug, thiserror::Error)]
pub enum PreviewFailure {
    /// This process already waits for `max_waiting` previews.
    #[error("too many previews are waiting")]
    Busy,
    /// The agent answered with an error status; `message` is its sentence
    /// (from its `{"code", "message"}` body, printable, cut to 500 chars).
    #[error("the agent refused the preview (HTTP {status}): {message}")]
    Refused {
        status: reqwest::StatusCode,
        message: String,
    },
    #[error("the agent's answer is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the agent did not answer within {0:?}")]
    TimedOut(Duration),
    #[error("the agent could not be reached: {0}")]
    Unreachable(String),
    #[error("the agent's answer is not a preview: {0}")]
    Malformed(String),
}

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
    preview_limits: PreviewLimits,
    /// One permit per preview waited for (`PreviewLimits::max_waiting`).
    previews: Semaphore,
}

impl AgentClient {
    /// Short timeouts: a job is handed over, not run, during the call, and
    /// an agent that does not answer is retried by the dispatcher.
    /// Previews set their own (`PreviewLimits::timeout`).
    pub fn new(
        secret: SharedSecret,
        call_token_file: Option<PathBuf>,
        preview_limits: PreviewLimits,
    ) -> reqwest::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            http,
            secret,
            call_token_file,
            preview_limits,
            previews: Semaphore::new(preview_limits.max_waiting.max(1)),
        })
    }

    pub fn preview_limits(&self) -> PreviewLimits {
        self.preview_limits
    }

    /// Asks the agent at `url` what a snapshot of a container would hold
    /// now. At most `max_waiting` at once in this process, each within
    /// `timeout` and `max_answer_bytes`. The answer is never logged: its
    /// paths are the speaker's.
    #[tracing::instrument(skip_all, fields(node = %node, container = %request.container_id))]
    pub async fn preview(
        &self,
        node: &str,
        url: &str,
        request: &PreviewRequest,
    ) -> Result<Preview, PreviewFailure> {
        let Ok(_permit) = self.previews.try_acquire() else {
            return Err(PreviewFailure::Busy);
        };
        let limits = self.preview_limits;
        let call = async {
            let response = self
                .http
                .post(format!(
                    "{}{}",
                    url.trim_end_matches('/'),
                    agent_paths::PREVIEW
                ))
                .bearer_auth(self.token(node))
                .timeout(limits.timeout)
                .json(request)
                .send()
                .await
                .map_err(|e| transport_failure(&e, limits.timeout))?;
            let status = response.status();
            let body = read_capped(response, limits.max_answer_bytes, limits.timeout).await?;
            if !status.is_success() {
                return Err(PreviewFailure::Refused {
                    status,
                    message: agent_sentence(&body),
                });
            }
            // Where it broke, not what it said: serde's message can quote
            // the answer, and the answer holds the speaker's paths.
            serde_json::from_slice::<Preview>(&body).map_err(|e| {
                PreviewFailure::Malformed(format!(
                    "{:?} error at line {}, column {}",
                    e.classify(),
                    e.line(),
                    e.column()
                ))
            })
        };
        tokio::time::timeout(limits.timeout, call)
            .await
            .unwrap_or(Err(PreviewFailure::TimedOut(limits.timeout)))
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

fn transport_failure(error: &reqwest::Error, timeout: Duration) -> PreviewFailure {
    if error.is_timeout() {
        PreviewFailure::TimedOut(timeout)
    } else {
        PreviewFailure::Unreachable(dcs_support::describe_chain(error))
    }
}

/// The whole body, if it is at most `limit` bytes: reading stops at the
/// first chunk beyond it, so a huge answer costs at most the limit.
async fn read_capped(
    mut response: reqwest::Response,
    limit: usize,
    timeout: Duration,
) -> Result<Vec<u8>, PreviewFailure> {
    if response
        .content_length()
        .is_some_and(|length| length > limit as u64)
    {
        return Err(PreviewFailure::TooLarge(limit));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| transport_failure(&e, timeout))?
    {
        if body.len() + chunk.len() > limit {
            return Err(PreviewFailure::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The agent's sentence from its JSON error (`{"message": ...}`), printable
/// and at most 500 characters; empty when it gave none.
fn agent_sentence(body: &[u8]) -> String {
    const MAX_SENTENCE: usize = 500;
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(String::from))
        .unwrap_or_default();
    let message: String = message
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_SENTENCE)
        .collect();
    message.trim().to_string()
}
