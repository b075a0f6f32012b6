//! A session held in the local tier: the primary copy in sticky mode.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use tandem_core::CasToken;
use tandem_core::Codec;
use tandem_core::Session;
use tandem_core::SessionId;

/// The local tier's key: the session id without its route (the route is not part of
/// the stored identity, so a takeover keeps the key).
///
/// A view of the id's own shared text rather than a copy of its storage part: one
/// allocation fewer per resident session. Hashes and compares as that `str`, so the
/// tier can be searched with a plain `&str`.
#[derive(Clone)]
pub(crate) struct LocalKey {
    text: Arc<str>,
    len: u8,
}

impl LocalKey {
    pub(crate) fn as_str(&self) -> &str {
        &self.text[..usize::from(self.len)]
    }
}

impl std::borrow::Borrow<str> for LocalKey {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for LocalKey {
    fn eq(&self, other: &LocalKey) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for LocalKey {}

impl std::hash::Hash for LocalKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // Must hash exactly as the `str` it borrows as.
        self.as_str().hash(state);
    }
}

impl std::fmt::Debug for LocalKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Bytes a resident session costs beyond its attributes' names and values: the entry,
/// the id and the cache's own bookkeeping, rounded up. Used by the local tier's
/// weigher so that its capacity is a number of bytes.
const ENTRY_OVERHEAD: usize = 256;
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
    /// The weight the local tier accounts for this entry, in bytes.
    weight: AtomicU32,
    /// When the remote copy's expiry was last set (write or touch), in milliseconds of
    /// the manager's clock; 0 when there is no known remote copy.
    pub(crate) remote_refreshed_ms: AtomicU64,
    /// Digest of the bytes this server last wrote to or read from the remote tier for
    /// this session (0: none), to tell at a takeover whether another server wrote since.
    pub(crate) remote_digest: AtomicU64,
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

/// The part of an entry that requests and the writer change together.
pub(crate) struct EntryState<C> {
    /// The committed state, with no recorded changes.
    pub(crate) session: Session<C>,
    /// Bumped by every commit that changed what is stored (attributes, interval, id).
    pub(crate) revision: u64,
    /// The newest revision the remote tier is known to hold.
    pub(crate) backed_up: u64,
    /// The condition of the next write of the remote copy.
    pub(crate) remote: RemoteCopy,
    /// Digest of the bytes of a write whose answer was lost (0: none), so that a copy
    /// found with exactly those bytes is recognised as this server's own.
    pub(crate) attempted: u64,
}

impl<C: Codec> LocalEntry<C> {
    /// A new entry for `session`. `remote` says what the remote tier holds: nothing
    /// yet (a new session), or exactly this state under a token (a session just loaded
    /// from it). When the remote copy expires is unknown either way, so the first
    /// unchanged commit touches it.
    pub(crate) fn new(session: Session<C>, remote: RemoteCopy, with_lock: bool) -> LocalEntry<C> {
        let backed_up = remote != RemoteCopy::Absent;
        let entry = LocalEntry {
            queued: AtomicBool::new(false),
            in_dirty: AtomicBool::new(false),
            retired: AtomicBool::new(false),
            max_inactive_ms: AtomicU64::new(0),
            weight: AtomicU32::new(0),
            remote_refreshed_ms: AtomicU64::new(0),
            remote_digest: AtomicU64::new(0),
            lock: with_lock.then(|| Arc::new(tokio::sync::Mutex::new(()))),
            state: Mutex::new(EntryState {
                session,
                revision: 1,
                backed_up: u64::from(backed_up),
                remote,
                attempted: 0,
            }),
        };
        entry.refresh_metadata(&entry.state.lock().session);
        entry
    }

    /// Updates what the local tier reads without locking: interval and weight. Returns
    /// whether the weight moved by more than an eighth from the one the tier last
    /// weighed (recorded when this returns `true`), which is when re-inserting the
    /// entry to have it weighed again is worth its cost.
    pub(crate) fn refresh_metadata(&self, session: &Session<C>) -> bool {
        let interval = session.max_inactive().map_or(0, |interval| {
            u64::try_from(interval.as_millis()).unwrap_or(u64::MAX)
        });
        self.max_inactive_ms.store(interval, Ordering::Relaxed);
        let bytes: usize = session
            .values()
            .map(|(name, value)| name.len() + value.bytes().len() + ATTRIBUTE_OVERHEAD)
            .sum::<usize>()
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

/// The local key of `id`.
pub(crate) fn local_key(id: &SessionId) -> LocalKey {
    let (text, len) = id.shared_text();
    LocalKey {
        text: Arc::clone(text),
        len,
    }
}
