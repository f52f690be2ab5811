//! Commit jobs from the API: at most N run at once, the rest wait for a
//! slot. Each job reports its steps through the reporter with increasing
//! sequence numbers.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dcs_protocol::{FailureCode, JobAccepted, JobEvent, JobEventKind, JobRequest, JobResult};
use dcs_support::trace_context;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;
use uuid::Uuid;

use super::ServeConfig;
use super::metrics::{Metrics, Outcome};
use super::reporter::Reporter;
use crate::commit::{CommitError, CommitProgress, CommitRequest, CommitResult, commit};
use crate::containerd::{self, Containerd};
use crate::image::changes::ConfigChange;
use crate::image::flatten::FlattenError;
use crate::layer::LayerError;
use crate::lock::LockError;
use crate::registry::{RegistryError, RegistryOptions};

#[derive(Clone)]
pub(super) struct Jobs {
    inner: Arc<Inner>,
}

struct Inner {
    containerd: Containerd,
    reporter: Reporter,
    metrics: Arc<Metrics>,
    node: String,
    instance_id: Uuid,
    registry: RegistryOptions,
    state_dir: PathBuf,
    spool_dir: PathBuf,
    local_image: bool,
    slots: Arc<Semaphore>,
    jobs: Mutex<HashMap<Uuid, Arc<Job>>>,
    accepting: AtomicBool,
    /// Cancelled at shutdown: jobs still waiting for a slot are handed back.
    hand_back: CancellationToken,
    tracker: TaskTracker,
}

struct Job {
    cancel: CancellationToken,
    /// The job span's `traceparent` (when traces are exported): the posts
    /// of the job's events continue its trace, whichever task sends them.
    traceparent: Option<String>,
    seq: AtomicU64,
    /// Set when the commit starts writing the tag: a cancel after that
    /// point no longer stops it (see `CommitProgress::Tagging`).
    tagging: AtomicBool,
}

#[derive(Debug, thiserror::Error)]
pub(super) enum SubmitError {
    #[error("the agent is shutting down")]
    ShuttingDown,
    #[error("{0}")]
    BadRequest(String),
}

