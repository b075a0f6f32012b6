//! The remote writes that end a session id: tombstones and deletion markers, written
//! when the id ends and retried in the background until they land.
//!
//! A logout ([`invalidate`](super::RequestSession::invalidate)), an id change
//! ([`cycle_id`](super::RequestSession::cycle_id)), a move off a down node and an
//! expiry each end a session id. Deleting its copy is not enough to end it:
//!
//! - a missing copy reads like a node that restarted empty, which non-sticky mode
//!   answers by restoring the session from its backup copy;
//! - a late or stale writer (a backup write still in flight, a request that loaded the
//!   session before it ended, another server's old copy) would simply write it again.
//!
//! So the copy is replaced by a *tombstone*: a small value that says the id ended (and
//! why), which every read answers as "no such session", and which makes every
//! conditional write of an older state fail (its CAS token changed, and `add` finds the
//! key taken). In non-sticky mode the backup copy's node also gets a *deletion marker*
//! under the `gone:` key, which no backup write ever touches, and which a read checks
//! before it restores or moves a session from its backup copy.
//!
//! A tombstone lives as long as any copy it guards against could (the session's copy
//! TTL), plus [`LATE_WRITE_MARGIN`] for writes that were already on their way. An end
//! whose node is down or hung is remembered and written again every retry interval
//! until it lands, or until the copy it guards against would have expired anyway.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use tandem_core::NodeId;
use tandem_core::StoreKey;
use tandem_core::{CasOutcome, Precondition, StoreError, Ttl, WriteOutcome};

use super::Common;
use super::stats::Counters;

/// Why an id ended, as its tombstone records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EndReason {
    /// Invalidated (a logout) or expired: whoever presents the id is told to drop
    /// their cookie.
    Ended,
    /// Replaced by a new id (`cycle_id`). Only the request that cycled learns the new
    /// id; a request still carrying the old one gets a new, empty session but no
    /// cookie change, so that a response racing the login's does not delete the new
    /// cookie in the browser.
    Cycled,
    /// The copy left on a node that was down when the session moved to another node
    /// (its client got the new id then). Answered like `Ended`; the one write that may
    /// replace it is the session itself moving back to that node.
    Moved,
}

/// The bytes of a tombstone, without its reason byte. The first byte is one no
/// envelope and no sealed blob starts with (both start with `TNDM`).
const TOMBSTONE_PREFIX: &[u8] = b"\xfftandem:ended:";

/// The tombstone value for `reason`.
pub(crate) fn tombstone(reason: EndReason) -> Vec<u8> {
    let mut bytes = TOMBSTONE_PREFIX.to_vec();
    bytes.push(match reason {
        EndReason::Ended => b'e',
        EndReason::Cycled => b'c',
        EndReason::Moved => b'm',
    });
    bytes
}

/// The reason recorded in `stored`, if it is a tombstone.
pub(crate) fn tombstone_reason(stored: &[u8]) -> Option<EndReason> {
    match stored.strip_prefix(TOMBSTONE_PREFIX)? {
        b"c" => Some(EndReason::Cycled),
        b"m" => Some(EndReason::Moved),
        // A tombstone of a newer build with a reason this one does not know ended
        // the id all the same.
        _ => Some(EndReason::Ended),
    }
}

/// How much longer than a session's copies its tombstone lives: writes already on
/// their way when the id ended land within an operation timeout, far less than this.
pub(crate) const LATE_WRITE_MARGIN: Duration = Duration::from_secs(60);

/// The TTL of the tombstones of a session whose copies live `copy_ttl`.
pub(crate) fn tombstone_ttl(copy_ttl: Ttl) -> Ttl {
    match copy_ttl {
        Ttl::Never => Ttl::Never,
        Ttl::After(ttl) => Ttl::After(ttl.saturating_add(LATE_WRITE_MARGIN)),
    }
}

/// At most this many ends wait for their node; beyond it an end that failed is only
/// counted (`remote_ends_abandoned`) and logged.
pub(crate) const MAX_PENDING: usize = 100_000;

/// At most this many ends are retried per sweep, one after another.
const PER_SWEEP: usize = 1_000;

