//! The session manager: the request lifecycle over the local and remote tiers.
//!
//! A request calls [`SessionManager::load`] with the id its client sent (if any),
//! uses the [`RequestSession`] it gets, and ends with [`SessionManager::commit`],
//! which says what the client's cookie must become ([`CookieUpdate`]).
//!
//! **Sticky mode** (`sticky`, `writes`, `backup`, `feed`): the local tier, a `moka`
//! cache, holds the primary copy of each session; a request for a locally held session
//! performs no network operation at all. A commit that changed the session (or
//! created it, or changed its id) is backed up to the session's node in the remote
//! tier, asynchronously by default, with a conditional write so that one server owns
//! a session at a time; unchanged sessions only get their remote expiry extended, and
//! only now and then (a `touch`, not a rewrite). The remote copy is what another
//! server loads when this one is gone, and what this one reloads after a session was
//! swapped out for space.
//!
//! Expiry: each session expires locally after its own max inactive interval without a
//! request (sliding). Its remote copy lives a little longer
//! ([`keepalive_slack`]) so that it never expires while the session is in use, and is
//! ended (a tombstone) when the local copy expires. A session whose server died
//! therefore stays loadable from the remote tier for at most its interval plus that
//! slack after its last request.
//!
//! Ids and nodes: a session id names its node. When that node is down, the next
//! request moves the session to a live node (a new id, told to the client through the
//! commit's [`CookieUpdate`]). Failover nodes are used only while every regular node
//! is down. An id whose route names another server is a takeover: the local copy is
//! trusted only if the remote copy is still the one this server last wrote or read.
//!
//! **Non-sticky mode** (`nonsticky`): the remote tier is the source of truth.
//!
//! **Ended ids** (`ends`), both modes: an id that was invalidated, cycled, expired or
//! moved off a down node ends for good, everywhere, through tombstones written before
//! the commit returns (and retried while their node fails).
mod backup;
mod config;
mod ends;
mod entry;
mod feed;
mod nonsticky;
mod request;
mod stats;
mod sticky;
mod writes;

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use moka::Expiry;
use moka::notification::RemovalCause;
use rand::RngExt;
use tokio::sync::mpsc;

use tandem_core::Codec;
use tandem_core::Session;
use tandem_core::envelope::{self, EnvelopeError};
use tandem_core::{KeySpace, StoreKey};
use tandem_core::{NodeId, SessionId};
use tandem_core::{NodeStatus, RemoteStore, Ttl};

pub use config::{
    BackupMode, Concurrency, ConfigError, LockScope, LockTimeoutPolicy, ManagerBuilder, Mode,
};
pub use nonsticky::AUTO_LOCK_LEARN_AFTER;
pub use request::RequestSession;
pub use stats::{HistogramSnapshot, Stats};

use backup::{Backups, Expired};
use config::ManagerConfig;
use ends::EndReason;
use entry::{LocalEntry, LocalKey};
use nonsticky::TransitMap;
use request::Attached;
use stats::Counters;

/// The weight of a learned request pattern in [`LockScope::Auto`]'s cache: its length
/// plus what a cache entry costs besides.
#[expect(
    clippy::borrowed_box,
    reason = "the cache's weigher is given its key, a boxed str, by reference"
)]
fn pattern_weight(pattern: &Box<str>, _streak: &u32) -> u32 {
    u32::try_from(pattern.len() + 64).unwrap_or(u32::MAX)
}

/// How long this server remembers the ids it ended, without asking the remote tier:
/// long enough for their tombstones to land (those whose node failed are remembered
/// until they do, in the ends waiting for their nodes).
const ENDED_MEMORY: Duration = Duration::from_secs(10);

/// How many locks order remote writes. Sessions share them by address; with far more
/// stripes than concurrent writers, two sessions rarely wait for each other.
const WRITE_ORDER_STRIPES: usize = 1024;

/// How much longer than its max inactive interval a remote copy lives: an eighth of
/// the interval, at least 1 s and at most 5 minutes.
///
/// The local copy's expiry restarts with every request, the remote copy's only when it
/// is written or touched. Giving the remote copy this slack lets an unchanged session
/// be touched only once per half-slack of use instead of on every request, while its
/// remote copy still never expires before the local one.
pub fn keepalive_slack(max_inactive: Duration) -> Duration {
    (max_inactive / 8).clamp(Duration::from_secs(1), Duration::from_secs(300))
}

/// The TTL of a remote copy of a session with this max inactive interval.
fn remote_ttl(max_inactive: Option<Duration>) -> Ttl {
    match max_inactive {
        // memcached counts expiry on a clock that ticks once a second, so an item may
        // expire up to a second before its TTL: that second is added on top.
        Some(interval) => Ttl::After(
            interval
                .saturating_add(keepalive_slack(interval))
                .saturating_add(Duration::from_secs(1)),
        ),
        None => Ttl::Never,
    }
}