impl Jobs {
    pub(super) fn new(
        containerd: Containerd,
        reporter: Reporter,
        metrics: Arc<Metrics>,
        config: &ServeConfig,
        instance_id: Uuid,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                containerd,
                reporter,
                metrics,
                node: config.node_name.clone(),
                instance_id,
                registry: config.registry.clone(),
                state_dir: config.state_dir.clone(),
                spool_dir: config.spool_dir.clone(),
                local_image: config.local_image,
                slots: Arc::new(Semaphore::new(config.max_concurrent_jobs.max(1))),
                jobs: Mutex::new(HashMap::new()),
                accepting: AtomicBool::new(true),
                hand_back: CancellationToken::new(),
                tracker: TaskTracker::new(),
            }),
        }
    }

    /// Snapshots this agent is working on or still reporting on.
    pub(super) fn ids(&self) -> Vec<Uuid> {
        let mut ids: Vec<Uuid> = self.lock().keys().copied().collect();
        ids.extend(self.inner.reporter.pending_jobs());
        ids.sort();
        ids.dedup();
        ids
    }

    /// Starts a job; a job already known is not started twice (the API
    /// retries dispatch when an answer is lost). The job's span continues
    /// the trace of the API's dispatch (`request.traceparent`), and the
    /// commit's span is its child.
    pub(super) fn submit(&self, request: JobRequest) -> Result<JobAccepted, SubmitError> {
        let span = tracing::info_span!(
            "job",
            snapshot_id = %request.snapshot_id,
            container_id = %request.container_id
        );
        trace_context::set_remote_parent(&span, request.traceparent.as_deref());
        let _in_span = span.enter();
        if !self.inner.accepting.load(Ordering::SeqCst) {
            return Err(SubmitError::ShuttingDown);
        }
        let commit_request = self.commit_request(&request)?;
        let mut jobs = self.lock();
        if jobs.contains_key(&request.snapshot_id) {
            return Ok(JobAccepted {
                snapshot_id: request.snapshot_id,
                queued: false,
                instance_id: Some(self.inner.instance_id),
            });
        }
        let job = Arc::new(Job {
            cancel: CancellationToken::new(),
            traceparent: trace_context::traceparent_of(&span),
            seq: AtomicU64::new(request.last_event_seq),
            tagging: AtomicBool::new(false),
        });
        jobs.insert(request.snapshot_id, job.clone());
        drop(jobs);
        let queued = self.inner.slots.available_permits() == 0;
        let this = self.clone();
        // In the job's span: the commit's span opens at the task's first
        // poll, and is the job's child only if the job's span is entered
        // then. The job's span so lasts as long as the job.
        self.inner.tracker.spawn(
            this.run(request.snapshot_id, commit_request, job)
                .instrument(span.clone()),
        );
        Ok(JobAccepted {
            snapshot_id: request.snapshot_id,
            queued,
            instance_id: Some(self.inner.instance_id),
        })
    }

    /// Asks a job to stop; `false` when there is no such job.
    #[tracing::instrument(skip_all, fields(snapshot_id = %id))]
    pub(super) fn cancel(&self, id: Uuid) -> bool {
        match self.lock().get(&id) {
            Some(job) => {
                job.cancel.cancel();
                true
            }
            None => false,
        }
    }

    /// Stops taking jobs, hands back those without a slot, and waits for
    /// the running ones, at most `grace`; the ones still running then are
    /// cancelled (their task resumed, their lease released).
    pub(super) async fn shutdown(&self, grace: Duration) {
        self.inner.accepting.store(false, Ordering::SeqCst);
        self.inner.hand_back.cancel();
        self.inner.tracker.close();
        if tokio::time::timeout(grace, self.inner.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("grace period over; cancelling the commits still running");
            for job in self.lock().values() {
                job.cancel.cancel();
            }
            self.inner.tracker.wait().await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Arc<Job>>> {
        self.inner
            .jobs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn commit_request(&self, request: &JobRequest) -> Result<CommitRequest, SubmitError> {
        let changes = request
            .changes
            .iter()
            .map(|c| c.parse::<ConfigChange>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| SubmitError::BadRequest(e.to_string()))?;
        // The API parsed and authorised the target; it is pushed exactly as
        // sent, once it is known to be one the shared parser could produce.
        let text = request.target.to_string();
        if crate::registry::reference::parse_target(&text).as_ref() != Ok(&request.target) {
            return Err(SubmitError::BadRequest(format!(
                "the target {text:?} is not a valid image reference"
            )));
        }
        Ok(CommitRequest {
            container_id: request.container_id.clone(),
            target: request.target.clone(),
            compression: request.compression,
            pause: request.pause,
            excludes: request.excludes.clone(),
            default_excludes: true,
            changes,
            message: request.message.clone(),
            snapshot_id: Some(request.snapshot_id.to_string()),
            registry: self.inner.registry.clone(),
            state_dir: self.inner.state_dir.clone(),
            spool_dir: self.inner.spool_dir.clone(),
            local_image: self.inner.local_image,
            acknowledged: request.acknowledged_findings.clone(),
            flatten: request.flatten.clone(),
            single_layer: request.single_layer,
        })
    }

    fn report(&self, snapshot_id: Uuid, job: &Job, kind: JobEventKind) {
        let seq = job.seq.fetch_add(1, Ordering::SeqCst) + 1;
        let event = JobEvent {
            snapshot_id,
            node: self.inner.node.clone(),
            instance_id: self.inner.instance_id,
            seq,
            at: chrono::Utc::now(),
            kind,
        };
        self.inner.reporter.report(event, job.traceparent.clone());
    }

    #[tracing::instrument(name = "commit", skip_all, fields(snapshot_id = %snapshot_id, container_id = %request.container_id))]
    async fn run(self, snapshot_id: Uuid, request: CommitRequest, job: Arc<Job>) {
        let permit = tokio::select! {
            permit = self.inner.slots.clone().acquire_owned() => permit.ok(),
            _ = job.cancel.cancelled() => {
                self.finish(snapshot_id, &job, JobEventKind::Cancelled {
                    reason: "cancelled before it started".into(),
                }, "cancelled");
                return;
            }
            _ = self.inner.hand_back.cancelled() => {
                self.finish(snapshot_id, &job, JobEventKind::HandedBack {
                    reason: "the agent shut down before the job started".into(),
                }, "handed_back");
                return;
            }
        };
        let Some(_permit) = permit else {
            return;
        };
        self.inner.metrics.running.inc();
        let progress = {
            let this = self.clone();
            let job = job.clone();
            Arc::new(move |step: CommitProgress| {
                let kind = match step {
                    CommitProgress::Diffing => JobEventKind::Diffing,
                    CommitProgress::Pushing { done, total } => JobEventKind::Pushing {
                        bytes_done: done,
                        bytes_total: total,
                    },
                    CommitProgress::Tagging => {
                        job.tagging.store(true, Ordering::SeqCst);
                        return;
                    }
                };
                this.report(snapshot_id, &job, kind);
            })
        };
        // A cancel stops the commit until it starts writing the tag; after
        // that it runs to its end, and the snapshot ends with what the
        // registry holds (PUSHED, or FAILED if the manifest was refused).
        // The flag is set inside the commit's own poll, before the
        // manifest request goes out, so the two cannot interleave.
        let cancelled = async {
            job.cancel.cancelled().await;
            if job.tagging.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
        };
        let outcome = tokio::select! {
            result = commit(&self.inner.containerd, &request, Some(progress)) => Some(result),
            () = cancelled => None,
        };
        self.inner.metrics.running.dec();
        let (kind, label) = match outcome {
            Some(Ok(result)) => {
                self.inner
                    .metrics
                    .commit_seconds
                    .observe(result.duration_ms as f64 / 1000.0);
                self.inner
                    .metrics
                    .paused_seconds
                    .observe(result.paused_ms as f64 / 1000.0);
                (JobEventKind::Pushed(Box::new(job_result(result))), "pushed")
            }
            Some(Err(error)) => (
                JobEventKind::Failed {
                    code: failure_code(&error),
                    reason: error.to_string(),
                    // The whole scan, so the speaker sees what to
                    // acknowledge or exclude (paths and rules, no values).
                    findings: match &error {
                        CommitError::SecretsFound(refusal) => Some(refusal.report.clone()),
                        _ => None,
                    },
                },
                "failed",
            ),
            None => (
                JobEventKind::Cancelled {
                    reason: "cancelled while running".into(),
                },
                "cancelled",
            ),
        };
        self.finish(snapshot_id, &job, kind, label);
    }

    fn finish(&self, snapshot_id: Uuid, job: &Job, kind: JobEventKind, outcome: &str) {
        self.report(snapshot_id, job, kind);
        self.inner
            .metrics
            .commits
            .get_or_create(&Outcome {
                outcome: outcome.to_string(),
            })
            .inc();
        self.lock().remove(&snapshot_id);
    }
}

fn job_result(r: CommitResult) -> JobResult {
    JobResult {
        image: r.image,
        manifest_digest: r.manifest_digest,
        config_digest: r.config_digest,
        layer_digest: r.layer.digest,
        layer_diff_id: r.layer.diff_id,
        layer_size: r.layer.size,
        layer_media_type: r.layer.media_type,
        uncompressed_size: r.layer.uncompressed_size,
        base_image: r.base_image,
        base_digest: r.base_digest,
        paused_ms: r.paused_ms,
        prepare_ms: r.prepare_ms,
        duration_ms: r.duration_ms,
        method: r.method,
        findings: r.findings,
        layer_count: Some(r.layer_count as u32),
        base_layer_count: Some(r.base_layer_count as u32),
        flattened: r.flattened,
    }
}

/// A stable code for clients; the sentence goes alongside.
fn failure_code(error: &CommitError) -> FailureCode {
    match error {
        CommitError::Containerd(containerd::Error::ContainerNotFound { .. }) => {
            FailureCode::ContainerNotFound
        }
        CommitError::Containerd(containerd::Error::DiskFull { .. }) => FailureCode::DiskFull,
        CommitError::Containerd(_) | CommitError::NoSnapshot { .. } => FailureCode::Containerd,
        CommitError::BaseImage(_) => FailureCode::BadRequest,
        // Could not be read from containerd or the base's registry: may
        // pass next time.
        CommitError::Flatten(FlattenError::Unreadable { .. }) => FailureCode::Registry,
        CommitError::Flatten(_) => FailureCode::BadRequest,
        CommitError::Layer(LayerError::Write(e)) if is_disk_full(e) => FailureCode::DiskFull,
        CommitError::Layer(_) | CommitError::Interrupted(_) => FailureCode::Internal,
        CommitError::Spool(e) if is_disk_full(&e.source) => FailureCode::DiskFull,
        CommitError::Spool(_) => FailureCode::Internal,
        CommitError::Registry(
            RegistryError::Unauthorized { .. }
            | RegistryError::Forbidden { .. }
            | RegistryError::Credentials { .. },
        ) => FailureCode::RegistryAuth,
        CommitError::Registry(RegistryError::BadReference { .. }) => FailureCode::BadRequest,
        CommitError::Registry(RegistryError::Containerd(_)) => FailureCode::Containerd,
        CommitError::Registry(_) => FailureCode::Registry,
        CommitError::Exclude(_) => FailureCode::BadRequest,
        CommitError::Lock(LockError::Busy { .. }) => FailureCode::Busy,
        CommitError::SecretsFound(_) => FailureCode::SecretsFound,
        CommitError::Lock(_) => FailureCode::Internal,
    }
}

fn is_disk_full(error: &std::io::Error) -> bool {
    // `StorageFull` is how std names ENOSPC, `QuotaExceeded` EDQUOT: the
    // user's share of the disk is full, which is as final for the commit.
    matches!(
        error.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    ) || error.to_string().contains("no space left")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::SpoolError;

    fn spool_failure(errno: i32) -> FailureCode {
        failure_code(&CommitError::Spool(SpoolError {
            dir: PathBuf::from("/spool"),
            source: std::io::Error::from_raw_os_error(errno),
        }))
    }

    #[test]
    fn a_full_disk_or_quota_is_disk_full() {
        assert_eq!(
            spool_failure(rustix::io::Errno::NOSPC.raw_os_error()),
            FailureCode::DiskFull
        );
        assert_eq!(
            spool_failure(rustix::io::Errno::DQUOT.raw_os_error()),
            FailureCode::DiskFull
        );
        let layer = CommitError::Layer(LayerError::Write(std::io::Error::from_raw_os_error(
            rustix::io::Errno::DQUOT.raw_os_error(),
        )));
        assert_eq!(failure_code(&layer), FailureCode::DiskFull);
        assert_eq!(
            spool_failure(rustix::io::Errno::IO.raw_os_error()),
            FailureCode::Internal
        );
    }
}
