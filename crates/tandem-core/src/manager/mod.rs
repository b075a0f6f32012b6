//! The session manager: the request lifecycle over the local and remote tiers.
//!
//! A request calls [`SessionManager::load`] with the id its client sent (if any),
//! uses the [`RequestSession`] it gets, and ends with [`SessionManager::commit`],
//! which says what the client's cookie must become ([`CookieUpdate`]).
//!
//! **Sticky mode** (this module): the local tier, a `moka` cache, holds the primary
//! copy of each session; a request for a locally held session performs no network
//! operation at all. A commit that changed the session (or created it, or changed its
//! id) is backed up to the session's node in the remote tier, asynchronously by
//! default; unchanged sessions only get their remote expiry extended, and only now and
//! then (a `touch`, not a rewrite). The remote copy is what another server loads when
//! this one is gone, and what this one reloads after a session was swapped out for
//! space.
//!
//! Expiry: each session expires locally after its own max inactive interval without a
//! request (sliding). Its remote copy lives a little longer
//! ([`keepalive_slack`]) so that it never expires while the session is in use, and is
//! deleted when the local copy expires. A session whose server died therefore stays
//! loadable from the remote tier for at most its interval plus that slack after its
//! last request.
//!
//! Ids and nodes: a session id names its node. When that node is down, the next
//! request moves the session to a live node (a new id, told to the client through the
//! commit's [`CookieUpdate`]). Failover nodes are used only while every regular node
//! is down. An id whose route names another server is a takeover: the local copy is
//! trusted only if the remote copy is still the one this server last wrote or read.

mod backup;
mod config;
mod entry;
mod nonsticky;
mod request;
mod stats;

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

use crate::codec::Codec;
use crate::envelope::{self, EnvelopeError};
use crate::id::{NodeId, Route, SessionId};
use crate::key::{KeySpace, StoreKey};
use crate::session::{AttributeValue, Session};
use crate::store::{NodeStatus, RemoteStore, SetItem, StoreError, Ttl};

pub use config::{
    BackupMode, Concurrency, ConfigError, LockScope, LockTimeoutPolicy, ManagerBuilder, Mode,
};
pub use nonsticky::AUTO_LOCK_LEARN_AFTER;
pub use request::RequestSession;
pub use stats::{HistogramSnapshot, Stats};

use backup::{Backups, Expired};
use config::ManagerConfig;
use entry::{EntryState, LocalEntry, LocalKey, local_key};
use nonsticky::TransitMap;
use request::Attached;
use stats::Counters;

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
    /// Non-sticky mode: no node holding the session could be reached. A web layer
    /// answers 503.
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
    /// Another request invalidated the session while this one was using it.
    #[error("the session was invalidated by another request")]
    SessionEnded,
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
}

/// A fault-tolerant two-tier session manager. Cheap to clone: clones share one
/// manager.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use tandem_core::{CookieUpdate, MemoryStore, NodeId, SessionManager};
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
}