/// A digest of stored bytes, stable for the life of the process: tells whether the
/// remote copy is still the one this server last wrote or read, without keeping the
/// bytes. Digests are only ever compared within one process, so the seed is random
/// per process, which keeps crafted collisions out of reach. foldhash rather than
/// SipHash: every backup write digests the whole stored session, and SipHash took
/// about 1,400 instructions of a ~500-byte one (3% of a sticky write, callgrind).
fn digest(bytes: &[u8]) -> u64 {
    static STATE: LazyLock<foldhash::quality::SeedableRandomState> =
        LazyLock::new(foldhash::quality::SeedableRandomState::random);
    // 0 means "no known remote copy".
    STATE.hash_one(bytes).max(1)
}

/// What the client's session cookie must become after a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CookieUpdate {
    /// Leave it as it is (or absent, if the request had none and stored nothing).
    Keep,
    /// Set it to this id: the session is new, or its id changed (relocation to
    /// another node, takeover by this server, [`RequestSession::cycle_id`]).
    Set {
        /// The session's id.
        id: SessionId,
        /// The session's max inactive interval; `None` means it never expires.
        max_inactive: Option<Duration>,
    },
    /// Clear it: the session was invalidated, or the client sent an id that no
    /// longer names a session.
    Clear,
}

/// What happened to the remote copy in a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupStatus {
    /// Nothing had to be written.
    NotNeeded,
    /// The write is queued for a background writer (asynchronous backup).
    Queued,
    /// The write finished before the commit returned (synchronous backup).
    Written,
    /// The synchronous write failed or was too slow; it is retried in the background
    /// (sticky: the session stays queued for backup; non-sticky: the backup copy is
    /// repaired from the primary). Until then the change lives on one node only.
    Failed(String),
}

/// The result of a successful [`SessionManager::commit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitOutcome {
    /// What to do with the client's cookie.
    pub cookie: CookieUpdate,
    /// What happened to the remote copy.
    pub backup: BackupStatus,
}

/// What a web layer knows about the request that loads a session: used by
/// [`LockScope`] to decide which requests take the session lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestInfo<'a> {
    /// The HTTP method, e.g. `GET`.
    pub method: &'a str,
    /// The request path, e.g. `/cart/items`.
    pub path: &'a str,
}

/// Why [`SessionManager::load`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The session's lock was not free within the lock timeout
    /// ([`Concurrency::Lock`] with [`LockTimeoutPolicy::Fail`]).
    #[error("the session is locked by another request (waited {waited:?})")]
    LockTimeout {
        /// How long the request waited.
        waited: Duration,
    },
    /// No node holding the session could be reached: non-sticky mode, or a sticky
    /// session this server does not hold whose node is down or did not answer. The
    /// session itself is not lost; a web layer answers 503 and keeps the cookie.
    #[error("no node can serve the session")]
    Unavailable,
}

/// Why [`SessionManager::commit`] failed. The request's changes were not applied; the
/// session itself is as it was before the commit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommitError {
    /// Another request changed these attributes after this request read them
    /// ([`Concurrency::Merge`]). A web layer answers 409 Conflict.
    #[error("concurrent change of attribute(s) {attributes:?}")]
    Conflict {
        /// The conflicting attribute names.
        attributes: Vec<String>,
    },
    /// The session would be larger than the configured maximum.
    #[error("session of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The stored size the commit would have produced.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The session this request loaded ended while the request was using it: another
    /// request invalidated it or gave it a new id ([`RequestSession::cycle_id`]), or
    /// (sticky) another server took it over. Nothing of this request was applied, in
    /// particular nothing to the session under its new id. A web layer answers 409.
    #[error("the session ended while this request used it")]
    SessionEnded,
    /// Non-sticky mode: earlier commits of the same session in this process held it
    /// longer than the lock timeout (a slow node), and this commit gave up waiting.
    /// A web layer answers 503.
    #[error("the session is busy with other commits (waited {waited:?})")]
    LockTimeout {
        /// How long the commit waited.
        waited: Duration,
    },
    /// Non-sticky mode: no node could take the write. A web layer answers 503.
    #[error("no node can store the session: {reason}")]
    Unavailable {
        /// The last store error.
        reason: String,
    },
    /// The session could not be sealed for storage (a layer failed).
    #[error("the session could not be prepared for storage: {reason}")]
    Encoding {
        /// What the layer reported.
        reason: String,
    },
    /// Non-sticky mode: the session kept changing under this commit; it gave up after
    /// this many compare-and-swap attempts.
    #[error("the session kept changing; gave up after {attempts} attempts")]
    RetriesExhausted {
        /// How many writes were tried.
        attempts: u32,
    },
}

/// What [`SessionManager::shutdown`] achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ShutdownReport {
    /// Backups written during the shutdown.
    pub written: usize,
    /// Sessions whose newest state could not be written before the deadline (their
    /// node down or too slow).
    pub unsaved: usize,
    /// Tombstones of ended session ids (logouts, id changes, moves off a down node)
    /// that could not be written before the deadline, their node down or too slow:
    /// until their copies expire by their TTL, another server may still load them.
    pub ends_unwritten: usize,
}

