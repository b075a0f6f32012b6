//! The transit copy of a non-sticky session: what this process's requests in flight
//! share of it, for as long as any of them runs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicU64};
use std::sync::{Arc, Weak};
use std::time::Instant;

use parking_lot::Mutex;

use tandem_core::{CasToken, Session};

use super::lock_queue::LockQueue;
use crate::common::local_key::LocalKey;

/// The transit copies of the sessions with requests in flight, by local key. Entries
/// are weak: a transit copy lives exactly as long as the requests holding it.
/// Hashed with seeded foldhash, not SipHash (as the sticky dirty map): every request
/// inserts and removes its session here, and the keys are ids the server issued or
/// parsed strictly.
pub(crate) type TransitMap<C> =
    Mutex<HashMap<LocalKey, Weak<Transit<C>>, foldhash::fast::RandomState>>;

/// One session's transit copy, shared by its in-flight requests in this process.
pub(crate) struct Transit<C> {
    pub(crate) key: LocalKey,
    /// `None` until a commit needs it (it then starts from that request's read). An
    /// async lock: commits of the session in this process run one after another.
    pub(crate) state: tokio::sync::Mutex<Option<TransitState<C>>>,
    /// Queues this process's requests of the session under `Concurrency::Lock` for
    /// the remote lock, which it hands from one to the next.
    pub(crate) queue: Arc<LockQueue>,
    /// How many writes of the session this process's commits made: a read that
    /// began before one of them does not replace `state`.
    pub(crate) written: AtomicU64,
    /// Why the session ended in this process, if it did ([`ENDED_NOT`] while it lives):
    /// the requests still holding it cannot commit into it any more.
    pub(crate) ended: AtomicU8,
}

pub(crate) const ENDED_NOT: u8 = 0;
pub(crate) const ENDED_INVALIDATED: u8 = 1;
pub(crate) const ENDED_CYCLED: u8 = 2;

pub(crate) struct TransitState<C> {
    /// The newest state this process knows, without recorded changes.
    pub(crate) session: Session<C>,
    /// The primary's CAS token for `session` (or, with `on_primary` false, the
    /// tombstone of a move that the session moving back may replace); `None` when
    /// unknown: the next write reloads first.
    pub(crate) cas: Option<CasToken>,
    /// Whether the primary node holds this session under its current id; if not (it was
    /// restored from the backup, or moved), the next commit writes it even if nothing
    /// changed.
    pub(crate) on_primary: bool,
}

/// A request's hold on a transit copy. The last one dropped removes the copy.
pub(crate) struct TransitRef<C> {
    pub(crate) transit: Arc<Transit<C>>,
    pub(crate) map: Arc<TransitMap<C>>,
    /// What this request read, for a commit that finds no transit state yet, and
    /// when: an unchanged commit slides the backup copy's expiry to the primary's,
    /// which this read slid. Boxed: it rides in every request's session, in sticky
    /// mode too, whose futures must stay small.
    pub(crate) read: Box<(Option<TransitState<C>>, Instant)>,
}

impl<C> Drop for TransitRef<C> {
    fn drop(&mut self) {
        let mut map = self.map.lock();
        // Under the map lock nobody can take a new reference, so a count of one is
        // the last request of this session in flight.
        if Arc::strong_count(&self.transit) == 1
            && map
                .get(&self.transit.key)
                .is_some_and(|weak| weak.as_ptr() == Arc::as_ptr(&self.transit))
        {
            map.remove(&self.transit.key);
        }
    }
}
