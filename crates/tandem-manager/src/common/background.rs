//! Background work both modes start: counted while it runs, so that shutdown waits
//! for it and `pending_backups` reports it.

use std::sync::atomic::{AtomicUsize, Ordering};

/// How many remote jobs run in the background (queued backups, writes of ends, backup
/// copies).
#[derive(Default)]
pub(crate) struct InFlight(AtomicUsize);

impl InFlight {
    /// `count` jobs started.
    pub(crate) fn begin(&self, count: usize) {
        self.0.fetch_add(count, Ordering::AcqRel);
    }

    /// `count` jobs ended.
    pub(crate) fn end(&self, count: usize) {
        self.0.fetch_sub(count, Ordering::AcqRel);
    }

    /// Jobs queued or running.
    pub(crate) fn count(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

/// Runs `task` on the current tokio runtime, if there is one (a drop outside a runtime
/// leaves the lock to its TTL).
pub(crate) fn spawn_detached(task: impl std::future::Future<Output = ()> + Send + 'static) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(task);
    }
}