/// A fault-tolerant two-tier session manager. Cheap to clone: clones share one
/// manager.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use tandem_core::{MemoryStore, NodeId};
/// use tandem_manager::{CookieUpdate, SessionManager};
/// # use tandem_core::{Codec, CodecError, CodecId, Decodes, Encodes};
/// # struct Text;
/// # impl Codec for Text { const ID: CodecId = CodecId::new(250); const NAME: &'static str = "text"; }
/// # impl Encodes<str> for Text { fn encode(v: &str) -> Result<Vec<u8>, CodecError> { Ok(v.as_bytes().to_vec()) } }
/// # impl Decodes<String> for Text { fn decode(b: &[u8]) -> Result<String, CodecError> { String::from_utf8(b.to_vec()).map_err(|e| CodecError::decode(Self::ID, e)) } }
///
/// let store = Arc::new(MemoryStore::new([NodeId::new("n1").unwrap()]));
/// let manager = SessionManager::<Text>::builder(store).build().unwrap();
///
/// // First request: no cookie. Storing something creates the session.
/// let mut session = manager.load(None).await.unwrap();
/// session.insert("user", "ann").unwrap();
/// let outcome = manager.commit(session).await.unwrap();
/// let CookieUpdate::Set { id, .. } = outcome.cookie else { panic!("a new session") };
///
/// // Next request: the cookie's id finds the session in the local tier.
/// let session = manager.load(Some(id.as_str())).await.unwrap();
/// assert_eq!(session.get::<String>("user").unwrap().as_deref(), Some("ann"));
/// assert_eq!(manager.commit(session).await.unwrap().cookie, CookieUpdate::Keep);
/// # });
/// ```
pub struct SessionManager<C> {
    inner: Arc<Inner<C>>,
}

impl<C> Clone for SessionManager<C> {
    fn clone(&self) -> Self {
        SessionManager {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<C> {
    store: Arc<dyn RemoteStore>,
    config: ManagerConfig,
    regular: Vec<NodeId>,
    failover: Vec<NodeId>,
    local: moka::sync::Cache<LocalKey, Arc<LocalEntry<C>>, foldhash::fast::RandomState>,
    /// Remote loads in progress, so that concurrent requests for a session this server
    /// does not hold share one remote read.
    loading: parking_lot::Mutex<HashMap<LocalKey, Arc<RemoteLoad<C>>>>,
    /// Ids the remote tier did not know, recently.
    negative: moka::sync::Cache<LocalKey, ()>,
    /// Ids this server ended recently (invalidated, cycled, expired), with why: they
    /// are answered as ended without a remote read, also before their tombstones land.
    ended: moka::sync::Cache<LocalKey, EndReason>,
    /// Where recently relocated sessions went: old local key to new id. Concurrent
    /// requests still carrying the old id follow the session instead of missing it.
    moved: moka::sync::Cache<LocalKey, SessionId>,
    backups: Backups<C>,
    /// Non-sticky mode: the sessions with requests in flight.
    transit: Arc<TransitMap<C>>,
    /// Non-sticky mode: backup copies whose write failed, to be copied again from
    /// the primary.
    copy_repairs: nonsticky::repair::Repairs,
    /// `LockScope::Auto`: per request pattern, how many requests in a row left the
    /// session unchanged.
    read_only_streaks: moka::sync::Cache<Box<str>, u32>,
    counters: Arc<Counters>,
    clock: Instant,
    closing: AtomicBool,
    /// Set by `abort`: background work stops writing, as if the process had died.
    aborted: AtomicBool,
    /// Orders the remote writes of each session (see `run_backup`).
    write_order: Box<[tokio::sync::Mutex<()>]>,
    /// Tombstones, deletion markers and deletes waiting for their nodes.
    ends: ends::Ends,
    /// Sticky mode: the announcements to and from the other servers.
    feed: feed::Feed,
}

/// One request's share of a remote load. Dropped when the request is done with it,
/// finished or cancelled: the last share of an unfinished load, or any share of a
/// finished one, removes the load from the map, so that loads whose requests all went
/// away leave nothing behind (a client can drop its connection mid-load).
struct SharedLoad<'a, C> {
    loading: &'a parking_lot::Mutex<HashMap<LocalKey, Arc<RemoteLoad<C>>>>,
    key: &'a LocalKey,
    load: Option<Arc<RemoteLoad<C>>>,
}

impl<C> Drop for SharedLoad<'_, C> {
    fn drop(&mut self) {
        let mut loading = self.loading.lock();
        let Some(load) = self.load.take() else {
            return;
        };
        let current = loading
            .get(self.key)
            .is_some_and(|current| Arc::ptr_eq(current, &load));
        let finished = load.initialized();
        // Released under the map's lock, where shares are taken: the count read next
        // cannot grow meanwhile.
        drop(load);
        let unshared = loading
            .get(self.key)
            .is_some_and(|current| Arc::strong_count(current) == 1);
        if current && (finished || unshared) {
            loading.remove(self.key);
        }
    }
}

/// The outcome of one remote load, shared by the requests waiting for it: the entry,
/// or why there is none.
type RemoteLoad<C> = tokio::sync::OnceCell<Result<Arc<LocalEntry<C>>, sticky::Missing>>;

impl<C: Codec> SessionManager<C> {
    /// A builder for a manager over `store`.
    pub fn builder(store: Arc<dyn RemoteStore>) -> ManagerBuilder<C> {
        ManagerBuilder::new(store)
    }

