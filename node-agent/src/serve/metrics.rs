//! Prometheus metrics of the agent.

use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct Outcome {
    pub outcome: String,
}

pub(super) struct Metrics {
    registry: Registry,
    pub commits: Family<Outcome, Counter>,
    pub running: Gauge<i64, AtomicI64>,
    pub commit_seconds: Histogram,
    pub paused_seconds: Histogram,
}

impl Metrics {
    pub(super) fn new() -> Self {
        let mut registry = Registry::with_prefix("dcs_agent");
        let commits = Family::<Outcome, Counter>::default();
        let running = Gauge::<i64, AtomicI64>::default();
        let commit_seconds = Histogram::new(exponential_buckets(0.05, 2.0, 12));
        let paused_seconds = Histogram::new(exponential_buckets(0.005, 2.0, 12));
        registry.register("commits", "Commits by outcome", commits.clone());
        registry.register("jobs_running", "Commit jobs running now", running.clone());
        registry.register(
            "commit_duration_seconds",
            "Time from job start to pushed image",
            commit_seconds.clone(),
        );
        registry.register(
            "paused_seconds",
            "How long tasks were paused while their changes were read",
            paused_seconds.clone(),
        );
        Self {
            registry,
            commits,
            running,
            commit_seconds,
            paused_seconds,
        }
    }

    pub(super) fn encode(&self) -> String {
        let mut text = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
