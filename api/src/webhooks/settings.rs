//! How the delivery worker sends: a leaf the shared state can hold without
//! depending on the worker that reads it.

use std::sync::Arc;
use std::time::Duration;

use super::ssrf::{EgressPolicy, client};

#[derive(Debug)]
pub struct WebhookSettings {
    pub policy: Arc<EgressPolicy>,
    /// A client that resolves names through the egress policy, follows no
    /// redirects and gives up after the attempt timeout.
    pub client: reqwest::Client,
    /// How long a claimed delivery is reserved for its sender; longer than
    /// the attempt timeout.
    pub claim: Duration,
    /// 1.0 in production; tests shrink the retry schedule.
    pub schedule_scale: f64,
    /// The longest the worker sleeps between looks for due deliveries: the
    /// safety net for what no wake-up announced (a notification lost while
    /// the listening connection was down, a claim another replica let
    /// expire).
    pub poll: Duration,
}

/// The worker's poll when nobody sets one.
pub const DEFAULT_POLL: Duration = Duration::from_millis(250);

impl WebhookSettings {
    /// Settings whose client obeys `policy` and gives up after `timeout`.
    pub fn new(
        policy: EgressPolicy,
        timeout: Duration,
        claim: Duration,
        schedule_scale: f64,
    ) -> reqwest::Result<Self> {
        let policy = Arc::new(policy);
        Ok(Self {
            client: client(policy.clone(), timeout)?,
            policy,
            claim,
            schedule_scale,
            poll: DEFAULT_POLL,
        })
    }

    /// The same with another poll interval (at least 1 ms).
    pub fn poll_every(mut self, poll: Duration) -> Self {
        self.poll = poll.max(Duration::from_millis(1));
        self
    }
}