    fn start(
        store: Arc<dyn RemoteStore>,
        config: ManagerConfig,
        runtime: &tokio::runtime::Handle,
    ) -> SessionManager<C> {
        let (regular, failover): (Vec<NodeId>, Vec<NodeId>) = store
            .nodes()
            .into_iter()
            .partition(|node| !config.failover.contains(node));
        let counters = Arc::new(Counters::default());
        let (expired_tx, expired_rx) = mpsc::unbounded_channel();
        let listener_counters = Arc::clone(&counters);
        let pattern_counters = Arc::clone(&counters);
        let ended = moka::sync::Cache::builder()
            .max_capacity(100_000)
            .time_to_live(ENDED_MEMORY)
            .build();
        let listener_ended: moka::sync::Cache<LocalKey, EndReason> =
            moka::sync::Cache::clone(&ended);
        let local = moka::sync::Cache::builder()
            .max_capacity(config.local_capacity_bytes)
            .weigher(|_key: &LocalKey, entry: &Arc<LocalEntry<C>>| entry.weight())
            // LRU, not TinyLFU: TinyLFU may refuse to admit a new or changed session
            // when the cache is full, and a refused primary copy would be lost until
            // its backup lands. LRU always admits and swaps out the coldest session.
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .expire_after(SessionExpiry)
            .eviction_listener(move |key, entry: Arc<LocalEntry<C>>, cause| match cause {
                RemovalCause::Expired => {
                    // At once, not in the task that ends the remote copy: a request
                    // arriving meanwhile must not reload the still-live remote copy
                    // and bring the expired session back.
                    entry.retire();
                    listener_ended.insert((*key).clone(), EndReason::Ended);
                    // The receiver is gone only when the manager is; nothing to do then.
                    let _ = expired_tx.send(Expired {
                        key: (*key).clone(),
                        entry,
                    });
                }
                RemovalCause::Size => Counters::add(&listener_counters.swapped_out),
                RemovalCause::Explicit | RemovalCause::Replaced => {}
            })
            // Every request hashes its id once here. A fast hasher with a per-process
            // random seed is enough: the keys are ids this server generated or found
            // in the remote tier, not arbitrary client input.
            .build_with_hasher(foldhash::fast::RandomState::default());
        let negative = moka::sync::Cache::builder()
            .max_capacity(100_000)
            .time_to_live(config.negative_cache_ttl.max(Duration::from_millis(1)))
            .build();
        let moved = moka::sync::Cache::builder()
            .max_capacity(100_000)
            .time_to_live(config.moved_ttl)
            .build();
        let (backups, backup_rx) = Backups::new(config.backup_queue);
        let (feed, announcements) = feed::Feed::new(config.key_secret.as_ref());
        let inner = Arc::new(Inner {
            store,
            regular,
            failover,
            local,
            negative,
            ended,
            moved,
            backups,
            transit: Arc::new(parking_lot::Mutex::new(HashMap::new())),
            copy_repairs: nonsticky::repair::Repairs::default(),
            loading: parking_lot::Mutex::new(HashMap::new()),
            read_only_streaks: moka::sync::Cache::builder()
                .max_capacity(nonsticky::MAX_PATTERN_BYTES)
                // Weighed by their length (plus the entry's own cost): a client that
                // sends many long paths evicts patterns instead of growing the cache.
                .weigher(pattern_weight)
                .eviction_listener(move |_, _, cause| {
                    if cause == RemovalCause::Size {
                        Counters::add(&pattern_counters.lock_patterns_evicted);
                    }
                })
                .build(),
            counters,
            clock: Instant::now(),
            closing: AtomicBool::new(false),
            aborted: AtomicBool::new(false),
            write_order: (0..WRITE_ORDER_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            ends: ends::Ends::default(),
            feed,
            config,
        });
        Counters::describe();
        backup::spawn_dispatcher(&inner, backup_rx, expired_rx, announcements, runtime);
        SessionManager { inner }
    }

    /// Loads the session for a request. `incoming` is the id the client sent (the
    /// cookie value), if any.
    ///
    /// A malformed id, an id naming no configured node, or an id no tier knows gives a
    /// new, empty session (created for real only if the request stores something).
    /// A locally held session is served without any network operation.
    pub async fn load(&self, incoming: Option<&str>) -> Result<RequestSession<C>, LoadError> {
        self.load_for(incoming, None).await
    }

    /// [`load`](Self::load) with what is known about the request, which
    /// [`LockScope::Auto`] and [`LockScope::Paths`] decide on in non-sticky mode.
    ///
    /// In non-sticky mode a load reads the session from its primary node (falling back
    /// to the backup copy), unless another request of the session is in flight in this
    /// process, and fails with [`LoadError::Unavailable`] when no node holding it can be
    /// reached.
    pub async fn load_for(
        &self,
        incoming: Option<&str>,
        request: Option<&RequestInfo<'_>>,
    ) -> Result<RequestSession<C>, LoadError> {
        let inner = &self.inner;
        Counters::add(&inner.counters.loads);
        if inner.aborted.load(Ordering::Acquire) {
            return Err(LoadError::Unavailable);
        }
        // Paths other than the common one are boxed: their state machines (remote
        // reads, takeovers) are large, and a future holding them inline would make
        // every request's future, and every move of it, that large.
        if inner.config.mode == Mode::NonSticky {
            return Box::pin(inner.ns_load(incoming, request)).await;
        }
        // The common request: a session this server holds, under exactly the id the
        // client sent. Found by the text as sent, before any parsing: a text equal to
        // a held id is valid by construction, and the held id stands in for a parsed
        // copy (nothing validated, nothing allocated, one lookup).
        if let Some((entry, id)) = incoming.and_then(|text| inner.held_as_sent(text)) {
            Counters::add(&inner.counters.loaded_local);
            return inner.attach(entry, id, sticky::LOOKUPS_AFTER_RETIRE).await;
        }
        let Some(id) = incoming.and_then(|text| inner.parse_incoming(text)) else {
            return Ok(inner.fresh(None, incoming.is_some()));
        };
        let our_route = inner.config.route.as_ref().map(|route| route.as_str());
        // A session this server holds under the id's key and our route, whose held
        // id still differs from the one sent (its route not rewritten yet): attach
        // rewrites it. No network.
        if id.route() == our_route
            && let Some(entry) = inner.held(id.storage_id())
        {
            Counters::add(&inner.counters.loaded_local);
            return inner.attach(entry, id, sticky::LOOKUPS_AFTER_RETIRE).await;
        }
        Box::pin(inner.load_elsewhere(id, sticky::LOOKUPS_AFTER_RETIRE)).await
    }

    /// [`commit`](Self::commit) without a future, for the commit that has nothing to
    /// wait for: a session held locally in sticky mode that the request left
    /// unchanged, whose remote copy needs no touch yet. That is most requests of a
    /// read-mostly site, and a web layer can then finish the response without
    /// allocating the commit's future. Anything else comes back as `Err(request)`,
    /// unchanged: pass it to [`commit`](Self::commit).
    ///
    /// ```
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::sync::Arc;
    /// use tandem_core::{MemoryStore, NodeId};
    /// use tandem_manager::{CookieUpdate, SessionManager};
    /// # use tandem_core::{Codec, CodecId, Decodes, Encodes, CodecError};
    /// # struct Text;
    /// # impl Codec for Text { const ID: CodecId = CodecId::new(250); const NAME: &'static str = "text"; }
    /// # impl Encodes<str> for Text { fn encode(v: &str) -> Result<Vec<u8>, CodecError> { Ok(v.as_bytes().to_vec()) } }
    /// # impl Decodes<String> for Text { fn decode(b: &[u8]) -> Result<String, CodecError> { String::from_utf8(b.to_vec()).map_err(|e| CodecError::decode(Self::ID, e)) } }
    ///
    /// let store = Arc::new(MemoryStore::new([NodeId::new("n1")?]));
    /// let manager = SessionManager::<Text>::builder(store).build()?;
    /// let mut session = manager.load(None).await?;
    /// session.insert("user", "ann")?;
    /// // A new session has to be stored: that commit cannot be done without waiting.
    /// let session = manager.commit_now(session).unwrap_err();
    /// let CookieUpdate::Set { id, .. } = manager.commit(session).await?.cookie else {
    ///     unreachable!()
    /// };
    /// // A request that only reads it can.
    /// let session = manager.load(Some(id.as_str())).await?;
    /// let outcome = manager.commit_now(session).ok().expect("nothing to wait for");
    /// assert_eq!(outcome.cookie, CookieUpdate::Keep);
    /// # Ok(())
    /// # }
    /// ```
    #[expect(
        clippy::result_large_err,
        reason = "the request is handed back as it came, for `commit`; boxing it would add the allocation this avoids"
    )]
    pub fn commit_now(
        &self,
        request: RequestSession<C>,
    ) -> Result<CommitOutcome, RequestSession<C>> {
        let inner = &self.inner;
        let Attached::Local(entry) = &request.attached else {
            return Err(request);
        };
        if request.session.is_modified()
            || request.cycle_id
            || request.invalidated
            || entry.is_retired()
            || inner.touch_due(entry)
            || inner.aborted.load(Ordering::Acquire)
        {
            return Err(request);
        }
        Counters::add(&inner.counters.commits);
        Counters::add(&inner.counters.backups_skipped_unchanged);
        // What `commit_existing` does for an unchanged session: slide the local
        // expiry, and keep or set the cookie.
        let cookie = {
            let mut state = entry.state.lock();
            if let Some(incoming) = &request.incoming
                && !sticky::same_session(incoming, state.session.id())
            {
                // Cycled since the request loaded it: `commit` answers that.
                drop(state);
                return Err(request);
            }
            state.session.touch(SystemTime::now());
            cookie_for(
                request.incoming.as_ref(),
                state.session.id(),
                state.session.max_inactive(),
            )
        };
        // The request (and with it a `Concurrency::Lock` guard) ends here, after the
        // session was touched, as in `commit`.
        drop(request);
        Ok(CommitOutcome {
            cookie,
            backup: BackupStatus::NotNeeded,
        })
    }

