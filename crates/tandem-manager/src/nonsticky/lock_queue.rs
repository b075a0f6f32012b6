//! This process's queue for a non-sticky session's lock under
//! [`Concurrency::Lock`](crate::Concurrency::Lock).
//!
//! The requests of one session in flight here wait for it in order (a FIFO async
//! mutex, no polling). The remote `lock:` key excludes the other servers; while
//! requests of the session queue here, this process keeps it and hands it from one
//! request to the next, instead of releasing it and taking it again for each request
//! (a release races the next `add`, which then polls with backoff). It is released
//! when the queue empties, or after [`MAX_HAND_OVERS`] requests or [`MAX_HOLD`], so
//! that the other servers' requests get their turn.
//!
//! Cancellation: a request dropped at any point leaves nothing taken. A waiter that
//! goes away (dropped, or timed out) and was the last one releases a lock handed over
//! for it; a holder dropped before its commit hands the lock to the next waiter or
//! releases it; a lock still handed over when the session's last request here ends
//! is released with the queue.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tandem_core::Clock;
use tokio::sync::OwnedMutexGuard;

use super::remote_lock::RemoteLock;

/// How long one remote lock serves this process's queue at most before it is
/// released, so that other servers' requests for the session are not starved.
pub(crate) const MAX_HOLD: Duration = Duration::from_millis(200);

/// How long this process's queue leaves the remote lock free after releasing it at
/// [`MAX_HOLD`]: longer than the longest pause between another server's attempts to
/// take it ([`MAX_LOCK_BACKOFF`](super::locking::MAX_LOCK_BACKOFF)), so that one of
/// them gets in.
pub(crate) const YIELD: Duration = Duration::from_millis(10);

/// One session's lock queue in this process (it lives in the session's transit copy).
#[derive(Default)]
pub(crate) struct LockQueue {
    /// Held by the request whose turn it is; FIFO.
    local: Arc<tokio::sync::Mutex<()>>,
    /// Requests waiting for `local`.
    waiting: AtomicUsize,
    /// The remote lock left by the last holder for the next one.
    handed: parking_lot::Mutex<Option<Taken>>,
    /// Until when the queue leaves the remote lock to the other servers, after it
    /// released the lock at [`MAX_HOLD`].
    yielding: parking_lot::Mutex<Option<Instant>>,
}

/// A remote lock with what it served so far.
pub(crate) struct Taken {
    pub(crate) lock: RemoteLock,
    /// When this process took it.
    pub(crate) at: Instant,
}

impl LockQueue {
    /// This request's turn if nobody holds it.
    pub(crate) fn try_turn(&self) -> Option<OwnedMutexGuard<()>> {
        Arc::clone(&self.local).try_lock_owned().ok()
    }

    /// Waits for this request's turn, at most `timeout`.
    pub(crate) async fn turn(
        self: &Arc<Self>,
        timeout: Duration,
    ) -> Result<OwnedMutexGuard<()>, Waited> {
        let mut turn = Turn {
            acquire: Box::pin(tokio::time::timeout(
                timeout,
                Arc::clone(&self.local).lock_owned(),
            )),
            _waiting: Waiting::new(self),
        };
        match (&mut turn.acquire).await {
            Ok(guard) => Ok(guard),
            Err(_) => Err(Waited),
        }
    }

    /// The remote lock handed over by the previous holder (the caller holds the turn).
    pub(crate) fn take_handed(&self) -> Option<Taken> {
        self.handed.lock().take()
    }

    /// Until when the queue leaves the remote lock to the other servers, if it does.
    pub(crate) fn yielding_until(&self) -> Option<Instant> {
        self.yielding.lock().take()
    }

    /// With nobody waiting any more, a lock handed over is released (unless a request
    /// holds the turn: it uses or releases it).
    fn release_if_idle(&self) {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            return;
        }
        if let Ok(_turn) = self.local.try_lock() {
            let handed = self.handed.lock().take();
            if let Some(taken) = handed {
                taken.lock.release_in_background();
            }
        }
    }
}

/// The turn's acquisition did not end in time.
pub(crate) struct Waited;

/// A request waiting for its turn. Fields drop in order: the acquisition first (a
/// turn granted to it but not yet taken goes on to the next waiter or back to the
/// queue), then the count of waiters, which releases a lock handed over for nobody.
struct Turn<F> {
    acquire: Pin<Box<F>>,
    _waiting: Waiting,
}

/// Counts a waiting request for as long as it lives.
struct Waiting(Arc<LockQueue>);

impl Waiting {
    fn new(queue: &Arc<LockQueue>) -> Waiting {
        queue.waiting.fetch_add(1, Ordering::SeqCst);
        Waiting(Arc::clone(queue))
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
        self.0.release_if_idle();
    }
}

/// A request's hold on its session's lock: its turn in this process's queue (absent
/// when it proceeds unlocked after a lock timeout) and the remote lock (absent when
/// not acquired in time). Dropped without [`finish`](Self::finish), it hands the
/// remote lock to the next waiter or releases it.
pub(crate) struct SessionLock {
    pub(crate) queue: Arc<LockQueue>,
    /// The request is committing a change: dropped now, its writes may be on their
    /// way, and they land after the drop.
    pub(crate) committing: bool,
    pub(crate) turn: Option<OwnedMutexGuard<()>>,
    pub(crate) remote: Option<Taken>,
    pub(crate) clock: Arc<dyn Clock>,
}

impl SessionLock {
    /// The remote lock, if this request has it.
    pub(crate) fn remote(&mut self) -> Option<&mut RemoteLock> {
        self.remote.as_mut().map(|taken| &mut taken.lock)
    }

    /// At the end of the request: the remote lock goes to the next request queued
    /// here, or is released. A lock that served its time is released before the turn
    /// passes on, and the queue leaves it to the other servers for a while.
    pub(crate) async fn finish(mut self) {
        if let Some(taken) = self.remote.take() {
            let served = self.clock.since(taken.at) >= MAX_HOLD;
            match self.pass(taken) {
                None => {}
                Some(taken)
                    if served
                        && self.turn.is_some()
                        && self.queue.waiting.load(Ordering::SeqCst) > 0 =>
                {
                    taken.lock.release_now().await;
                    *self.queue.yielding.lock() = Some(self.clock.now() + YIELD);
                }
                Some(taken) => taken.lock.release_in_background(),
            }
        }
        drop(self.turn.take());
    }

    /// Hands `taken` over to the next request queued here if there is one and the
    /// lock may serve it; returns it otherwise.
    fn pass(&mut self, taken: Taken) -> Option<Taken> {
        let usable = self.turn.is_some()
            && self.clock.since(taken.at) < MAX_HOLD
            && taken.lock.may_be_held();
        if !usable || self.queue.waiting.load(Ordering::SeqCst) == 0 {
            return Some(taken);
        }
        *self.queue.handed.lock() = Some(taken);
        drop(self.turn.take());
        // The waiters may all have gone since: then nobody takes it.
        self.queue.release_if_idle();
        None
    }
}

impl Drop for SessionLock {
    fn drop(&mut self) {
        let Some(taken) = self.remote.take() else {
            return;
        };
        if self.committing {
            // A commit dropped with its writes maybe on the wire: the lock keeps the
            // session's next requests (here and elsewhere) out until they have
            // landed, so that they do not land in the middle of the next change.
            taken.lock.release_after(super::repair::SETTLE);
        } else if let Some(taken) = self.pass(taken) {
            taken.lock.release_in_background();
        }
    }
}
