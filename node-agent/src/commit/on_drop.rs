//! Clean-up that must happen however a commit ends, also when its future
//! is dropped half-way (a cancelled job): `Drop` cannot await, so the
//! clean-up is spawned on the runtime.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Spawns its clean-up when dropped while armed.
pub(super) struct SpawnOnDrop {
    cleanup: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl SpawnOnDrop {
    /// Armed with `cleanup`, which does not run until it is spawned or
    /// awaited.
    pub(super) fn new(cleanup: impl Future<Output = ()> + Send + 'static) -> Self {
        Self {
            cleanup: Some(Box::pin(cleanup)),
        }
    }

    /// The clean-up is done, or must not happen: dropping does nothing.
    pub(super) fn disarm(&mut self) {
        self.cleanup = None;
    }

    /// Runs the clean-up now, once: a drop during the call does not start
    /// it again.
    pub(super) async fn run_now(mut self) {
        if let Some(cleanup) = self.cleanup.take() {
            cleanup.await;
        }
    }
}

impl Drop for SpawnOnDrop {
    fn drop(&mut self) {
        // Without a runtime (the process is ending) there is nobody to run
        // it; leases expire by themselves.
        if let Some(cleanup) = self.cleanup.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(cleanup);
        }
    }
}

/// Tells work on other threads that the future it works for is gone: a
/// cancelled job's commit future is dropped, and the layer build on its
/// blocking thread must not go on reading the desktop into the spool.
pub(super) struct StopOnDrop(Arc<AtomicBool>);

impl StopOnDrop {
    pub(super) fn new() -> Self {
        Self(Arc::new(AtomicBool::new(false)))
    }

    /// The flag, set once this is dropped.
    pub(super) fn flag(&self) -> Arc<AtomicBool> {
        self.0.clone()
    }
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    #[test]
    fn the_stop_flag_is_set_when_its_guard_goes() {
        let guard = StopOnDrop::new();
        let flag = guard.flag();
        assert!(!flag.load(Ordering::Relaxed));
        drop(guard);
        assert!(flag.load(Ordering::Relaxed));
    }

    fn counting(count: &Arc<AtomicUsize>) -> SpawnOnDrop {
        let count = count.clone();
        SpawnOnDrop::new(async move {
            count.fetch_add(1, Ordering::SeqCst);
        })
    }

    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn runs_once_whether_dropped_or_run_now_and_never_when_disarmed() {
        let count = Arc::new(AtomicUsize::new(0));
        drop(counting(&count));
        settle().await;
        assert_eq!(count.load(Ordering::SeqCst), 1, "dropped while armed");

        counting(&count).run_now().await;
        settle().await;
        assert_eq!(
            count.load(Ordering::SeqCst),
            2,
            "run now, not again on drop"
        );

        let mut disarmed = counting(&count);
        disarmed.disarm();
        drop(disarmed);
        settle().await;
        assert_eq!(count.load(Ordering::SeqCst), 2, "disarmed");
    }
}
