//! A session held in the local tier: the primary copy in sticky mode.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use moka::Expiry;

use parking_lot::Mutex;

use tandem_core::CasToken;
use tandem_core::Codec;
use tandem_core::Session;
use tandem_core::SessionId;
use tandem_core::envelope;

use super::resident::{PER_ATTRIBUTE, Resident};
use crate::common::local_key::LocalKey;
use crate::common::unix_millis;

/// Bytes a resident session costs beyond its attributes' names and values: the entry,
/// the id, the envelope's header and the cache's own bookkeeping (moka keeps 278
/// bytes per entry). Used by the local tier's weigher so that its capacity is a number
/// of bytes: with [`ATTRIBUTE_OVERHEAD`], the 541 bytes beyond the payload that
/// `bench-http-mem` measures for a one-attribute session.
const ENTRY_OVERHEAD: usize = 496;
/// Per-attribute bookkeeping beyond name and value (vector slot, two reference counts).
const ATTRIBUTE_OVERHEAD: usize = 48;

/// One session in the local tier, shared by every in-flight request of the session
/// and by the background writer that backs it up.
pub(crate) struct LocalEntry<C> {
    pub(crate) state: Mutex<EntryState<C>>,
    /// Set while a backup job for this entry is queued: further commits coalesce into
    /// that job instead of queueing another.
    pub(crate) queued: AtomicBool,
    /// Whether the entry is in the backup bookkeeping's dirty set (changed under its
    /// lock), so that a commit of an already dirty session skips the set.
    pub(crate) in_dirty: AtomicBool,
    /// Set when the entry must never be written again: invalidated, or taken over by
    /// another server. A queued backup of a retired entry is dropped.
    pub(crate) retired: AtomicBool,
    /// The max inactive interval in milliseconds (0: never expires), readable by the
    /// local tier's expiry policy without taking the state lock.
    max_inactive_ms: AtomicU64,
    /// When a request last found this session, or it entered the local tier, in
    /// milliseconds of the manager's clock: the entry expires by that clock its max
    /// inactive interval later (see [`expired_at`](Self::expired_at)).
    accessed_ms: AtomicU64,
    /// Set once the entry's expiry was handled (by the cache's listener or by a
    /// request that found it expired), so that it is handled once.
    expired: AtomicBool,
    /// The weight the local tier accounts for this entry, in bytes.
    weight: AtomicU32,
    /// When the remote copy's expiry was last set (write or touch), in milliseconds of
    /// the manager's clock; 0 when there is no known remote copy.
    pub(crate) remote_refreshed_ms: AtomicU64,
    /// The [epoch](tandem_core::RemoteStore::node_epoch) of the remote copy's node,
    /// read before the write (or read) that left the copy this server knows: if the
    /// node's epoch differs when the copy is due for a keep-alive touch, the node may
    /// have gone back to an older copy, which a touch would keep alive, so the copy is
    /// written in full instead.
    pub(crate) remote_epoch: AtomicU64,
    /// Digest of the bytes this server last wrote to or read from the remote tier for
    /// this session (0: none), to tell at a takeover whether another server wrote since.
    pub(crate) remote_digest: AtomicU64,
    /// The last access time (Unix milliseconds) of the state this server last wrote to
    /// or read from the remote tier (0: none): a copy found with an earlier one is
    /// older than that state (see `Engine::older_than_ours`).
    pub(crate) remote_accessed_ms: AtomicU64,
    /// Serializes the requests of this session under `Concurrency::Lock`.
    pub(crate) lock: Option<Arc<tokio::sync::Mutex<()>>>,
}

/// What this server knows of an entry's remote copy: the condition of its next write.
///
/// Every backup is conditional, so that it lands only if nobody else wrote the copy
/// since this server last did: another server that took the session over, or ended it
/// (a tombstone), is never overwritten by this server's older state. A write whose
/// condition fails tells this server that it no longer owns the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RemoteCopy {
    /// There is no copy under the entry's key yet (a new session, one moved to
    /// another node or given a new id, or one whose copy vanished): create it.
    Absent,
    /// The copy has this CAS token, as this server last wrote or read it.
    Cas(CasToken),
    /// Unknown: a write whose answer was lost may or may not have landed. What is
    /// there is checked against what this server wrote before the next write.
    Unknown,
}