    /// Ends a request: applies its changes to the session (or invalidates it, or
    /// gives it a new id) and says what the client's cookie must become.
    ///
    /// A failed backup never fails the commit: it is counted, logged and retried.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn would keep the request twice in its state (see below)"
    )]
    pub fn commit(
        &self,
        mut request: RequestSession<C>,
    ) -> impl Future<Output = Result<CommitOutcome, CommitError>> + Send + '_ {
        // An async block rather than an `async fn`: an async fn keeps its by-value
        // argument twice in its state (the argument and the local it is moved to),
        // which would make every request's future larger by a whole `RequestSession`.
        async move {
            let inner = &self.inner;
            Counters::add(&inner.counters.commits);
            let modified = request.session.is_modified() || request.cycle_id;
            // Only changed commits are timed: an unchanged one reads no clock for it.
            let started = modified.then(Instant::now);
            // Held to the end of the commit, so that the next request of the session
            // sees this one's result.
            let _lock = request._lock.take();
            let outcome = match std::mem::replace(&mut request.attached, Attached::New) {
                // Boxed but for the common case, as in `load_for`.
                Attached::New if inner.config.mode == Mode::NonSticky => {
                    Box::pin(inner.ns_commit_new(request)).await
                }
                Attached::New => Box::pin(inner.commit_new(request)).await,
                Attached::Local(entry) => inner.commit_existing(entry, &request).await,
                Attached::Transit(transit) => Box::pin(inner.ns_commit(transit, request)).await,
            };
            if let Some(started) = started {
                inner.counters.histograms.changed_commit(started.elapsed());
            }
            if inner.aborted.load(Ordering::Acquire) {
                // A dead process answers nothing: no request it was serving succeeds.
                return Err(CommitError::Unavailable {
                    reason: "the manager was aborted".into(),
                });
            }
            outcome
        }
    }
}