/// What an end writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EndAction {
    /// A tombstone with this reason.
    Tombstone(EndReason),
    /// A plain delete (a copy that only wastes memory once the id's tombstone and
    /// deletion marker are written).
    Delete,
    /// The copy's expiry set back to this TTL: a session with an interval shorter
    /// than the default, whose read slid it to the default, must not outlive its own.
    ShortenTtl(Ttl),
}

/// One remote write that ends an id.
#[derive(Debug, Clone)]
pub(crate) struct End {
    pub(crate) node: NodeId,
    pub(crate) key: StoreKey,
    pub(crate) action: EndAction,
    /// The tombstone's TTL; for a delete or a TTL to shorten, how long the copy could
    /// live at most (the end is dropped after that).
    pub(crate) ttl: Ttl,
    /// The condition of a tombstone: `Cas` when only this server's own copy may be
    /// ended (an expiry), `None` otherwise.
    pub(crate) condition: Precondition,
}

/// An end waiting for its node.
struct PendingEnd {
    end: End,
    /// When the copy it guards against would have expired anyway: it is dropped then.
    give_up: Option<Instant>,
}

/// The ends waiting for their node, one per key.
#[derive(Default)]
pub(crate) struct Ends {
    pending: Mutex<HashMap<(NodeId, StoreKey), PendingEnd>>,
    /// Ends taken out of `pending` by a retry, until they are done.
    writing: Arc<Writing>,
    /// Whether a sweep's retries are still running: the next sweep waits for them.
    running: AtomicBool,
}

/// The keys of the ends a retry took out of `pending` (so that [`Ends::cancel`] no
/// longer finds them), with whether their write has started, until they are done.
#[derive(Default)]
struct Writing {
    keys: Mutex<HashMap<(NodeId, StoreKey), bool>>,
    /// `keys.len()`, read without the lock by every new copy's write.
    count: AtomicUsize,
    /// Notified whenever one of them is done.
    done: tokio::sync::Notify,
}

impl Writing {
    fn remove(&self, keys: &mut HashMap<(NodeId, StoreKey), bool>, slot: &(NodeId, StoreKey)) {
        keys.remove(slot);
        self.count.store(keys.len(), Ordering::Release);
    }
}

/// One end a retry took ([`Writing`]), until it is dropped: after the write, after
/// the end was remembered again if it failed, or with the task that wrote it.
pub(crate) struct WritingEnd {
    writing: Arc<Writing>,
    slot: (NodeId, StoreKey),
}

impl WritingEnd {
    /// Marks the write as started; `false` if the end was [withdrawn](Ends::withdraw)
    /// while it waited for its turn, and must not be written.
    fn start(&self) -> bool {
        match self.writing.keys.lock().get_mut(&self.slot) {
            Some(started) => {
                *started = true;
                true
            }
            None => false,
        }
    }
}

impl Drop for WritingEnd {
    fn drop(&mut self) {
        self.writing
            .remove(&mut self.writing.keys.lock(), &self.slot);
        self.writing.done.notify_waiters();
    }
}

impl Ends {
    /// How many ends wait for their node, or are being written by a retry: zero once
    /// every end remembered so far is done.
    pub(crate) fn pending(&self) -> usize {
        self.pending.lock().len() + self.writing.count.load(Ordering::Acquire)
    }

    /// The reason of a tombstone waiting to be written over `key` on `node`: its id
    /// ended, although the remote copy does not say so yet.
    pub(crate) fn pending_tombstone(&self, node: &NodeId, key: &StoreKey) -> Option<EndReason> {
        match self
            .pending
            .lock()
            .get(&(node.clone(), key.clone()))?
            .end
            .action
        {
            EndAction::Tombstone(reason) => Some(reason),
            EndAction::Delete | EndAction::ShortenTtl(_) => None,
        }
    }

    /// Forgets an end waiting for `key` on `node`: a live session is written there
    /// (a session moving back to a node it left, whose old copy awaits a tombstone).
    /// Returns whether one was waiting.
    pub(crate) fn cancel(&self, node: &NodeId, key: &StoreKey) -> bool {
        self.pending
            .lock()
            .remove(&(node.clone(), key.clone()))
            .is_some()
    }

    /// Whether a retry took an end for `key` on `node` and is not done with it.
    pub(crate) fn is_writing(&self, node: &NodeId, key: &StoreKey) -> bool {
        self.writing.count.load(Ordering::Acquire) != 0
            && self
                .writing
                .keys
                .lock()
                .contains_key(&(node.clone(), key.clone()))
    }