/// A backup write of a batch: the entry and what to send.
type EntryWrite<C> = (Arc<LocalEntry<C>>, BackupJob);

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
/// or whether the remote tier said the session does not exist (`false`: it could not
/// be asked).
type RemoteLoad<C> = tokio::sync::OnceCell<Result<Arc<LocalEntry<C>>, bool>>;

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
        let local = moka::sync::Cache::builder()
            .max_capacity(config.local_capacity_bytes)
            .weigher(|_key: &LocalKey, entry: &Arc<LocalEntry<C>>| entry.weight())
            // LRU, not TinyLFU: TinyLFU may refuse to admit a new or changed session
            // when the cache is full, and a refused primary copy would be lost until
            // its backup lands. LRU always admits and swaps out the coldest session.
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .expire_after(SessionExpiry)
            .eviction_listener(move |key, entry, cause| match cause {
                RemovalCause::Expired => {
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
        let inner = Arc::new(Inner {
            store,
            regular,
            failover,
            local,
            negative,
            moved,
            backups,
            transit: Arc::new(parking_lot::Mutex::new(HashMap::new())),
            copy_repairs: nonsticky::repair::Repairs::default(),
            loading: parking_lot::Mutex::new(HashMap::new()),
            read_only_streaks: moka::sync::Cache::new(10_000),
            counters,
            clock: Instant::now(),
            closing: AtomicBool::new(false),
            aborted: AtomicBool::new(false),
            write_order: (0..WRITE_ORDER_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            config,
        });
        Counters::describe();
        backup::spawn_dispatcher(&inner, backup_rx, expired_rx, runtime);
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
            return inner.attach(entry, id).await;
        }
        let Some(id) = incoming.and_then(|text| inner.parse_incoming(text)) else {
            return Ok(inner.fresh(None, incoming.is_some()));
        };
        let our_route = inner.config.route.as_ref().map(|route| route.as_str());
        // A session this server holds under the id's key and our route, whose held
        // id still differs from the one sent (its route not rewritten yet): attach
        // rewrites it. No network.
        if id.route() == our_route
            && let Some(entry) = inner.local.get(id.storage_id())
        {
            Counters::add(&inner.counters.loaded_local);
            return inner.attach(entry, id).await;
        }
        Box::pin(inner.load_elsewhere(id)).await
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
    /// use tandem_core::{CookieUpdate, MemoryStore, NodeId, SessionManager};
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

impl<C: Codec> Inner<C> {
    /// Sticky mode: a session this server does not hold under the id's own key and
    /// route: moved off a down node, held by another server (takeover), or only in
    /// the remote tier.
    async fn load_elsewhere(&self, id: SessionId) -> Result<RequestSession<C>, LoadError> {
        let our_route = self.config.route.as_ref().map(|route| route.as_str());
        let key = local_key(&id);
        // Not held under the id itself: the session may have moved to another node
        // (a session held under the id wins over such a record, since a session can
        // move away from a node and later back to it).
        let moved = if self.local.contains_key(&key) {
            None
        } else {
            self.moved.get(&key)
        };
        let (id, key) = match moved {
            Some(moved) => {
                let route = id.route().and_then(|route| Route::new(route).ok());
                (moved.with_route(route.as_ref()), local_key(&moved))
            }
            None => (id, key),
        };
        let entry = if id.route() != our_route {
            self.take_over(&id, &key).await
        } else {
            match self.local.get(&key) {
                Some(entry) => {
                    Counters::add(&self.counters.loaded_local);
                    Some(entry)
                }
                None => self.load_remote(&id, &key).await,
            }
        };
        match entry {
            Some(entry) => self.attach(entry, id).await,
            None => Ok(self.fresh(Some(id), true)),
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
        self.inner.counters.snapshot()
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
    pub fn layer_stats(&self) -> crate::layers::LayerStats {
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
            metrics::counter!("tandem_node_coalesced_reads_total", "node" => node)
                .absolute(status.coalesced_reads);
        }
        let layers = self.config.layer.stats();
        metrics::counter!("tandem_layer_bytes_in_total").absolute(layers.bytes_in);
        metrics::counter!("tandem_layer_bytes_out_total").absolute(layers.bytes_out);
        metrics::counter!("tandem_layer_rejected_total").absolute(layers.rejected);
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.clock.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn store_key(&self, id: &SessionId) -> StoreKey {
        self.config.prefix.key(KeySpace::Session, id)
    }

    /// Sticky mode: the held session whose id is exactly `text` (route included), and
    /// that id.
    fn held_as_sent(&self, text: &str) -> Option<(Arc<LocalEntry<C>>, SessionId)> {
        if text.len() > crate::id::MAX_SESSION_ID_LEN {
            return None;
        }
        // Neither the random part nor the node id contains a dot.
        let storage = text.split_once('.').map_or(text, |(storage, _)| storage);
        let entry = self.local.get(storage)?;
        let id = {
            let state = entry.state.lock();
            let id = state.session.id();
            (id.as_str() == text).then(|| id.clone())?
        };
        let our_route = self.config.route.as_ref().map(|route| route.as_str());
        (id.route() == our_route).then_some((entry, id))
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

    /// Loads a session this server does not hold from its node, through the local
    /// tier's loader so that concurrent requests for it share one remote read.
    async fn load_remote(&self, id: &SessionId, key: &LocalKey) -> Option<Arc<LocalEntry<C>>> {
        if let Some(entry) = self.backups.unsaved(key) {
            // Swapped out for space while its backup was still pending: the pending
            // entry is newer than anything remote.
            self.local.insert(key.clone(), Arc::clone(&entry));
            Counters::add(&self.counters.loaded_local);
            return Some(entry);
        }
        if self.negative.contains_key(key) {
            Counters::add(&self.counters.negative_cache_hits);
            return None;
        }
        let node = self.node_of(id);
        if !self.store.is_available(&node) {
            Counters::add(&self.counters.remote_load_failures);
            return None;
        }
        let shared = SharedLoad {
            loading: &self.loading,
            key,
            load: Some(Arc::clone(
                self.loading.lock().entry(key.clone()).or_default(),
            )),
        };
        let load = shared.load.as_ref().expect("set above");
        let loaded = load
            .get_or_init(|| async {
                // A load that finished between this request's miss and now.
                if let Some(entry) = self.local.get(key) {
                    return Ok(entry);
                }
                match self.read_remote(&node, id).await {
                    Ok(Some(entry)) => {
                        let entry = Arc::new(entry);
                        self.local.insert(key.clone(), Arc::clone(&entry));
                        Ok(entry)
                    }
                    Ok(None) => Err(true),
                    Err(_) => Err(false),
                }
            })
            .await
            .clone();
        drop(shared);
        match loaded {
            Ok(entry) => Some(entry),
            Err(absent) => {
                if absent && !self.config.negative_cache_ttl.is_zero() {
                    self.negative.insert(key.clone(), ());
                }
                None
            }
        }
    }

    /// Reads and decodes the remote copy of `id` into a new local entry; `Ok(None)` if
    /// there is none or it cannot be decoded (counted and logged).
    #[tracing::instrument(name = "tandem.remote_load", level = "debug", skip_all, fields(session = %id.storage_id(), node = %node))]
    async fn read_remote(
        &self,
        node: &NodeId,
        id: &SessionId,
    ) -> Result<Option<LocalEntry<C>>, StoreError> {
        let started = Instant::now();
        let result = self.store.get(node, &self.store_key(id)).await;
        self.counters.histograms.remote_load(started.elapsed());
        let item = match result {
            Ok(item) => item,
            Err(error) => {
                Counters::add(&self.counters.remote_load_failures);
                tracing::debug!(session = %id.storage_id(), %error, "remote load failed");
                return Err(error);
            }
        };
        let Some(item) = item else {
            return Ok(None);
        };
        match self.decode(id, &item.value) {
            Ok(session) => {
                Counters::add(&self.counters.loaded_remote);
                tracing::debug!(
                    session = %id.storage_id(),
                    bytes = item.value.len(),
                    elapsed = ?started.elapsed(),
                    "session loaded from the remote tier"
                );
                let entry =
                    LocalEntry::new(session, true, self.config.concurrency == Concurrency::Lock);
                entry
                    .remote_digest
                    .store(digest(&item.value), Ordering::Relaxed);
                Ok(Some(entry))
            }
            Err(error) => {
                Counters::add(&self.counters.undecodable);
                tracing::warn!(
                    session = %id.storage_id(),
                    %error,
                    "stored session cannot be decoded; starting a new session"
                );
                Ok(None)
            }
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

    /// An id whose route names another server (or none): this server takes the session
    /// over. The local copy, if any, is kept only if the remote copy is still exactly
    /// what this server last wrote or read; otherwise the remote copy replaces it.
    #[tracing::instrument(name = "tandem.takeover", level = "debug", skip_all, fields(session = %id.storage_id()))]
    async fn take_over(&self, id: &SessionId, key: &LocalKey) -> Option<Arc<LocalEntry<C>>> {
        let node = self.node_of(id);
        let held = self.local.get(key);
        let remote = if self.store.is_available(&node) {
            let started = Instant::now();
            let result = self.store.get(&node, &self.store_key(id)).await;
            self.counters.histograms.remote_load(started.elapsed());
            result
        } else {
            Err(StoreError::NodeDown { node: node.clone() })
        };
        let item = match remote {
            Ok(item) => item,
            Err(error) => {
                // The local copy cannot be verified, and a stale one may be a session
                // that was logged out elsewhere: start over instead.
                Counters::add(&self.counters.remote_load_failures);
                tracing::info!(session = %id.storage_id(), %error, "takeover impossible: remote copy unreadable");
                if let Some(held) = held {
                    self.discard(key, &held);
                }
                return None;
            }
        };
        let Some(item) = item else {
            if let Some(held) = held {
                self.discard(key, &held);
            }
            return None;
        };
        let remote_digest = digest(&item.value);
        if let Some(held) = held {
            if held.remote_digest.load(Ordering::Relaxed) == remote_digest {
                Counters::add(&self.counters.loaded_local);
                return Some(held);
            }
            self.discard(key, &held);
        }
        match self.decode(id, &item.value) {
            Ok(session) => {
                let entry = Arc::new(LocalEntry::new(
                    session,
                    true,
                    self.config.concurrency == Concurrency::Lock,
                ));
                entry.remote_digest.store(remote_digest, Ordering::Relaxed);
                self.local.insert(key.clone(), Arc::clone(&entry));
                Counters::add(&self.counters.loaded_remote);
                Counters::add(&self.counters.taken_over);
                tracing::info!(
                    session = %id.storage_id(),
                    from = id.route().unwrap_or("-"),
                    "session taken over from another server"
                );
                Some(entry)
            }
            Err(error) => {
                Counters::add(&self.counters.undecodable);
                tracing::warn!(session = %id.storage_id(), %error, "stored session cannot be decoded; starting a new session");
                None
            }
        }
    }

    /// Drops a local entry that must not be used or written again.
    fn discard(&self, key: &LocalKey, entry: &Arc<LocalEntry<C>>) {
        entry.retire();
        self.backups.forget(key, entry);
        self.local.invalidate(key);
    }

    /// Prepares a request on a held session: takes its lock, rewrites its route,
    /// relocates it off a down node, and snapshots it.
    async fn attach(
        &self,
        entry: Arc<LocalEntry<C>>,
        incoming: SessionId,
    ) -> Result<RequestSession<C>, LoadError> {
        let lock = self.lock(&entry).await?;
        if entry.is_retired() {
            // The previous holder of the lock invalidated the session.
            return Ok(self.fresh(None, true));
        }
        let (snapshot, moved_from) = {
            let mut state = entry.state.lock();
            let our_route = self.config.route.as_ref().map(|r| r.as_str());
            let off_route = state.session.id().route() != our_route;
            let node_down = !self.store.is_available(self.node_ref(state.session.id()));
            // The common request needs neither change, and copies nothing here.
            let moved_from = if off_route || node_down {
                self.rewrite_id(&mut state, off_route, node_down)
            } else {
                None
            };
            (state.session.clone(), moved_from)
        };
        if let Some(old) = moved_from {
            // Rare, and boxed so that the common load's future stays small.
            Box::pin(self.relocate(&entry, &old, snapshot.id())).await;
        }
        Ok(RequestSession {
            session: snapshot,
            attached: Attached::Local(entry),
            incoming: Some(incoming),
            had_cookie: true,
            invalidated: false,
            cycle_id: false,
            _lock: lock,
            remote_lock: None,
            pattern: None,
        })
    }

    /// Gives a held session this server's route and, when its node is down, a live
    /// node. Returns the id it had if it moved to another node.
    fn rewrite_id(
        &self,
        state: &mut EntryState<C>,
        off_route: bool,
        node_down: bool,
    ) -> Option<SessionId> {
        let current = state.session.id().clone();
        let mut wanted = current.clone();
        if off_route {
            wanted = wanted.with_route(self.config.route.as_ref());
        }
        if node_down {
            match self.live_node() {
                Some(node) => wanted = wanted.with_node(&node),
                None => Counters::add(&self.counters.degraded),
            }
        }
        let moved_from = (wanted.storage_id() != current.storage_id()).then(|| current.clone());
        if wanted != current {
            state.session.set_id(wanted);
            if moved_from.is_some() {
                // The new node holds nothing yet.
                state.revision += 1;
            }
        }
        moved_from
    }

    /// Moves a held session from the down node of `old` to the node of `new`.
    async fn relocate(&self, entry: &Arc<LocalEntry<C>>, old: &SessionId, new: &SessionId) {
        Counters::add(&self.counters.relocated);
        tracing::info!(from = %old.storage_id(), to = %new.storage_id(), "session relocated off a down node");
        let old_key = local_key(old);
        let new_key = local_key(new);
        self.moved.insert(old_key.clone(), new.clone());
        // Moving back to a key it left earlier: that key no longer points away.
        self.moved.invalidate(&new_key);
        self.local.insert(new_key.clone(), Arc::clone(entry));
        self.local.invalidate(&old_key);
        self.backups.rekey(&old_key, new_key, entry);
        self.schedule_write(entry).await;
    }

    async fn lock(
        &self,
        entry: &LocalEntry<C>,
    ) -> Result<Option<tokio::sync::OwnedMutexGuard<()>>, LoadError> {
        let Some(lock) = &entry.lock else {
            return Ok(None);
        };
        if let Ok(guard) = Arc::clone(lock).try_lock_owned() {
            return Ok(Some(guard));
        }
        Box::pin(self.wait_for_lock(lock)).await
    }

    async fn wait_for_lock(
        &self,
        lock: &Arc<tokio::sync::Mutex<()>>,
    ) -> Result<Option<tokio::sync::OwnedMutexGuard<()>>, LoadError> {
        Counters::add(&self.counters.lock_waits);
        let timeout = self.config.lock_timeout;
        let started = Instant::now();
        let waited = tokio::time::timeout(timeout, Arc::clone(lock).lock_owned()).await;
        self.counters.histograms.lock_wait(started.elapsed());
        match waited {
            Ok(guard) => Ok(Some(guard)),
            Err(_) => {
                Counters::add(&self.counters.lock_timeouts);
                match self.config.lock_timeout_policy {
                    LockTimeoutPolicy::Fail => Err(LoadError::LockTimeout { waited: timeout }),
                    LockTimeoutPolicy::ProceedUnlocked => {
                        tracing::warn!(
                            ?timeout,
                            "session lock not acquired in time; proceeding unlocked"
                        );
                        Ok(None)
                    }
                }
            }
        }
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
        tracing::debug!(session = %current.id().storage_id(), ?conflicts, "concurrent change conflict");
        Err(CommitError::Conflict {
            attributes: conflicts,
        })
    }

    fn check_size(&self, session: &Session<C>) -> Result<(), CommitError> {
        let limit = self
            .config
            .max_session_size
            .unwrap_or_else(|| self.store.max_item_size());
        let size = envelope::encoded_len(session);
        if size > limit {
            Counters::add(&self.counters.too_large);
            tracing::warn!(session = %session.id().storage_id(), size, limit, "session too large; commit refused");
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

    async fn commit_new(&self, request: RequestSession<C>) -> Result<CommitOutcome, CommitError> {
        let session = match self.prepare_new(request)? {
            NewSession::Store(session) => session,
            NewSession::Discard(outcome) => return Ok(outcome),
        };
        let id = session.id().clone();
        let entry = Arc::new(LocalEntry::new(
            session,
            false,
            self.config.concurrency == Concurrency::Lock,
        ));
        self.local.insert(local_key(&id), Arc::clone(&entry));
        Counters::add(&self.counters.sessions_created);
        let backup = self.schedule_write(&entry).await;
        Ok(CommitOutcome {
            cookie: CookieUpdate::Set {
                max_inactive: entry.max_inactive(),
                id,
            },
            backup,
        })
    }

    async fn commit_existing(
        &self,
        mut entry: Arc<LocalEntry<C>>,
        request: &RequestSession<C>,
    ) -> Result<CommitOutcome, CommitError> {
        if request.invalidated {
            return Ok(self.invalidate(&entry));
        }
        // An entry retired since the request loaded it was replaced by a newer copy
        // (takeover check) or ended (invalidation): apply the changes to the current
        // copy, if there is one.
        if entry.is_retired() {
            entry = self.current_copy(entry)?;
        }
        let applied = self.apply(&entry, request)?;
        if let Some((old, new)) = &applied.rekeyed {
            self.rekey(&entry, old, new);
        } else if applied.reweigh {
            // Re-insert so that the local tier weighs the new size.
            self.local
                .insert(local_key(&applied.id), Arc::clone(&entry));
        }
        // Queueing a backup may wait for room in the queue: boxed so that the common
        // commit's future stays small (see `load_for`).
        let backup = if applied.changed {
            Box::pin(self.schedule_write(&entry)).await
        } else {
            Counters::add(&self.counters.backups_skipped_unchanged);
            // Extends the remote copy's expiry once half of its slack is used up.
            if self.touch_due(&entry) {
                Box::pin(self.backups.enqueue(&entry)).await;
            }
            BackupStatus::NotNeeded
        };
        let cookie = cookie_for(request.incoming.as_ref(), &applied.id, entry.max_inactive());
        Ok(CommitOutcome { cookie, backup })
    }

    /// The copy that replaced a retired entry: an entry retired since the request
    /// loaded it was replaced by a newer copy (takeover check) or ended (invalidation).
    fn current_copy(
        &self,
        mut entry: Arc<LocalEntry<C>>,
    ) -> Result<Arc<LocalEntry<C>>, CommitError> {
        while entry.is_retired() {
            let key = local_key(&entry.id());
            match self.local.get(&key) {
                Some(current) if !Arc::ptr_eq(&current, &entry) => entry = current,
                _ => return Err(CommitError::SessionEnded),
            }
        }
        Ok(entry)
    }

    /// Re-keys a held session whose id a commit changed from `old` to `new`.
    fn rekey(&self, entry: &Arc<LocalEntry<C>>, old: &SessionId, new: &SessionId) {
        let (old_key, new_key) = (local_key(old), local_key(new));
        self.local.insert(new_key.clone(), Arc::clone(entry));
        self.local.invalidate(&old_key);
        self.backups.rekey(&old_key, new_key, entry);
        if !self.config.negative_cache_ttl.is_zero() {
            self.negative.insert(old_key, ());
        }
        self.backups.delete(self.node_of(old), self.store_key(old));
        Counters::add(&self.counters.ids_cycled);
    }

    /// Applies a request's attribute changes to the entry's current state, checking
    /// for conflicts and the size limit first: all or nothing.
    fn apply(
        &self,
        entry: &LocalEntry<C>,
        request: &RequestSession<C>,
    ) -> Result<Applied, CommitError> {
        let mut state = entry.state.lock();
        let merge = self.config.concurrency != Concurrency::LastWriterWins;
        let changes: Vec<(&str, Option<&AttributeValue>)> = request
            .session
            .changes()
            .filter(|change| state.session.value(change.name) != change.current)
            .map(|change| (change.name, change.current))
            .collect();
        if merge {
            self.check_conflicts(&request.session, &state.session)?;
        }
        let interval_changed = request.session.is_max_inactive_modified()
            && request.session.max_inactive() != state.session.max_inactive();
        let old_id = state.session.id().clone();
        let new_id = request.cycle_id.then(|| {
            let node = self.live_node().unwrap_or_else(|| self.node_of(&old_id));
            SessionId::generate(&node, self.config.route.as_ref())
        });
        let changed = !changes.is_empty() || interval_changed || new_id.is_some();
        let mut reweigh = false;
        if changed {
            let mut next = state.session.clone();
            for (name, value) in changes {
                // Names come from a session, which validated them.
                let _ = next.apply(name, value.cloned());
            }
            if interval_changed {
                next.set_max_inactive(request.session.max_inactive());
            }
            self.check_size(&next)?;
            if let Some(id) = &new_id {
                next.set_id(id.clone());
            }
            next.touch(SystemTime::now());
            next.mark_unchanged();
            state.session = next;
            state.revision += 1;
            reweigh = entry.refresh_metadata(&state.session);
        } else {
            state.session.touch(SystemTime::now());
        }
        Ok(Applied {
            id: state.session.id().clone(),
            changed,
            reweigh,
            rekeyed: new_id.map(|new| (old_id, new)),
        })
    }

    fn invalidate(&self, entry: &Arc<LocalEntry<C>>) -> CommitOutcome {
        let id = entry.id();
        let key = local_key(&id);
        self.discard(&key, entry);
        if !self.config.negative_cache_ttl.is_zero() {
            self.negative.insert(key, ());
        }
        Counters::add(&self.counters.invalidated);
        self.backups.delete(self.node_of(&id), self.store_key(&id));
        CommitOutcome {
            cookie: CookieUpdate::Clear,
            backup: BackupStatus::NotNeeded,
        }
    }

    /// Queues (or, in sync mode or during shutdown, performs) the backup of a changed
    /// entry.
    async fn schedule_write(self: &Inner<C>, entry: &Arc<LocalEntry<C>>) -> BackupStatus {
        self.backups.mark_dirty(entry);
        let sync_timeout = match self.config.backup {
            _ if self.closing.load(Ordering::Acquire) => {
                Some(self.config.retry_interval.max(Duration::from_secs(1)))
            }
            BackupMode::Sync { timeout } => Some(timeout),
            BackupMode::Async => None,
        };
        match sync_timeout {
            Some(timeout) => match tokio::time::timeout(timeout, self.run_backup(entry)).await {
                Ok(Ok(())) => BackupStatus::Written,
                Ok(Err(error)) => BackupStatus::Failed(error),
                Err(_) => BackupStatus::Failed(format!("no answer within {timeout:?}")),
            },
            None => {
                if self.backups.enqueue(entry).await {
                    BackupStatus::Queued
                } else {
                    Counters::add(&self.counters.backups_coalesced);
                    BackupStatus::Queued
                }
            }
        }
    }

    fn touch_due(&self, entry: &LocalEntry<C>) -> bool {
        let Some(interval) = entry.max_inactive() else {
            return false;
        };
        let half_slack =
            u64::try_from((keepalive_slack(interval) / 2).as_millis()).unwrap_or(u64::MAX);
        let refreshed = entry.remote_refreshed_ms.load(Ordering::Relaxed);
        self.now_ms().saturating_sub(refreshed) >= half_slack
    }

    /// Writes the entry's newest state to its node, or touches the remote copy if it
    /// is up to date and due. Returns a description of the failure, if any.
    ///
    /// Writes of one session never overlap: two overlapping writes could reach
    /// memcached in the opposite order and leave the older state stored. The state is
    /// read under the write-order lock, so a later writer always sends a newer state.
    #[tracing::instrument(name = "tandem.backup", level = "trace", skip_all)]
    async fn run_backup(&self, entry: &Arc<LocalEntry<C>>) -> Result<(), String> {
        if self.aborted.load(Ordering::Acquire) {
            return Err("the manager was aborted".into());
        }
        if entry.is_retired() {
            return Ok(());
        }
        let _order = self.write_order(entry).lock().await;
        let job = self.backup_job(entry)?;
        if job.bytes.is_some() {
            return self.write(entry, job).await;
        }
        // Nothing newer than the remote copy. The entry may still be in the dirty set:
        // a commit marks it dirty after raising its revision, and a writer that sent
        // that revision meanwhile may have cleaned it first. Left there, it would count
        // as unsaved (and be re-queued by every sweep) for as long as it lives.
        if entry.in_dirty.load(Ordering::Acquire) {
            self.backups.clean(&local_key(&job.id), entry);
        }
        if !self.touch_due(entry) {
            return Ok(());
        }
        match self.store.touch(&job.node, &job.key, job.ttl).await {
            Ok(true) => {
                entry
                    .remote_refreshed_ms
                    .store(self.now_ms(), Ordering::Relaxed);
                Counters::add(&self.counters.touches);
                Ok(())
            }
            Ok(false) => {
                // The remote copy is gone (node restarted empty, or evicted): write it
                // again.
                Counters::add(&self.counters.touch_failures);
                entry.state.lock().backed_up = 0;
                self.backups.mark_dirty(entry);
                let job = self.backup_job(entry)?;
                self.write(entry, job).await
            }
            Err(error) => {
                Counters::add(&self.counters.touch_failures);
                Err(error.to_string())
            }
        }
    }

    /// The lock that orders the remote writes of `entry`: one of a fixed set, chosen
    /// by the entry's address, so that entries need no lock of their own.
    fn write_order(&self, entry: &Arc<LocalEntry<C>>) -> &tokio::sync::Mutex<()> {
        &self.write_order[self.write_order_index(entry)]
    }

    fn write_order_index(&self, entry: &Arc<LocalEntry<C>>) -> usize {
        let address = Arc::as_ptr(entry) as usize;
        (address >> 4) % self.write_order.len()
    }

    /// Backs up several queued entries: the writes go to each node as one pipelined
    /// batch, under the write-order locks of all of them (taken in stripe order, so
    /// two batches cannot wait for each other); touches take the single-entry path.
    async fn run_backups(&self, batch: Vec<Arc<LocalEntry<C>>>) {
        for entry in &batch {
            entry.queued.store(false, Ordering::Release);
        }
        if batch.len() == 1 || self.aborted.load(Ordering::Acquire) {
            for entry in &batch {
                let _ = self.run_backup(entry).await;
            }
            return;
        }
        // Locks are taken in index order, so two batches cannot wait for each other.
        let mut batch: Vec<(usize, Arc<LocalEntry<C>>)> = batch
            .into_iter()
            .filter(|entry| !entry.is_retired())
            .map(|entry| (self.write_order_index(&entry), entry))
            .collect();
        // Sorted by stripe, then by entry, so that an entry queued twice (a retry
        // racing a commit) is written once.
        batch.sort_by_key(|(index, entry)| (*index, Arc::as_ptr(entry) as usize));
        batch.dedup_by(|(_, a), (_, b)| Arc::ptr_eq(a, b));
        let mut later = Vec::new();
        let mut guards = Vec::new();
        let mut writes: Vec<EntryWrite<C>> = Vec::new();
        let mut last_index = None;
        for (index, entry) in batch {
            // Sessions that share a stripe are written under one guard.
            if last_index != Some(index) {
                last_index = Some(index);
                guards.push(self.write_order[index].lock().await);
            }
            match self.backup_job(&entry) {
                Ok(job) if job.bytes.is_some() => writes.push((entry, job)),
                // A touch, or nothing to send: the single-entry path decides, once the
                // guards are released.
                Ok(_) => later.push(entry),
                Err(_) => {}
            }
        }
        // Grouped by a scan rather than a map: a store has a handful of nodes, and
        // a map would hash the node id once per entry.
        let mut by_node: Vec<(NodeId, Vec<EntryWrite<C>>)> = Vec::new();
        for (entry, job) in writes {
            match by_node.iter_mut().find(|(node, _)| *node == job.node) {
                Some((_, jobs)) => jobs.push((entry, job)),
                None => by_node.push((job.node.clone(), vec![(entry, job)])),
            }
        }
        for (node, jobs) in by_node {
            let items: Vec<SetItem<'_>> = jobs
                .iter()
                .map(|(_, job)| SetItem {
                    key: &job.key,
                    value: job.bytes.as_deref().unwrap_or_default(),
                    ttl: job.ttl,
                })
                .collect();
            let started = Instant::now();
            let mut results = self.store.set_many(&node, &items).await.into_iter();
            let elapsed = started.elapsed();
            for (entry, job) in &jobs {
                // A store that answered fewer items than it was given broke the
                // trait's contract: the unanswered ones failed (counted, retried).
                let result = results.next().unwrap_or_else(|| {
                    Err(StoreError::Server {
                        node: node.clone(),
                        message: "set_many returned no result for this item".into(),
                    })
                });
                let _ = self.wrote(entry, job, result, elapsed);
            }
        }
        drop(guards);
        for entry in later {
            let _ = self.run_backup(&entry).await;
        }
    }

    /// What a backup of `entry` sends now: the sealed state if it is newer than the
    /// remote copy, and where it goes.
    fn backup_job(&self, entry: &LocalEntry<C>) -> Result<BackupJob, String> {
        let state = entry.state.lock();
        let id = state.session.id().clone();
        let bytes = if state.revision > state.backed_up {
            Some(self.seal(&state.session).inspect_err(|error| {
                Counters::add(&self.counters.backups_failed);
                tracing::warn!(session = %id.storage_id(), %error, "session could not be sealed for its backup");
            })?)
        } else {
            None
        };
        Ok(BackupJob {
            node: self.node_of(&id),
            key: self.store_key(&id),
            ttl: remote_ttl(state.session.max_inactive()),
            bytes,
            revision: state.revision,
            id,
        })
    }

    async fn write(&self, entry: &Arc<LocalEntry<C>>, job: BackupJob) -> Result<(), String> {
        let Some(bytes) = &job.bytes else {
            return Ok(());
        };
        let started = Instant::now();
        let result = self.store.set(&job.node, &job.key, bytes, job.ttl).await;
        self.wrote(entry, &job, result, started.elapsed())
    }

    /// Records the outcome of one backup write.
    fn wrote(
        &self,
        entry: &Arc<LocalEntry<C>>,
        job: &BackupJob,
        result: Result<(), StoreError>,
        elapsed: Duration,
    ) -> Result<(), String> {
        let bytes = job.bytes.as_deref().unwrap_or_default();
        self.counters.histograms.backup_write(elapsed, bytes.len());
        match result {
            Ok(()) => {
                entry
                    .remote_refreshed_ms
                    .store(self.now_ms(), Ordering::Relaxed);
                entry.remote_digest.store(digest(bytes), Ordering::Relaxed);
                let clean = {
                    let mut state = entry.state.lock();
                    state.backed_up = state.backed_up.max(job.revision);
                    state.backed_up == state.revision
                };
                if clean {
                    self.backups.clean(&local_key(&job.id), entry);
                }
                Counters::add(&self.counters.backups_written);
                tracing::trace!(
                    session = %job.id.storage_id(),
                    bytes = bytes.len(),
                    ?elapsed,
                    "backup written"
                );
                Ok(())
            }
            Err(error) => {
                Counters::add(&self.counters.backups_failed);
                if error.is_node_failure() {
                    tracing::debug!(session = %job.id.storage_id(), %error, "backup failed; will retry");
                } else {
                    tracing::warn!(session = %job.id.storage_id(), %error, "backup failed; will retry");
                }
                Err(error.to_string())
            }
        }
    }

    /// Removes a remote copy (expiry, invalidation, id change).
    async fn delete_remote(&self, node: &NodeId, key: &StoreKey) {
        match self.store.delete(node, key).await {
            Ok(_) => Counters::add(&self.counters.remote_deletes),
            Err(error) => {
                tracing::debug!(%error, key = key.as_str(), "remote delete failed; the copy expires by its TTL")
            }
        }
    }

    /// A session expired in the local tier: delete its remote copy, unless a live
    /// session has taken its key since (the cache may report an old value's expiry
    /// after the key was filled again).
    async fn expire(&self, expired: Expired<C>) {
        let Expired { key, entry } = expired;
        if entry.is_retired() || self.local.contains_key(&key) {
            return;
        }
        entry.retire();
        self.backups.forget(&key, &entry);
        Counters::add(&self.counters.expired);
        if !self.config.negative_cache_ttl.is_zero() {
            self.negative.insert(key, ());
        }
        let id = entry.id();
        tracing::debug!(session = %id.storage_id(), "session expired");
        self.delete_remote(&self.node_of(&id), &self.store_key(&id))
            .await;
    }
}

/// What a commit of a new session does.
enum NewSession<C> {
    /// Store this session.
    Store(Session<C>),
    /// Nothing to store: answer this.
    Discard(CommitOutcome),
}

/// One backup, as read from an entry under its write-order lock.
struct BackupJob {
    id: SessionId,
    node: NodeId,
    key: StoreKey,
    ttl: Ttl,
    /// The encoded state, if it is newer than what the remote tier holds.
    bytes: Option<Vec<u8>>,
    revision: u64,
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

/// The result of applying a request's changes.
struct Applied {
    id: SessionId,
    changed: bool,
    /// The session's size moved enough for the local tier to weigh it again.
    reweigh: bool,
    rekeyed: Option<(SessionId, SessionId)>,
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
mod tests;