/// Digests of the bytes of this server's writes of a copy whose answers were lost
/// (a timeout, a connection lost, `Unreplicated` under the durable setting), since
/// the copy was last known. Any of them may be what the copy holds: a write that
/// timed out may land later, and a failover may bring back an earlier one that a
/// lagging replica had. Up to [`Attempts::KEPT`] of them, oldest first. Almost every
/// entry never has one: boxed, so that the entry pays a pointer for them.
#[derive(Debug, Default)]
pub(crate) struct Attempts(Option<Box<Digests>>);

/// The digests of [`Attempts`], oldest first.
#[derive(Debug, Default)]
struct Digests {
    kept: [u64; Attempts::KEPT],
    len: usize,
}

impl Digests {
    fn as_slice(&self) -> &[u64] {
        &self.kept[..self.len]
    }
}

impl Attempts {
    /// The most digests kept: more unanswered writes in a row than this, and the
    /// oldest ones are forgotten (a copy holding one of them is then taken for
    /// another server's, the behaviour before there was a list).
    pub(crate) const KEPT: usize = 16;

    /// Records the digest of one more write whose answer was lost.
    pub(crate) fn record(&mut self, digest: u64) {
        let digests = self.0.get_or_insert_with(Box::default);
        if digests.as_slice().last() == Some(&digest) {
            return;
        }
        if digests.len == Self::KEPT {
            digests.kept.copy_within(1.., 0);
            digests.len -= 1;
        }
        digests.kept[digests.len] = digest;
        digests.len += 1;
    }

    /// The copy is known again: nothing is pending.
    pub(crate) fn clear(&mut self) {
        self.0 = None;
    }

    /// Whether no write's answer is pending.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// Whether bytes with this digest were sent by a write whose answer was lost.
    pub(crate) fn contains(&self, digest: u64) -> bool {
        digest != 0
            && self
                .0
                .as_ref()
                .is_some_and(|digests| digests.as_slice().contains(&digest))
    }
}

/// The part of an entry that requests and the writer change together.
pub(crate) struct EntryState<C> {
    /// The committed state.
    pub(crate) session: Resident<C>,
    /// Bumped by every commit that changed what is stored (attributes, interval, id).
    pub(crate) revision: u64,
    /// The newest revision the remote tier is known to hold.
    pub(crate) backed_up: u64,
    /// The condition of the next write of the remote copy, as [`RemoteCopy`] but
    /// kept in two fields, the kind beside the flag below instead of in eight bytes
    /// of its own (see [`remote`](Self::remote)).
    remote_token: CasToken,
    remote_kind: RemoteKind,
    /// Digests of the bytes of writes whose answer was lost since the copy was last
    /// known, so that a copy found with any of those bytes is recognised as this
    /// server's own.
    pub(crate) attempted: Attempts,
    /// The session moved back to a key it had left while that key's node was down,
    /// before the tombstone of the move away could be written there (the move back
    /// cancelled it). The copy still under the key is then this server's own, from
    /// before that move: the next write replaces it, as it replaces a tombstone of a
    /// move, instead of taking it for another server's. Cleared by a landed write.
    pub(crate) over_own_moved_copy: bool,
}

/// The kind of a [`RemoteCopy`], without its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RemoteKind {
    Absent,
    Cas,
    Unknown,
}

impl<C> EntryState<C> {
    /// The condition of the next write of the remote copy.
    pub(crate) fn remote(&self) -> RemoteCopy {
        match self.remote_kind {
            RemoteKind::Absent => RemoteCopy::Absent,
            RemoteKind::Cas => RemoteCopy::Cas(self.remote_token),
            RemoteKind::Unknown => RemoteCopy::Unknown,
        }
    }

    pub(crate) fn set_remote(&mut self, remote: RemoteCopy) {
        (self.remote_kind, self.remote_token) = match remote {
            RemoteCopy::Absent => (RemoteKind::Absent, CasToken(0)),
            RemoteCopy::Cas(token) => (RemoteKind::Cas, token),
            RemoteCopy::Unknown => (RemoteKind::Unknown, CasToken(0)),
        };
    }
}

