//! The container's task, paused while its changes are read.

use std::time::{Duration, Instant};

use crate::containerd::{self, Containerd};

use super::CommitError;
use super::on_drop::SpawnOnDrop;

/// Tries to freeze the task before the commit fails.
const PAUSE_ATTEMPTS: usize = 3;

/// A paused task. If the commit is dropped half-way (cancelled), the task
/// is resumed from `Drop`, so no path leaves a desktop frozen.
pub(super) struct PausedTask {
    client: Containerd,
    container_id: String,
    since: Instant,
    resume_on_drop: SpawnOnDrop,
}

impl PausedTask {
    pub(super) async fn pause(
        client: &Containerd,
        container_id: &str,
    ) -> Result<Self, CommitError> {
        // The guard exists before the call: a commit dropped (cancelled)
        // while containerd pauses the task still resumes it.
        let mut guard = Self {
            client: client.clone(),
            container_id: container_id.to_string(),
            since: Instant::now(),
            resume_on_drop: SpawnOnDrop::new(resume_task(client.clone(), container_id.to_string())),
        };
        // runc gives up freezing when a task stays in the kernel too long
        // (seen: "unable to freeze" on a desktop writing hard while the
        // disk was busy); it thaws what it froze, so trying again is safe.
        let mut result = client.pause_task(container_id).await;
        for _ in 1..PAUSE_ATTEMPTS {
            if result.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            result = client.pause_task(container_id).await;
        }
        if let Err(e) = result {
            // Nothing was paused; nothing to resume.
            guard.resume_on_drop.disarm();
            return Err(e.into());
        }
        guard.since = Instant::now();
        Ok(guard)
    }

    /// Resumes; returns the outcome and how long the task was paused. The
    /// guard stays armed until containerd has answered, so a commit dropped
    /// during the call still resumes the task (and a failed resume is
    /// tried once more from `Drop`).
    pub(super) async fn resume(mut self) -> (Result<(), containerd::Error>, Duration) {
        let result = self.client.resume_task(&self.container_id).await;
        if result.is_ok() {
            self.resume_on_drop.disarm();
        }
        (result, self.since.elapsed())
    }
}

async fn resume_task(client: Containerd, container_id: String) {
    if let Err(e) = client.resume_task(&container_id).await {
        tracing::error!(container = %container_id, error = %e, "could not resume a paused task");
    }
}

/// The pause of a one-pass read: the task while it is paused, and how long
/// it was paused in all once resumed. A read may resume it before it ends
/// (the Diff service's layer, once nothing more is read from the live file
/// system).
#[derive(Default)]
pub(super) struct ReadPause {
    task: Option<PausedTask>,
    held: Duration,
}

impl ReadPause {
    pub(super) fn is_paused(&self) -> bool {
        self.task.is_some()
    }

    pub(super) fn hold(&mut self, task: PausedTask) {
        self.task = Some(task);
    }

    /// Resumes the task if it is paused. A failed resume is an error (and
    /// is tried once more when the guard drops).
    pub(super) async fn resume(&mut self) -> Result<(), containerd::Error> {
        let Some(task) = self.task.take() else {
            return Ok(());
        };
        let (resumed, held) = task.resume().await;
        self.held += held;
        resumed
    }

    /// How long the task was paused, up to its resume.
    pub(super) fn held(&self) -> Duration {
        self.held
    }
}