    /// For a new copy about to be written under `key` on `node`: takes back an end
    /// of that key, waiting or taken by a retry whose write has not started, as
    /// [`cancel`](Self::cancel) does, or else waits until a write of one that has
    /// started is done. Returns whether one was taken back.
    ///
    /// The only new copy that can meet an end of its own key is a session moving
    /// back to a node it left (the tombstone `Moved` of its move away was remembered
    /// while that node was down). The move back cancels that end, but a retry may
    /// have taken it out of `pending` already: its tombstone, written without a
    /// condition, could then land after the session's new copy and replace it, and
    /// the session's next backup, refused, would drop the session as ended elsewhere
    /// (with changes whose synchronous backups had reported them written). Once that
    /// write is done, the tombstone is there for the new copy to replace, or, if it
    /// failed, the end is remembered again and taken back here.
    pub(crate) async fn withdraw(&self, node: &NodeId, key: &StoreKey) -> bool {
        if self.writing.count.load(Ordering::Acquire) != 0 {
            let slot = (node.clone(), key.clone());
            loop {
                let done = self.writing.done.notified();
                let mut done = std::pin::pin!(done);
                // Registered before the check, so that a write done in between
                // wakes it.
                done.as_mut().enable();
                {
                    let mut keys = self.writing.keys.lock();
                    match keys.get(&slot) {
                        None => break,
                        Some(false) => {
                            self.writing.remove(&mut keys, &slot);
                            return true;
                        }
                        Some(true) => {}
                    }
                }
                done.await;
            }
        }
        !self.pending.lock().is_empty() && self.cancel(node, key)
    }
}

/// Clears [`Ends::running`] when a sweep's retries end, however they end.
struct Running<'a>(&'a AtomicBool);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl Common {
    /// Writes `ends` in a task of its own and waits for it: a request dropped
    /// meanwhile (a client hanging up) does not stop an end half way. Those that fail
    /// are remembered and retried by the sweep. Then, in the same task, runs `then`
    /// (sticky mode announces the id in the peer feed, so that other servers drop
    /// their copies of it: after the tombstone, so that none of them reloads the copy
    /// it replaces, and in the task, so that a request dropped while it waits for the
    /// ends cannot skip it). Returns whether all ends landed.
    pub(crate) async fn end_ids(
        self: &Arc<Self>,
        ends: Vec<End>,
        then: Option<impl FnOnce() + Send + 'static>,
    ) -> bool {
        if ends.is_empty() && then.is_none() {
            return true;
        }
        let common = Arc::clone(self);
        self.in_flight.begin(1);
        let task = tokio::spawn(async move {
            let mut all = true;
            for end in ends {
                if !common.write_end(&end).await {
                    all = false;
                    common.remember_end(end);
                }
            }
            if let Some(then) = then {
                then();
            }
            common.in_flight.end(1);
            all
        });
        task.await.unwrap_or(false)
    }

    /// Remembers ends for nodes known to be down, without trying them now.
    pub(crate) fn remember_ends(&self, ends: impl IntoIterator<Item = End>) {
        for end in ends {
            self.remember_end(end);
        }
    }

    fn remember_end(&self, end: End) {
        let give_up = match end.ttl {
            Ttl::Never => None,
            Ttl::After(ttl) => self.now().checked_add(ttl),
        };
        let mut pending = self.ends.pending.lock();
        let slot = (end.node.clone(), end.key.clone());
        if pending.len() >= MAX_PENDING && !pending.contains_key(&slot) {
            drop(pending);
            Counters::add(&self.counters.remote_ends_abandoned);
            tracing::warn!(node = %end.node, "too many session ends wait for their node; one is dropped and its copy expires by its TTL");
            return;
        }
        pending.insert(slot, PendingEnd { end, give_up });
    }

