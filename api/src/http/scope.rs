//! Tasks a request starts on the side (DataLoader batches run in spawned
//! tasks) end with the request: when its deadline passes, its client goes
//! away or its WebSocket closes, the guard aborts them, which drops their
//! database futures (a statement already sent ends at Postgres' statement
//! timeout, see `db::PoolSettings`). A plain `tokio::spawn` would let an
//! abandoned request's loads run to the end.

use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use tokio::task::AbortHandle;

#[derive(Clone, Default, Debug)]
pub struct TaskScope(Arc<Mutex<Vec<AbortHandle>>>);

impl TaskScope {
    /// Spawns a task that the scope's guard aborts.
    pub fn spawn(&self, task: BoxFuture<'static, ()>) {
        let handle = tokio::spawn(task).abort_handle();
        let mut tasks = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // Keep only running ones: a long WebSocket connection spawns many.
        tasks.retain(|t| !t.is_finished());
        tasks.push(handle);
    }

    /// Aborts every task of the scope when dropped.
    pub fn guard(&self) -> ScopeGuard {
        ScopeGuard(self.clone())
    }
}

#[derive(Debug)]
pub struct ScopeGuard(TaskScope);

impl Drop for ScopeGuard {
    fn drop(&mut self) {
        let tasks = std::mem::take(&mut *self.0.0.lock().unwrap_or_else(|e| e.into_inner()));
        for task in tasks {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn dropping_the_guard_aborts_the_tasks() {
        let scope = TaskScope::default();
        let guard = scope.guard();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        scope.spawn(Box::pin(async move {
            tokio::time::sleep(Duration::from_secs(60)).await;
            let _ = tx.send(()).await;
        }));
        drop(guard);
        // The task was aborted: its sender is dropped without sending.
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
        assert_eq!(got.expect("the sender is dropped at once"), None);
    }
}