impl<C: Codec> LocalEntry<C> {
    /// A new entry for `session`. `remote` says what the remote tier holds: nothing
    /// yet (a new session), or exactly this state under a token (a session just loaded
    /// from it). When the remote copy expires is unknown either way, so the first
    /// unchanged commit touches it.
    /// `now_ms` is the manager's clock (`Common::now_ms`).
    pub(crate) fn new(
        session: Session<C>,
        remote: RemoteCopy,
        with_lock: bool,
        now_ms: u64,
    ) -> LocalEntry<C> {
        let backed_up = remote != RemoteCopy::Absent;
        let entry = LocalEntry {
            queued: AtomicBool::new(false),
            in_dirty: AtomicBool::new(false),
            retired: AtomicBool::new(false),
            max_inactive_ms: AtomicU64::new(0),
            accessed_ms: AtomicU64::new(now_ms),
            expired: AtomicBool::new(false),
            weight: AtomicU32::new(0),
            remote_refreshed_ms: AtomicU64::new(0),
            remote_epoch: AtomicU64::new(0),
            remote_digest: AtomicU64::new(0),
            // A state read from the remote tier is what it holds; a new one is not
            // there yet.
            remote_accessed_ms: AtomicU64::new(match remote {
                RemoteCopy::Absent => 0,
                RemoteCopy::Cas(_) | RemoteCopy::Unknown => unix_millis(session.last_accessed()),
            }),
            lock: with_lock.then(|| Arc::new(tokio::sync::Mutex::new(()))),
            state: Mutex::new(EntryState {
                session: Resident::new(&session),
                revision: 1,
                backed_up: u64::from(backed_up),
                remote_token: CasToken(0),
                remote_kind: RemoteKind::Absent,
                attempted: Attempts::default(),
                over_own_moved_copy: false,
            }),
        };
        {
            let mut state = entry.state.lock();
            state.set_remote(remote);
            entry.refresh_metadata(&state.session);
        }
        entry
    }

    /// Updates what the local tier reads without locking: interval and weight. Returns
    /// whether the weight moved by more than an eighth from the one the tier last
    /// weighed (recorded when this returns `true`), which is when re-inserting the
    /// entry to have it weighed again is worth its cost.
    pub(crate) fn refresh_metadata(&self, session: &Resident<C>) -> bool {
        let interval = session.max_inactive().map_or(0, |interval| {
            u64::try_from(interval.as_millis()).unwrap_or(u64::MAX)
        });
        self.max_inactive_ms.store(interval, Ordering::Relaxed);
        // The attributes' names and values, each with its bookkeeping.
        let count = session.attribute_count();
        let bytes = session.envelope().len() - envelope::HEADER_LEN - count * PER_ATTRIBUTE
            + count * ATTRIBUTE_OVERHEAD
            + ENTRY_OVERHEAD;
        let weight = u32::try_from(bytes).unwrap_or(u32::MAX);
        let weighed = self.weight.load(Ordering::Relaxed);
        let moved = weight.abs_diff(weighed) > weighed / 8;
        if moved {
            self.weight.store(weight, Ordering::Relaxed);
        }
        moved
    }