    /// Writes one end; `false` if it must be tried again (its node failed).
    pub(crate) async fn write_end(&self, end: &End) -> bool {
        if self.aborted.load(Ordering::Acquire) {
            return false;
        }
        let result = match end.action {
            EndAction::Tombstone(reason) => self
                .store
                .write(
                    &end.node,
                    &end.key,
                    &tombstone(reason),
                    end.ttl,
                    end.condition,
                )
                .await
                .map(|outcome| {
                    // Conflict or NotFound under a condition: the copy is no longer
                    // this server's to end (another server owns it, or it is gone).
                    if matches!(outcome, WriteOutcome::Stored(_)) {
                        Counters::add(&self.counters.tombstones_written);
                    }
                }),
            EndAction::ShortenTtl(ttl) => {
                self.store.touch(&end.node, &end.key, ttl).await.map(|_| ())
            }
            EndAction::Delete => match end.condition {
                Precondition::Cas(token) => self
                    .store
                    .delete_if(&end.node, &end.key, token)
                    .await
                    .map(|outcome| {
                        if outcome == CasOutcome::Stored {
                            Counters::add(&self.counters.remote_deletes);
                        }
                    }),
                _ => self.store.delete(&end.node, &end.key).await.map(|existed| {
                    if existed {
                        Counters::add(&self.counters.remote_deletes);
                    }
                }),
            },
        };
        match result {
            Ok(()) => true,
            // A refusal of this one write (say, a value too large) would be refused
            // again: not retried.
            Err(error) if !error.is_node_failure() => {
                tracing::warn!(node = %end.node, %error, "a session end was refused");
                true
            }
            Err(error) => {
                tracing::debug!(node = %end.node, %error, "a session end failed; retried when the node answers");
                false
            }
        }
    }

    /// Called by the sweep: retries the remembered ends whose nodes answer, unless an
    /// earlier sweep's retries still run; drops those whose copy would have expired.
    pub(crate) fn retry_ends(self: &Arc<Self>) {
        if self.ends.pending.lock().is_empty()
            || self.aborted.load(Ordering::Acquire)
            || self.ends.running.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let due = self.due_ends(PER_SWEEP);
        if due.is_empty() {
            self.ends.running.store(false, Ordering::Release);
            return;
        }
        let inner = Arc::clone(self);
        tokio::spawn(async move {
            let _running = Running(&inner.ends.running);
            // Each `writing` is dropped after its end was written or remembered
            // again.
            for (end, writing) in due {
                if inner.aborted.load(Ordering::Acquire) {
                    break;
                }
                if !writing.start() {
                    continue;
                }
                if inner.write_end(&end).await {
                    Counters::add(&inner.counters.remote_ends_retried);
                } else {
                    inner.remember_end(end);
                }
            }
        });
    }

    /// Takes up to `limit` ends whose node is available, each known as taken until its
    /// [`WritingEnd`] is dropped, and drops those whose copy has expired by now.
    fn due_ends(&self, limit: usize) -> Vec<(End, WritingEnd)> {
        let now = self.now();
        let mut pending = self.ends.pending.lock();
        pending.retain(|_, pending| pending.give_up.is_none_or(|at| now < at));
        // Known as taken before `pending` is unlocked: `withdraw` finds each end in
        // one or the other.
        let mut keys = self.ends.writing.keys.lock();
        let due: Vec<(End, WritingEnd)> = pending
            .extract_if(|(node, _), _| self.store.is_available(node))
            .take(limit)
            .map(|(slot, pending)| {
                keys.insert(slot.clone(), false);
                let writing = WritingEnd {
                    writing: Arc::clone(&self.ends.writing),
                    slot,
                };
                (pending.end, writing)
            })
            .collect();
        self.ends.writing.count.store(keys.len(), Ordering::Release);
        due
    }

    /// At shutdown: writes every remembered end whose node answers, within `deadline`.
    /// Returns how many are left unwritten.
    pub(crate) async fn flush_ends(&self, deadline: Duration) -> usize {
        let started = self.now();
        for (end, writing) in self.due_ends(usize::MAX) {
            if !writing.start() {
                continue;
            }
            let remaining = deadline.saturating_sub(self.since(started));
            let written = !remaining.is_zero()
                && matches!(
                    tokio::time::timeout(remaining, self.write_end(&end)).await,
                    Ok(true)
                );
            if !written {
                self.remember_end(end);
            }
        }
        self.ends.pending.lock().len()
    }
}

/// Whether `error` leaves open whether a write landed (its answer was lost).
pub(crate) fn ambiguous(error: &StoreError) -> bool {
    !matches!(
        error,
        StoreError::NodeDown { .. } | StoreError::UnknownNode { .. } | StoreError::TooLarge { .. }
    )
}
