//! Job events to the API: one ordered queue per job, each with its own
//! sender, so a job whose events cannot be delivered (an API that refuses
//! it for a while, a slow database row) never holds up another job's.
//! Every event is retried until the API acknowledges or refuses it for a
//! reason that retrying cannot change; a 401 is not such a reason (the
//! token is signed again, with the API's clock, see `api_client`), so a
//! result is never lost to clock skew. Progress events still waiting are
//! merged, so a slow API sees the latest progress rather than a backlog.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dcs_protocol::{JobEvent, JobEventKind};
use dcs_support::trace_context;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use uuid::Uuid;

use super::api_client::{ApiClient, Delivery};

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub(super) struct Reporter {
    inner: Arc<Inner>,
}

struct Inner {
    api: ApiClient,
    /// Undelivered events by job, oldest first. A job is here exactly while
    /// its sender runs.
    queues: Mutex<HashMap<Uuid, VecDeque<Outgoing>>>,
    /// Woken when the last queue empties.
    drained: Notify,
}

/// An event waiting to be sent, and the trace its post continues (the
/// job's).
#[derive(Clone)]
struct Outgoing {
    event: JobEvent,
    traceparent: Option<String>,
}

impl Reporter {
    pub(super) fn start(api: ApiClient, _shutdown: CancellationToken) -> Self {
        // Senders outlive shutdown on purpose: `flush` bounds how long the
        // process waits for them.
        Self {
            inner: Arc::new(Inner {
                api,
                queues: Mutex::new(HashMap::new()),
                drained: Notify::new(),
            }),
        }
    }

    /// Queues a job's event; its post continues the trace of
    /// `traceparent` (the job's span).
    pub(super) fn report(&self, event: JobEvent, traceparent: Option<String>) {
        let mut queues = self.lock();
        let outgoing = Outgoing { event, traceparent };
        match queues.entry(outgoing.event.snapshot_id) {
            Entry::Occupied(mut queue) => {
                let queue = queue.get_mut();
                // The front may be on its way; only later entries are merged.
                if queue.len() >= 2
                    && let Some(last) = queue.back_mut()
                    && matches!(last.event.kind, JobEventKind::Pushing { .. })
                    && matches!(outgoing.event.kind, JobEventKind::Pushing { .. })
                {
                    *last = outgoing;
                } else {
                    queue.push_back(outgoing);
                }
            }
            Entry::Vacant(slot) => {
                let id = outgoing.event.snapshot_id;
                slot.insert(VecDeque::from([outgoing]));
                tokio::spawn(self.clone().send_loop(id));
            }
        }
    }

    /// Events not yet delivered, all jobs together.
    pub(super) fn pending(&self) -> usize {
        self.lock().values().map(VecDeque::len).sum()
    }

    /// Jobs with events not yet delivered: the API must not think them
    /// forgotten while their result is on its way.
    pub(super) fn pending_jobs(&self) -> Vec<Uuid> {
        self.lock().keys().copied().collect()
    }

    /// Waits until every queued event is delivered, at most `timeout`.
    pub(super) async fn flush(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let drained = self.inner.drained.notified();
            if self.pending() == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, drained).await.is_err() {
                tracing::warn!(
                    pending = self.pending(),
                    "shutting down with undelivered job events"
                );
                return;
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, VecDeque<Outgoing>>> {
        self.inner
            .queues
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Delivers job `id`'s events in order; ends when its queue is empty.
    async fn send_loop(self, id: Uuid) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let front = self.lock().get(&id).and_then(|q| q.front().cloned());
            let Some(Outgoing { event, traceparent }) = front else {
                return;
            };
            // One span per post, retries included, in the job's trace; the
            // API's span for the event is its child.
            let span = tracing::debug_span!("job_event.post", snapshot_id = %id, seq = event.seq);
            trace_context::set_remote_parent(&span, traceparent.as_deref());
            match self.inner.api.send_event(&event).instrument(span).await {
                Delivery::Delivered => backoff = FIRST_BACKOFF,
                Delivery::Refused(reason) => {
                    tracing::warn!(snapshot = %id, seq = event.seq, %reason, "the API refused a job event; dropping it");
                }
                Delivery::Retry(reason) => {
                    tracing::debug!(snapshot = %id, seq = event.seq, %reason, "job event not delivered; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            }
            if self.pop(id, event.seq) {
                return;
            }
        }
    }

    /// Removes the delivered front; `true` when the job's queue is gone.
    fn pop(&self, id: Uuid, seq: u64) -> bool {
        let mut queues = self.lock();
        let Some(queue) = queues.get_mut(&id) else {
            return true;
        };
        if queue.front().is_some_and(|f| f.event.seq == seq) {
            queue.pop_front();
        }
        if !queue.is_empty() {
            return false;
        }
        queues.remove(&id);
        if queues.is_empty() {
            self.inner.drained.notify_waiters();
        }
        true
    }
}