    pub(crate) fn max_inactive(&self) -> Option<Duration> {
        match self.max_inactive_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    /// Whether the session has been inactive for its whole interval at `now_ms`;
    /// if not, records a request finding it then, which slides its expiry.
    ///
    /// The local tier expires sessions by its own clock, which cannot be replaced;
    /// this check applies the manager's clock (the real one in production, where it
    /// agrees with the tier, give or take the tier's slide step), so that a session
    /// expires on paused time in tests just as it does in production.
    pub(crate) fn expired_at(&self, now_ms: u64) -> bool {
        let interval = self.max_inactive_ms.load(Ordering::Relaxed);
        let accessed = self.accessed_ms.load(Ordering::Relaxed);
        if interval != 0 && now_ms.saturating_sub(accessed) >= interval {
            return true;
        }
        // Written only when it moved, so that the reads of a busy session do not all
        // write the same cache line.
        if now_ms > accessed {
            self.accessed_ms.store(now_ms, Ordering::Relaxed);
        }
        false
    }

    /// Marks the entry's expiry as handled; `false` if it already was.
    pub(crate) fn claim_expiry(&self) -> bool {
        !self.expired.swap(true, Ordering::AcqRel)
    }

    pub(crate) fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    pub(crate) fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    pub(crate) fn retire(&self) {
        self.retired.store(true, Ordering::Release);
    }

    /// The current id (the entry's key and node follow it).
    pub(crate) fn id(&self) -> SessionId {
        self.state.lock().session.id().clone()
    }
}

/// The local tier's per-entry expiry: each session's own max inactive interval,
/// slid by reads and writes.
///
/// Moving an entry's expiry moves it in the cache's timer wheel, which costs more than
/// the rest of a lookup (about 50 ns of a 165 ns read, measured with moka alone). So a
/// read slides the expiry in steps: only once less than the interval is left does it
/// set the expiry to the interval plus one [`slide_step`]; otherwise it keeps it,
/// which the cache then leaves alone. A session expires locally between its interval
/// and its interval plus one step after its last request: never early, and at most a
/// sixteenth of the interval (and 30 s) late. Its remote copy outlives that: it lives
/// the interval plus a slack of at least an eighth of it.
pub(crate) struct SessionExpiry;

/// How far past its interval a session may stay in the local tier: a sixteenth of the
/// interval, at most 30 s.
pub(crate) fn slide_step(interval: Duration) -> Duration {
    (interval / 16).min(Duration::from_secs(30))
}

/// The expiry a session gets when it slides: its interval plus one step.
fn slid_expiry<C: Codec>(entry: &LocalEntry<C>) -> Option<Duration> {
    entry
        .max_inactive()
        .map(|interval| interval.saturating_add(slide_step(interval)))
}

impl<C: Codec> Expiry<LocalKey, Arc<LocalEntry<C>>> for SessionExpiry {
    fn expire_after_create(
        &self,
        _key: &LocalKey,
        entry: &Arc<LocalEntry<C>>,
        _created_at: Instant,
    ) -> Option<Duration> {
        slid_expiry(entry)
    }

    fn expire_after_read(
        &self,
        _key: &LocalKey,
        entry: &Arc<LocalEntry<C>>,
        _read_at: Instant,
        remaining: Option<Duration>,
        _last_modified_at: Instant,
    ) -> Option<Duration> {
        match (entry.max_inactive(), remaining) {
            // At least the interval left, and no more than a slide gives (the interval
            // may have changed since): unchanged. The cache compares the result with
            // what it passed in, and leaves an unchanged expiry where it is.
            (Some(interval), Some(remaining))
                if remaining >= interval
                    && remaining <= interval.saturating_add(slide_step(interval)) =>
            {
                Some(remaining)
            }
            _ => slid_expiry(entry),
        }
    }

    fn expire_after_update(
        &self,
        _key: &LocalKey,
        entry: &Arc<LocalEntry<C>>,
        _updated_at: Instant,
        _remaining: Option<Duration>,
    ) -> Option<Duration> {
        slid_expiry(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::{Attempts, LocalEntry};
    use crate::testing::TextCodec;

    /// Every resident session pays for the entry: a field added here is paid for
    /// as many times as a server holds sessions.
    #[test]
    fn the_entry_stays_small() {
        assert!(std::mem::size_of::<LocalEntry<TextCodec>>() <= 152);
        assert_eq!(std::mem::size_of::<Attempts>(), 8);
    }

    #[test]
    fn every_unanswered_write_is_remembered_up_to_the_limit() {
        let mut attempts = Attempts::default();
        assert!(attempts.is_empty() && !attempts.contains(0) && !attempts.contains(7));
        attempts.record(7);
        attempts.record(8);
        attempts.record(8);
        assert!(attempts.contains(7) && attempts.contains(8) && !attempts.is_empty());
        for digest in 100..100 + Attempts::KEPT as u64 {
            attempts.record(digest);
        }
        assert!(!attempts.contains(7), "the oldest are forgotten");
        assert!((100..100 + Attempts::KEPT as u64).all(|digest| attempts.contains(digest)));
        attempts.clear();
        assert!(attempts.is_empty() && !attempts.contains(100));
    }
}