impl<C: Codec> SessionManager<C> {
    /// Stops taking backups asynchronously and writes every pending backup, waiting at
    /// most `deadline`. Commits after this call write their backups synchronously.
    ///
    /// Call it while the server still takes requests, and stop accepting only when it
    /// returns: once a balancer sends this server's clients elsewhere, the other
    /// server loads their sessions from the remote tier, which must by then hold the
    /// newest state (the fault matrix's rolling restart does exactly this; stopping
    /// first loses the changes whose backups were still being written).
    pub async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        self.inner.closing.store(true, Ordering::Release);
        backup::flush(&self.inner, deadline).await
    }

    /// Stops every background write at once, without flushing, and fails every load
    /// and commit from then on (commits in progress included): what the death of the
    /// process does. For fault-injection tests of the layers above (a crash loses
    /// exactly what this loses); use [`shutdown`](Self::shutdown) to stop a manager.
    pub fn abort(&self) {
        self.inner.aborted.store(true, Ordering::Release);
    }

    /// The mode the manager runs in.
    pub fn mode(&self) -> Mode {
        self.inner.config.mode
    }

    /// Whether [`load_for`](Self::load_for) looks at the request's method and path:
    /// only in non-sticky mode under [`Concurrency::Lock`] with [`LockScope::Auto`] or
    /// [`LockScope::Paths`]. Otherwise a web layer need not keep them for the load.
    pub fn uses_request_info(&self) -> bool {
        let config = &self.inner.config;
        config.mode == Mode::NonSticky && config.locks_per_pattern()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        let mut stats = self.inner.counters.snapshot();
        stats.connection_waits = self
            .inner
            .store
            .node_status()
            .iter()
            .map(|node| node.connection_waits)
            .sum();
        stats
    }

    /// Publishes the counters' totals and the gauges (local sessions, pending backups,
    /// nodes up) to the `metrics` facade now. The manager also does this on every
    /// sweep (its retry interval), so an exporter is at most that much behind.
    pub fn export_metrics(&self) {
        self.inner.export_metrics();
    }

    /// Every node of the remote tier with its health as the store reports it, and
    /// whether the manager treats it as a failover node.
    pub fn nodes(&self) -> Vec<(NodeStatus, bool)> {
        let inner = &self.inner;
        inner
            .store
            .node_status()
            .into_iter()
            .map(|status| {
                let failover = inner.failover.contains(&status.id);
                (status, failover)
            })
            .collect()
    }

    /// What the configured stored-bytes layers did so far (sealed blobs, bytes in and
    /// out, hence the compression ratio; rejected blobs).
    pub fn layer_stats(&self) -> tandem_core::layers::LayerStats {
        self.inner.config.layer.stats()
    }

    /// Number of sessions held in the local tier (approximate while requests run).
    pub fn local_sessions(&self) -> u64 {
        self.inner.local.entry_count()
    }

    /// Applies the local tier's pending housekeeping now (expiry, eviction); it
    /// otherwise runs every retry interval. Useful in tests and before measurements.
    pub async fn run_pending_tasks(&self) {
        self.inner.local.run_pending_tasks();
    }

    /// Background work not finished yet: sessions whose newest state is not known to be
    /// stored remotely (queued, being written, or waiting for a retry), plus remote
    /// writes, touches and deletes queued or running. Zero means everything committed
    /// so far has reached the remote tier, as far as it could.
    pub fn pending_backups(&self) -> usize {
        self.inner.backups.dirty_count() + self.inner.backups.in_flight()
    }

    /// Tombstones and deletion markers of ended session ids (logouts, id changes,
    /// moves off a down node, expiries) that wait for their node to answer again:
    /// retried every retry interval, and at [`shutdown`](Self::shutdown). While one
    /// waits, this server answers its id as ended; another server that reads the
    /// copy once the node is back, before the retry lands, does not know yet.
    pub fn pending_ends(&self) -> usize {
        self.inner.ends.pending()
    }

    /// Sticky mode: sessions whose newest state is not known to be in the remote tier
    /// (changed since their last successful backup). What a crash of this process
    /// would lose right now. Always zero in non-sticky mode, where a commit returns
    /// after the primary copy is written.
    pub fn unsaved_sessions(&self) -> usize {
        self.inner.backups.dirty_count()
    }
}

