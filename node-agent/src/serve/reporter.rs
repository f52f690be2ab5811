//! Job events to the API: delivered in order, each retried until the API
//! acknowledges it. Progress events still waiting are merged, so a slow API
//! sees the latest progress rather than a backlog.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dcs_protocol::{JobEvent, JobEventKind};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::api_client::{ApiClient, Delivery};

const MAX_BACKOFF: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Reporter {
    inner: Arc<Inner>,
}

struct Inner {
    queue: Mutex<VecDeque<JobEvent>>,
    /// Woken when an event is queued.
    queued: Notify,
    /// Woken when the queue becomes empty.
    drained: Notify,
}

impl Reporter {
    pub fn start(api: ApiClient, _shutdown: CancellationToken) -> Self {
        let reporter = Self {
            inner: Arc::new(Inner {
                queue: Mutex::new(VecDeque::new()),
                queued: Notify::new(),
                drained: Notify::new(),
            }),
        };
        // The sender outlives shutdown on purpose: `flush` bounds how long
        // the process waits for it.
        tokio::spawn(reporter.clone().send_loop(api));
        reporter
    }

    pub fn report(&self, event: JobEvent) {
        let mut queue = self.lock();
        // The front may be on its way; only later entries are merged.
        if queue.len() >= 2
            && let Some(last) = queue.back_mut()
            && last.snapshot_id == event.snapshot_id
            && matches!(last.kind, JobEventKind::Pushing { .. })
            && matches!(event.kind, JobEventKind::Pushing { .. })
        {
            *last = event;
            return;
        }
        queue.push_back(event);
        drop(queue);
        self.inner.queued.notify_one();
    }

    pub fn pending(&self) -> usize {
        self.lock().len()
    }

    /// Waits until every queued event is delivered, at most `timeout`.
    pub async fn flush(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.pending() > 0 {
            let drained = self.inner.drained.notified();
            if self.pending() == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, drained).await.is_err() {
                tracing::warn!(
                    pending = self.pending(),
                    "shutting down with undelivered job events"
                );
                break;
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<JobEvent>> {
        self.inner
            .queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn send_loop(self, api: ApiClient) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let front = self.lock().front().cloned();
            let Some(event) = front else {
                self.inner.drained.notify_waiters();
                self.inner.queued.notified().await;
                continue;
            };
            match api.send_event(&event).await {
                Delivery::Delivered => {
                    backoff = Duration::from_millis(100);
                    self.pop(&event);
                }
                Delivery::Refused(reason) => {
                    tracing::warn!(snapshot = %event.snapshot_id, seq = event.seq, %reason, "the API refused a job event; dropping it");
                    self.pop(&event);
                }
                Delivery::Retry(reason) => {
                    tracing::debug!(snapshot = %event.snapshot_id, seq = event.seq, %reason, "job event not delivered; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    fn pop(&self, sent: &JobEvent) {
        let mut queue = self.lock();
        if queue
            .front()
            .is_some_and(|f| f.snapshot_id == sent.snapshot_id && f.seq == sent.seq)
        {
            queue.pop_front();
        }
        if queue.is_empty() {
            drop(queue);
            self.inner.drained.notify_waiters();
        }
    }
}
