//! The remote session lock of non-sticky [`Concurrency::Lock`](super::super::Concurrency):
//! a `lock:` key on the session's node, taken with `add` and a TTL.
//!
//! Each holder stores a random token of its own in the lock, and releases the lock by
//! deleting it only while it still holds that token (read, then delete on the token's
//! CAS): a request never deletes another request's lock. While a request runs, its
//! lock is renewed every third of the lock's TTL (compare-and-swap on its token), so a
//! long request keeps it. One that lost it anyway (its node failed the renewals long
//! enough for the lock to expire, and another request took it) does not commit on it:
//! a commit whose lock was not renewed within half the TTL checks it first, and fails
//! with a conflict if it is not its own any more.
//!
//! A request dropped at any point (a client hanging up, a timeout layer), even in the
//! middle of taking the lock, releases it in the background if it may have taken it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tandem_core::Clock;
use tandem_core::NodeId;
use tandem_core::StoreKey;
use tandem_core::{
    AddOutcome, CasOutcome, Precondition, RemoteStore, StoreError, Ttl, WriteOutcome,
};

use crate::common::background::spawn_detached;

/// A remote session lock held (or maybe held) by a request. Released at commit, or in
/// the background when the request is dropped. While held, a task of its own renews it
/// every third of its TTL, so that a long request keeps it.
pub(crate) struct RemoteLock {
    held: Arc<Held>,
    renewer: Option<tokio::task::JoinHandle<()>>,
    /// An earlier `add` of this holder failed at the node: it may have landed all the
    /// same (a timeout while it queued, an answer lost on the way back), so a lock
    /// found taken may hold this holder's own token.
    uncertain: bool,
}

/// What the request and its renewer share of a lock.
struct Held {
    store: Arc<dyn RemoteStore>,
    node: NodeId,
    key: StoreKey,
    /// What this holder stored in the lock.
    token: [u8; 16],
    ttl: Duration,
    /// The manager's clock, which renewals are timed by.
    clock: Arc<dyn Clock>,
    /// When the lock was taken or last renewed.
    renewed: parking_lot::Mutex<Instant>,
    /// Whether the lock may be this holder's: set before each attempt to take it (its
    /// answer may be lost), cleared when it was released or another holder has it.
    maybe_held: AtomicBool,
}

impl Held {
    /// Whether the lock is still this holder's, renewing it if it is.
    async fn renew(&self) -> Result<bool, StoreError> {
        let current = match self.store.get(&self.node, &self.key).await? {
            Some(item) if item.value == self.token => item,
            _ => {
                self.maybe_held.store(false, Ordering::Release);
                return Ok(false);
            }
        };
        let renewed = self
            .store
            .write(
                &self.node,
                &self.key,
                &self.token,
                lock_ttl(self.ttl),
                Precondition::Cas(current.cas),
            )
            .await?;
        let ours = matches!(renewed, WriteOutcome::Stored(_));
        if ours {
            *self.renewed.lock() = self.clock.now();
        } else {
            self.maybe_held.store(false, Ordering::Release);
        }
        Ok(ours)
    }
}

impl RemoteLock {
    pub(crate) fn new(
        store: &Arc<dyn RemoteStore>,
        node: NodeId,
        key: StoreKey,
        ttl: Duration,
        clock: &Arc<dyn Clock>,
    ) -> RemoteLock {
        RemoteLock {
            held: Arc::new(Held {
                store: Arc::clone(store),
                node,
                key,
                token: random_token(),
                ttl,
                renewed: parking_lot::Mutex::new(clock.now()),
                clock: Arc::clone(clock),
                maybe_held: AtomicBool::new(false),
            }),
            renewer: None,
            uncertain: false,
        }
    }

    /// The lock was taken: its renewer starts.
    fn taken(&mut self) {
        *self.held.renewed.lock() = self.held.clock.now();
        let held = Arc::clone(&self.held);
        self.renewer = Some(tokio::spawn(async move {
            let period = held.ttl / 3;
            loop {
                tokio::time::sleep(period).await;
                match held.renew().await {
                    Ok(true) => {}
                    Ok(false) => return,
                    // The node failed: tried again next period; the commit checks.
                    Err(error) => tracing::debug!(%error, "session lock not renewed"),
                }
            }
        }));
    }

    /// One attempt to take the lock with `add`. Stored: the lock is this holder's and
    /// its renewer runs. Exists: another holder has it. A node failure leaves it maybe
    /// taken (the answer may be lost), so that a drop releases it, and the next
    /// attempt that finds the lock taken checks whether it is this holder's own.
    pub(crate) async fn try_take(&mut self) -> Result<AddOutcome, StoreError> {
        // A request dropped while the add is on its way may have taken the lock:
        // its drop then releases it.
        self.held.maybe_held.store(true, Ordering::Release);
        let mut added = add_lock(&self.held).await;
        if self.uncertain && matches!(added, Ok(AddOutcome::Exists)) {
            // Renewing succeeds only on this holder's token; it also gives the lock
            // its whole TTL again, which the earlier add started counting down.
            added = match self.held.renew().await {
                Ok(true) => Ok(AddOutcome::Stored),
                Ok(false) => Ok(AddOutcome::Exists),
                Err(error) => Err(error),
            };
        }
        match &added {
            Ok(AddOutcome::Stored) => {
                self.uncertain = false;
                self.taken();
            }
            // Still uncertain: an add that is slow to land may yet take it.
            Ok(AddOutcome::Exists) => self.held.maybe_held.store(false, Ordering::Release),
            Err(error) if error.is_node_failure() => self.uncertain = true,
            Err(_) => self.held.maybe_held.store(false, Ordering::Release),
        }
        added
    }