impl<C: Codec> Inner<C> {
    fn export_metrics(&self) {
        self.counters.export();
        metrics::gauge!("tandem_local_sessions").set(self.local.entry_count() as f64);
        metrics::gauge!("tandem_pending_backups")
            .set((self.backups.dirty_count() + self.backups.in_flight()) as f64);
        for status in self.store.node_status() {
            let node = status.id.to_string();
            metrics::gauge!("tandem_node_up", "node" => node.clone()).set(if status.up {
                1.0
            } else {
                0.0
            });
            metrics::counter!("tandem_node_operations_total", "node" => node.clone())
                .absolute(status.operations);
            metrics::counter!("tandem_node_failures_total", "node" => node.clone())
                .absolute(status.failures);
            metrics::counter!("tandem_node_down_transitions_total", "node" => node.clone())
                .absolute(status.down_transitions);
            metrics::counter!("tandem_node_coalesced_reads_total", "node" => node.clone())
                .absolute(status.coalesced_reads);
            metrics::counter!("tandem_node_connection_waits_total", "node" => node)
                .absolute(status.connection_waits);
        }
        metrics::gauge!("tandem_pending_ends").set(self.ends.pending() as f64);
        let layers = self.config.layer.stats();
        metrics::counter!("tandem_layer_bytes_in_total").absolute(layers.bytes_in);
        metrics::counter!("tandem_layer_bytes_out_total").absolute(layers.bytes_out);
        metrics::counter!("tandem_layer_rejected_total").absolute(layers.rejected);
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.clock.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The key of `id` in `space`: from the id itself, or derived from the storage key
    /// secret if one is configured.
    fn key(&self, space: KeySpace, id: &SessionId) -> StoreKey {
        match &self.config.key_secret {
            None => self.config.prefix.key(space, id),
            Some(secret) => self.config.prefix.hashed_key(space, id, secret),
        }
    }

    fn store_key(&self, id: &SessionId) -> StoreKey {
        self.key(KeySpace::Session, id)
    }

    /// The ring of nodes: regular nodes in configuration order, then failover nodes.
    fn ring(&self) -> impl Iterator<Item = &NodeId> + Clone {
        self.regular.iter().chain(&self.failover)
    }

    /// Strict parsing before anything else: a malformed id or one naming no node of
    /// this store is no session at all.
    fn parse_incoming(&self, text: &str) -> Option<SessionId> {
        let id = SessionId::parse(text).ok().filter(|id| {
            self.regular
                .iter()
                .chain(&self.failover)
                .any(|node| node.as_str() == id.node())
        });
        if id.is_none() {
            Counters::add(&self.counters.invalid_ids);
        }
        id
    }

    fn node_of(&self, id: &SessionId) -> NodeId {
        self.node_ref(id).clone()
    }

    /// [`node_of`](Self::node_of) without the copy (a node id is a boxed string).
    fn node_ref(&self, id: &SessionId) -> &NodeId {
        // parse_incoming and every id this manager makes name a configured node.
        self.regular
            .iter()
            .chain(&self.failover)
            .find(|node| node.as_str() == id.node())
            .unwrap_or(&self.regular[0])
    }

    /// A live node for a new or relocated session: a random available regular node,
    /// else a random available failover node, else none.
    fn live_node(&self) -> Option<NodeId> {
        let pick = |nodes: &[NodeId]| {
            let live: Vec<&NodeId> = nodes
                .iter()
                .filter(|node| self.store.is_available(node))
                .collect();
            (!live.is_empty()).then(|| live[rand::rng().random_range(0..live.len())].clone())
        };
        pick(&self.regular).or_else(|| pick(&self.failover))
    }

    /// A session that does not exist yet.
    fn fresh(&self, unknown: Option<SessionId>, had_cookie: bool) -> RequestSession<C> {
        if unknown.is_some() {
            Counters::add(&self.counters.unknown_ids);
        }
        let node = self.live_node().unwrap_or_else(|| {
            Counters::add(&self.counters.degraded);
            self.regular[rand::rng().random_range(0..self.regular.len())].clone()
        });
        // Routes are for sticky load balancing only.
        let route = match self.config.mode {
            Mode::Sticky => self.config.route.as_ref(),
            Mode::NonSticky => None,
        };
        let id = SessionId::generate(&node, route);
        RequestSession {
            session: Session::new(id, SystemTime::now(), self.config.max_inactive),
            attached: Attached::New,
            incoming: None,
            had_cookie,
            invalidated: false,
            cycle_id: false,
            _lock: None,
            remote_lock: None,
            pattern: None,
        }
    }

    /// Opens stored bytes (through the configured layers) and decodes the envelope.
    fn decode(&self, id: &SessionId, stored: &[u8]) -> Result<Session<C>, String> {
        let opened = self
            .config
            .layer
            .open(id, stored)
            .map_err(|error| error.to_string())?;
        envelope::decode::<C>(id.clone(), &opened).map_err(|error: EnvelopeError| error.to_string())
    }

    /// The bytes to store for `session`: its envelope, sealed by the configured layers.
    fn seal(&self, session: &Session<C>) -> Result<Vec<u8>, String> {
        self.config
            .layer
            .seal(session.id(), envelope::encode(session))
            .map_err(|error| error.to_string())
    }

    /// Refuses a request's changes if another request changed any of the same
    /// attributes since this one read them: a conflict even if both wrote the same
    /// bytes, because each may have derived its value from what it read (two
    /// increments from 0 both write 1).
    fn check_conflicts(
        &self,
        request: &Session<C>,
        current: &Session<C>,
    ) -> Result<(), CommitError> {
        let conflicts: Vec<String> = request
            .changes()
            .filter(|change| current.value(change.name) != change.original)
            .map(|change| change.name.to_owned())
            .collect();
        if conflicts.is_empty() {
            return Ok(());
        }
        Counters::add(&self.counters.conflicts);
        tracing::debug!(session = %current.id().redacted(), ?conflicts, "concurrent change conflict");
        Err(CommitError::Conflict {
            attributes: conflicts,
        })
    }

    fn check_size(&self, session: &Session<C>) -> Result<(), CommitError> {
        let limit = self
            .config
            .max_session_size
            .unwrap_or_else(|| self.store.max_item_size());
        // What is stored is the envelope sealed by the layers, which may add to it
        // (encryption adds its header and tag): counted, so that a session that
        // passes here is never refused by the store.
        let size = envelope::encoded_len(session).saturating_add(self.config.layer.max_overhead());
        if size > limit {
            Counters::add(&self.counters.too_large);
            tracing::warn!(session = %session.id().redacted(), size, limit, "session too large; commit refused");
            return Err(CommitError::TooLarge { size, limit });
        }
        Ok(())
    }

    /// A new session at commit, in either mode: what to store, or, if the request
    /// stored nothing (or invalidated it), the outcome without storing anything.
    fn prepare_new(&self, request: RequestSession<C>) -> Result<NewSession<C>, CommitError> {
        let RequestSession {
            mut session,
            had_cookie,
            invalidated,
            ..
        } = request;
        if invalidated || !session.is_modified() {
            let cookie = if had_cookie {
                CookieUpdate::Clear
            } else {
                CookieUpdate::Keep
            };
            return Ok(NewSession::Discard(CommitOutcome {
                cookie,
                backup: BackupStatus::NotNeeded,
            }));
        }
        self.check_size(&session)?;
        session.touch(SystemTime::now());
        session.mark_unchanged();
        Ok(NewSession::Store(session))
    }
}

/// What a commit of a new session does.
enum NewSession<C> {
    /// Store this session.
    Store(Session<C>),
    /// Nothing to store: answer this.
    Discard(CommitOutcome),
}

/// What a commit of a session now under `id` does to the client's cookie: nothing if
/// the client sent exactly that id, otherwise set it.
fn cookie_for(
    incoming: Option<&SessionId>,
    id: &SessionId,
    max_inactive: Option<Duration>,
) -> CookieUpdate {
    match incoming {
        Some(incoming) if incoming == id => CookieUpdate::Keep,
        _ => CookieUpdate::Set {
            id: id.clone(),
            max_inactive,
        },
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
struct SessionExpiry;

/// How far past its interval a session may stay in the local tier: a sixteenth of the
/// interval, at most 30 s.
fn slide_step(interval: Duration) -> Duration {
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
mod testing;
#[cfg(test)]
mod tests;