    /// Releases the lock in the background, if it is still this holder's.
    pub(crate) fn release_in_background(mut self) {
        self.release();
    }

    /// Releases the lock after `delay`, in the background, if it is still this
    /// holder's then; renewed meanwhile.
    pub(crate) fn release_after(mut self, delay: Duration) {
        let renewer = self.renewer.take();
        if !self.held.maybe_held.swap(false, Ordering::AcqRel) {
            if let Some(renewer) = renewer {
                renewer.abort();
            }
            return;
        }
        let held = Arc::clone(&self.held);
        spawn_detached(async move {
            tokio::time::sleep(delay).await;
            if let Some(renewer) = renewer {
                renewer.abort();
            }
            if let Err(error) = release_own(&*held.store, &held.node, &held.key, &held.token).await
            {
                tracing::debug!(%error, "session lock not released; it expires by its TTL");
            }
        });
    }

    /// Releases the lock and waits for the release, if it is still this holder's (a
    /// release that fails leaves the lock to expire by its TTL).
    pub(crate) async fn release_now(mut self) {
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
        }
        if !self.held.maybe_held.load(Ordering::Acquire) {
            return;
        }
        let held = Arc::clone(&self.held);
        match release_own(&*held.store, &held.node, &held.key, &held.token).await {
            Ok(()) => held.maybe_held.store(false, Ordering::Release),
            // Dropped now, it tries again in the background.
            Err(error) => tracing::debug!(%error, "session lock not released; tried again"),
        }
    }

    /// Whether the lock may still be this holder's: taken, and neither released nor
    /// found taken by another holder since.
    pub(crate) fn may_be_held(&self) -> bool {
        self.held.maybe_held.load(Ordering::Acquire)
    }

    fn release(&mut self) {
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
        }
        if !self.held.maybe_held.swap(false, Ordering::AcqRel) {
            return;
        }
        let held = Arc::clone(&self.held);
        spawn_detached(async move {
            if let Err(error) = release_own(&*held.store, &held.node, &held.key, &held.token).await
            {
                tracing::debug!(%error, "session lock not released; it expires by its TTL");
            }
        });
    }

    /// Before a commit: whether the lock is still this holder's. One renewed less than
    /// half its TTL ago is; an older one (its renewals failed) is read, and renewed if
    /// it is still this holder's.
    pub(crate) async fn still_held(&mut self) -> Result<bool, StoreError> {
        if !self.held.maybe_held.load(Ordering::Acquire) {
            return Ok(false);
        }
        if self.held.clock.since(*self.held.renewed.lock()) < self.held.ttl / 2 {
            return Ok(true);
        }
        self.held.renew().await
    }
}

impl Drop for RemoteLock {
    fn drop(&mut self) {
        self.release();
    }
}

/// Deletes the lock under `key` if it holds `token`.
async fn release_own(
    store: &dyn RemoteStore,
    node: &NodeId,
    key: &StoreKey,
    token: &[u8],
) -> Result<(), StoreError> {
    if let Some(item) = store.get(node, key).await?
        && item.value == token
    {
        let outcome = store.delete_if(node, key, item.cas).await?;
        if outcome != CasOutcome::Stored {
            tracing::debug!(?outcome, "session lock changed hands before its release");
        }
    }
    Ok(())
}

/// Sends the `add` that takes the lock from a task of its own, and waits for its
/// answer. A request dropped while its add is on its way releases the lock in the
/// background, but that release can reach the node before the add does: it finds no
/// lock, and the add, landing after it, would keep the session locked for the whole
/// TTL. The task sees the add's answer whatever happens to the request, and releases
/// a lock it may have taken for a request that is gone.
async fn add_lock(held: &Arc<Held>) -> Result<AddOutcome, StoreError> {
    let (answer, answered) = tokio::sync::oneshot::channel();
    let task_held = Arc::clone(held);
    tokio::spawn(async move {
        let held = task_held;
        let added = held
            .store
            .add(&held.node, &held.key, &held.token, lock_ttl(held.ttl))
            .await;
        // The request is gone: unless the lock was someone else's, release it (the
        // request's own release may have come too early; a second one finds nothing).
        if let Err(added) = answer.send(added)
            && !matches!(added, Ok(AddOutcome::Exists))
            && let Err(error) = release_own(&*held.store, &held.node, &held.key, &held.token).await
        {
            tracing::debug!(%error, "session lock not released; it expires by its TTL");
        }
    });
    answered.await.unwrap_or_else(|_| {
        // Only when the runtime shuts down: answered as a node failure, so that the
        // lock counts as maybe taken.
        Err(StoreError::Unreachable {
            node: held.node.clone(),
            message: "the lock request's task ended without an answer".into(),
        })
    })
}

/// The TTL a lock is written with: the lock TTL (a store with a coarse expiry clock
/// pads it, so that it does not end before its first renewal).
fn lock_ttl(ttl: Duration) -> Ttl {
    Ttl::After(ttl)
}

/// A token no other holder has: 16 random bytes as hex, so that the lock's value is
/// plain text.
fn random_token() -> [u8; 16] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes: [u8; 8] = rand::random();
    let mut token = [0; 16];
    for (index, byte) in bytes.iter().enumerate() {
        token[2 * index] = HEX[usize::from(byte >> 4)];
        token[2 * index + 1] = HEX[usize::from(byte & 0xf)];
    }
    token
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_hex_and_differ() {
        let (first, second) = (random_token(), random_token());
        assert_ne!(first, second);
        assert!(first.iter().all(u8::is_ascii_hexdigit));
    }
}
