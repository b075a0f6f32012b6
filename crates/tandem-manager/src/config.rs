//! The manager's settings and the builder that checks them.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use tandem_core::RemoteStore;
use tandem_core::layers::{BlobLayer, NoLayer};
use tandem_core::{Clock, Codec, SystemClock};
use tandem_core::{KeyPrefix, KeySecret};
use tandem_core::{NodeId, Route};

/// Where the primary copy of a session lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// The load balancer keeps a session on one app server: the local tier holds the
    /// primary copy, the remote tier a backup.
    #[default]
    Sticky,
    /// Any request may land on any app server: the remote tier is the source of truth
    /// (a primary copy on the node the id names and a backup copy on the next node in
    /// ring order); the local copy lives only while requests of the session are in
    /// flight in this process.
    NonSticky,
}

/// Which requests take the session lock under [`Concurrency::Lock`] in non-sticky
/// mode. (In sticky mode every request of a session is serialized in process.)
#[derive(Debug, Clone, Default)]
pub enum LockScope {
    /// Every request.
    #[default]
    All,
    /// Every request until its pattern (method and path) has been seen not to change
    /// the session [`AUTO_LOCK_LEARN_AFTER`](super::AUTO_LOCK_LEARN_AFTER) times in a
    /// row; such requests then skip the lock. A request that skipped it and did change
    /// the session is still checked for conflicts, and its pattern is locked again.
    Auto,
    /// Requests whose path matches this regular expression.
    Paths(regex::Regex),
}

/// How concurrent requests of one session are reconciled at commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Concurrency {
    /// Each attribute a request set or removed is applied to the current state, so
    /// changes to different attributes by concurrent requests all survive. A change
    /// to an attribute that another request changed after this request read it is
    /// a conflict: the commit fails with
    /// [`CommitError::Conflict`](super::CommitError::Conflict) and nothing of that
    /// request is applied.
    #[default]
    Merge,
    /// Requests of one session are serialized: [`SessionManager::load`] waits until
    /// the previous request of the session committed (or was dropped), so a
    /// read-modify-write of one attribute is exact. In sticky mode the lock is
    /// in-process and costs no network operation. In non-sticky mode a `lock:` key
    /// excludes the other servers; this server's requests of the session wait in
    /// order for their turn, and the key passes from one to the next while they queue
    /// (for at most 200 ms in a row, so that other servers get their turn).
    Lock,
    /// Last writer wins: each request's changed attributes overwrite whatever is
    /// current, without conflict detection. Changes to *different* attributes still
    /// survive; a concurrent change to the *same* attribute is silently lost.
    LastWriterWins,
}

/// What a request does when it cannot take its session's lock within the lock
/// timeout ([`Concurrency::Lock`] only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LockTimeoutPolicy {
    /// [`SessionManager::load`] fails with
    /// [`LoadError::LockTimeout`](super::LoadError::LockTimeout).
    #[default]
    Fail,
    /// The request proceeds without the lock (counted and logged as a warning). Its
    /// commit is still checked for conflicts as in [`Concurrency::Merge`].
    ProceedUnlocked,
}

/// When a changed session is written to the remote tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupMode {
    /// After the commit returns, by background tasks: never on the request's latency
    /// path. Several commits of one session while its backup is queued are sent as one
    /// write of the newest state.
    Async,
    /// Inside [`SessionManager::commit`], which waits for the write at most this long.
    /// A failed or late write does not fail the commit: it is counted, logged and
    /// retried in the background.
    Sync {
        /// How long the commit waits for the write.
        timeout: Duration,
    },
}

/// Whether non-sticky mode keeps its own backup copy of a session on a second node
/// when the session's primary node replicates itself
/// ([`RemoteStore::replicates`]: a Redis Sentinel group or Cluster configured as one
/// node). Set with [`ManagerBuilder::copies_for_replicated_nodes`]; sticky mode keeps
/// one remote copy whatever this says.
///
/// ```
/// use tandem_manager::ReplicatedCopies;
///
/// assert_eq!(ReplicatedCopies::default(), ReplicatedCopies::Keep);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReplicatedCopies {
    /// A backup copy on the next node, as for any node (the default). It survives
    /// the loss of the whole replicated deployment (every server of a Sentinel group,
    /// a Cluster that lost a slot range), and it is what lets reads detect and repair
    /// an older copy that a failover of the node handed out (see
    /// [`RemoteStore::node_epoch`]). It costs one more write per changed commit, one
    /// touch per unchanged one, and for a while after a failover a read of the copy
    /// beside each read of the primary. With a single node there is no second node,
    /// and nothing is written.
    #[default]
    Keep,
    /// No backup copy for sessions whose primary node replicates itself: no backup
    /// write, touch or read; their commits report
    /// [`BackupStatus::NotNeeded`](crate::BackupStatus::NotNeeded). The node's own
    /// replication is the only redundancy: if the whole deployment is lost, so are its
    /// sessions, and a failover that lost writes hands out older copies that nothing
    /// can detect. While the node is down its sessions cannot be read (requests fail
    /// as unavailable) and a changed commit moves the session to another node, as
    /// with any node. Cheaper: one write per changed commit and one read per request.
    Skip,
}

/// How often a non-sticky request that leaves its session unchanged slides the expiry
/// of the session's backup copy (with two or more nodes). Set with
/// [`ManagerBuilder::backup_refresh`].
///
/// ```
/// use tandem_manager::BackupRefresh;
///
/// assert_eq!(BackupRefresh::default(), BackupRefresh::Throttled);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackupRefresh {
    /// At most once per an eighth of the session's interval (at most once per 5
    /// minutes) from each server (the default): a read costs one remote operation,
    /// the get-and-touch of the primary, and the touch of the backup copy is added
    /// only to the first unchanged request after the period. The backup copy gets
    /// the session's interval from that request, so it never outlives its primary
    /// (and never brings back a session that expired), and it is slid before it
    /// expires while the session is in use. The cost: a session idle for longer
    /// than its interval minus one period (28 of 30 minutes, by default) may have
    /// no backup copy left, and is lost if its primary node dies before it expires.
    #[default]
    Throttled,
    /// On every unchanged request: two remote operations per read, and a backup
    /// copy that lives exactly as long as the primary.
    EveryRead,
}

/// The settings of a [`SessionManager`], built with [`ManagerBuilder`].
#[derive(Clone)]
pub(crate) struct ManagerConfig {
    pub(crate) mode: Mode,
    pub(crate) lock_scope: LockScope,
    pub(crate) lock_ttl: Duration,
    pub(crate) max_merge_retries: u32,
    pub(crate) layer: Arc<dyn BlobLayer>,
    pub(crate) prefix: KeyPrefix,
    pub(crate) route: Option<Route>,
    pub(crate) failover: Vec<NodeId>,
    pub(crate) max_inactive: Option<Duration>,
    pub(crate) concurrency: Concurrency,
    pub(crate) lock_timeout: Duration,
    pub(crate) lock_timeout_policy: LockTimeoutPolicy,
    pub(crate) backup: BackupMode,
    pub(crate) backup_queue: usize,
    pub(crate) backup_concurrency: usize,
    pub(crate) backup_linger: Duration,
    pub(crate) retry_interval: Duration,
    pub(crate) local_capacity_bytes: u64,
    pub(crate) max_session_size: Option<usize>,
    pub(crate) negative_cache_ttl: Duration,
    pub(crate) moved_ttl: Duration,
    pub(crate) key_secret: Option<KeySecret>,
    pub(crate) peer_feed_interval: Option<Duration>,
    pub(crate) max_unsaved_bytes: Option<u64>,
    pub(crate) replicated_copies: ReplicatedCopies,
    pub(crate) backup_refresh: BackupRefresh,
    pub(crate) clock: Arc<dyn Clock>,
}

impl ManagerConfig {
    /// Whether locking is decided per request pattern (method and path), which only
    /// `Concurrency::Lock` with `LockScope::Auto` or `LockScope::Paths` does.
    pub(crate) fn locks_per_pattern(&self) -> bool {
        self.concurrency == Concurrency::Lock
            && matches!(self.lock_scope, LockScope::Auto | LockScope::Paths(_))
    }
}

impl Default for ManagerConfig {
    fn default() -> ManagerConfig {
        ManagerConfig {
            mode: Mode::Sticky,
            lock_scope: LockScope::All,
            lock_ttl: Duration::from_secs(30),
            max_merge_retries: 8,
            layer: Arc::new(NoLayer),
            prefix: KeyPrefix::new("tandem:").expect("a valid prefix"),
            route: None,
            failover: Vec::new(),
            max_inactive: Some(Duration::from_secs(30 * 60)),
            concurrency: Concurrency::Merge,
            lock_timeout: Duration::from_secs(5),
            lock_timeout_policy: LockTimeoutPolicy::Fail,
            backup: BackupMode::Async,
            backup_queue: 4096,
            backup_concurrency: 16,
            backup_linger: Duration::from_millis(1),
            retry_interval: Duration::from_secs(1),
            local_capacity_bytes: 256 * 1024 * 1024,
            max_session_size: None,
            negative_cache_ttl: Duration::from_secs(2),
            moved_ttl: Duration::from_secs(60),
            key_secret: None,
            peer_feed_interval: Some(Duration::from_secs(1)),
            max_unsaved_bytes: None,
            replicated_copies: ReplicatedCopies::Keep,
            backup_refresh: BackupRefresh::Throttled,
            clock: Arc::new(SystemClock),
        }
    }
}

/// The longest accepted negative cache TTL: unknown ids are worth remembering for
/// seconds; the cache cannot represent centuries.
const MAX_NEGATIVE_CACHE_TTL: Duration = Duration::from_secs(24 * 3600);

/// Why a [`ManagerBuilder`] could not build a manager.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// [`ManagerBuilder::build`] was called outside a tokio runtime; the manager's
    /// background tasks need one.
    #[error("the session manager must be built inside a tokio runtime")]
    NoRuntime,
    /// The remote store has no nodes.
    #[error("the remote store has no nodes")]
    NoNodes,
    /// A failover node id names no node of the store.
    #[error("failover node {node} is not a node of the remote store")]
    UnknownFailoverNode {
        /// The id.
        node: NodeId,
    },
    /// Every node of the store is a failover node.
    #[error("at least one node must be a regular (not failover) node")]
    OnlyFailoverNodes,
    /// A setting is out of its range.
    #[error("invalid setting: {0}")]
    Invalid(&'static str),
}

/// Builds a [`SessionManager`]. Start from [`SessionManager::builder`]; every setting
/// has a production default.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use std::time::Duration;
/// use tandem_core::{MemoryStore, NodeId, Route};
/// use tandem_manager::{Concurrency, SessionManager};
/// # use tandem_core::{Codec, CodecId};
/// # struct MyCodec;
/// # impl Codec for MyCodec { const ID: CodecId = CodecId::new(250); const NAME: &'static str = "mine"; }
///
/// let store = Arc::new(MemoryStore::new([NodeId::new("n1").unwrap()]));
/// let manager = SessionManager::<MyCodec>::builder(store)
///     .route(Route::new("app1").unwrap())
///     .max_inactive(Some(Duration::from_secs(900)))
///     .concurrency(Concurrency::Lock)
///     .build()
///     .unwrap();
/// # drop(manager);
/// # });
/// ```
pub struct ManagerBuilder<C> {
    store: Arc<dyn RemoteStore>,
    config: ManagerConfig,
    codec: PhantomData<fn() -> C>,
}

impl<C: Codec> ManagerBuilder<C> {
    pub(crate) fn new(store: Arc<dyn RemoteStore>) -> ManagerBuilder<C> {
        ManagerBuilder {
            store,
            config: ManagerConfig::default(),
            codec: PhantomData,
        }
    }

    /// Sticky (default) or non-sticky mode.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.config.mode = mode;
        self
    }

    /// Which requests take the remote session lock in non-sticky mode under
    /// [`Concurrency::Lock`] (default: all).
    pub fn lock_scope(mut self, scope: LockScope) -> Self {
        self.config.lock_scope = scope;
        self
    }

    /// How long a remote session lock lives if its holder never releases it (a crashed
    /// server), in non-sticky mode (default 30 s).
    pub fn lock_ttl(mut self, ttl: Duration) -> Self {
        self.config.lock_ttl = ttl;
        self
    }

    /// How often a non-sticky commit reloads and re-applies its changes after a
    /// compare-and-swap conflict before it gives up with
    /// [`CommitError::RetriesExhausted`](super::CommitError::RetriesExhausted)
    /// (default 8). After the n-th lost compare-and-swap it waits a random time of up
    /// to 2^n ms (at most 32 ms) before reloading.
    pub fn max_merge_retries(mut self, retries: u32) -> Self {
        self.config.max_merge_retries = retries;
        self
    }

    /// What happens to stored bytes between the envelope and the remote tier:
    /// compression, encryption at rest, or a stack of them (default: stored as they
    /// are). Bytes stored before a layer was configured still load.
    pub fn layer(mut self, layer: impl BlobLayer) -> Self {
        self.config.layer = Arc::new(layer);
        self
    }

    /// The prefix of every storage key (default `tandem:`), so that several
    /// applications can share one memcached.
    pub fn key_prefix(mut self, prefix: KeyPrefix) -> Self {
        self.config.prefix = prefix;
        self
    }

    /// This app server's route (like Tomcat's `jvmRoute`), appended to session ids so
    /// that a load balancer can keep a session on its server. An id that arrives with
    /// another route means this server takes the session over. Default: none.
    pub fn route(mut self, route: Route) -> Self {
        self.config.route = Some(route);
        self
    }

    /// Nodes used for new and relocated sessions only while every other node is down.
    pub fn failover_nodes(mut self, nodes: impl IntoIterator<Item = NodeId>) -> Self {
        self.config.failover = nodes.into_iter().collect();
        self
    }

    /// The max inactive interval of new sessions (default 30 minutes); `None` or zero
    /// means they never expire.
    pub fn max_inactive(mut self, interval: Option<Duration>) -> Self {
        self.config.max_inactive = interval.filter(|interval| !interval.is_zero());
        self
    }

    /// How concurrent requests of one session are reconciled (default
    /// [`Concurrency::Merge`]).
    pub fn concurrency(mut self, concurrency: Concurrency) -> Self {
        self.config.concurrency = concurrency;
        self
    }

    /// How long a request waits for its session's lock under [`Concurrency::Lock`]
    /// (default 5 s), and what happens when the wait is over.
    pub fn lock_timeout(mut self, timeout: Duration, policy: LockTimeoutPolicy) -> Self {
        self.config.lock_timeout = timeout;
        self.config.lock_timeout_policy = policy;
        self
    }

    /// When changed sessions are written to the remote tier (default
    /// [`BackupMode::Async`]).
    pub fn backup(mut self, mode: BackupMode) -> Self {
        self.config.backup = mode;
        self
    }

    /// How many backups may wait for a background writer (default 4096). A commit that
    /// finds the queue full waits for room: back pressure instead of dropped backups.
    pub fn backup_queue(mut self, capacity: usize) -> Self {
        self.config.backup_queue = capacity;
        self
    }

    /// How many remote writes the background writers run at once (default 16).
    pub fn backup_concurrency(mut self, writers: usize) -> Self {
        self.config.backup_concurrency = writers;
        self
    }

    /// How long a background writer waits, after taking the first queued backup, for
    /// more to send with it (default 1 ms; zero: send what is queued at once). It does
    /// not wait when a full batch is already queued.
    ///
    /// Queued backups go to each node as one pipelined batch (up to 64 sessions), so
    /// under a steady stream of changes a short wait turns many round trips into one
    /// and gives repeated changes of one session more time to coalesce. It delays
    /// when an asynchronous backup lands by at most this long (plus the timer's
    /// resolution, about a millisecond); synchronous backups do not wait.
    pub fn backup_linger(mut self, linger: Duration) -> Self {
        self.config.backup_linger = linger;
        self
    }

    /// How often failed backups are retried while their node is available (default
    /// 1 s). Also the period of the local tier's expiry sweep.
    pub fn retry_interval(mut self, interval: Duration) -> Self {
        self.config.retry_interval = interval;
        self
    }

    /// The local tier's capacity in bytes of session data (default 256 MiB). The
    /// least recently used sessions beyond it are swapped out: dropped locally, still
    /// loadable from the remote tier.
    pub fn local_capacity_bytes(mut self, bytes: u64) -> Self {
        self.config.local_capacity_bytes = bytes;
        self
    }

    /// The largest stored session in bytes (default: the store's item limit). A
    /// commit of a larger session fails with
    /// [`CommitError::TooLarge`](super::CommitError::TooLarge) and changes nothing.
    pub fn max_session_size(mut self, bytes: usize) -> Self {
        self.config.max_session_size = Some(bytes);
        self
    }

    /// How long an id that the remote tier does not know is answered as unknown
    /// without asking again (default 2 s), so that floods of forged ids stay off the
    /// remote tier. Zero turns it off.
    pub fn negative_cache_ttl(mut self, ttl: Duration) -> Self {
        self.config.negative_cache_ttl = ttl;
        self
    }

    /// Stores sessions under keys derived from `secret` instead of their ids, so that
    /// read access to the remote tier (memcached has no access control) does not
    /// yield working session cookies; see [`KeySecret`]. Every server of a deployment
    /// needs the same secret. Turning it on, or changing it, makes every session
    /// stored before unreachable: each user starts a new session on their next
    /// request (as after a logout). Default: keys are the ids themselves.
    pub fn storage_key_secret(mut self, secret: KeySecret) -> Self {
        self.config.key_secret = Some(secret);
        self
    }

    /// Sticky mode: how often this server reads the feed in which the other servers
    /// announce the sessions they took over, reloaded from the remote tier, cycled or
    /// ended (default 1 s; `None` turns it off, for a deployment of one server).
    ///
    /// A server drops its local copy of a session announced there, so that a copy
    /// left behind on a server the session moved away from is not served after the
    /// session was taken over, logged out or given a new id elsewhere: within this
    /// interval plus one read of the feed (and the clock difference between the
    /// servers, up to 2 s). The feed costs one remote read per interval per server,
    /// however many sessions it holds, and one write per announcement.
    pub fn peer_feed_interval(mut self, interval: Option<Duration>) -> Self {
        self.config.peer_feed_interval = interval;
        self
    }

    /// Sticky mode: the most session data, in bytes, that may wait for its backup
    /// (default: the local tier's capacity, at least 64 MiB). While memcached is unreachable, changed
    /// sessions wait in memory, including those the local tier swapped out for
    /// space; past this much, a commit that would add another changed session fails
    /// with [`CommitError::Unavailable`](super::CommitError::Unavailable) (a web
    /// layer answers 503) and is counted in `unsaved_limit_hits`, instead of letting
    /// memory grow without bound. Sessions already waiting keep changing freely.
    pub fn max_unsaved_bytes(mut self, bytes: u64) -> Self {
        self.config.max_unsaved_bytes = Some(bytes);
        self
    }

    /// Non-sticky mode: whether a session whose primary node replicates itself (a
    /// Redis Sentinel group or Cluster as one node) still gets its own backup copy on
    /// the next node. [`ReplicatedCopies::Keep`] (the default, the safer choice) or
    /// [`ReplicatedCopies::Skip`] (cheaper; the node's replication is the only
    /// redundancy, and older copies after its failovers go undetected); the enum
    /// describes the trade-off. Sessions on nodes that do not replicate themselves
    /// always get a backup copy.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// use std::sync::Arc;
    /// use tandem_core::{MemoryStore, NodeId};
    /// use tandem_manager::{Mode, ReplicatedCopies, SessionManager};
    /// # use tandem_core::{Codec, CodecId};
    /// # struct MyCodec;
    /// # impl Codec for MyCodec { const ID: CodecId = CodecId::new(250); const NAME: &'static str = "mine"; }
    ///
    /// let nodes = [NodeId::new("r1").unwrap(), NodeId::new("r2").unwrap()];
    /// let store = Arc::new(MemoryStore::new(nodes).with_replication(true));
    /// let manager = SessionManager::<MyCodec>::builder(store)
    ///     .mode(Mode::NonSticky)
    ///     .copies_for_replicated_nodes(ReplicatedCopies::Skip)
    ///     .build()
    ///     .unwrap();
    /// # drop(manager);
    /// # });
    /// ```
    pub fn copies_for_replicated_nodes(mut self, copies: ReplicatedCopies) -> Self {
        self.config.replicated_copies = copies;
        self
    }

    /// How often a non-sticky request that leaves its session unchanged slides the
    /// expiry of its backup copy (default [`BackupRefresh::Throttled`]: at most once
    /// per an eighth of the session's interval from each server). Sticky mode slides
    /// its remote copy once per [`keepalive_slack`](crate::keepalive_slack) whatever
    /// this says.
    pub fn backup_refresh(mut self, refresh: BackupRefresh) -> Self {
        self.config.backup_refresh = refresh;
        self
    }

    /// The clock the manager reads time from (the system clock by default). Tests
    /// give [`TokioClock`](crate::TokioClock) to run expiry, keep-alive, lock renewal
    /// and backoff on tokio's paused time; give the same clock to every manager of
    /// the test, and to a [`MemoryStore`](tandem_core::MemoryStore) with
    /// [`with_clock`](tandem_core::MemoryStore::with_clock).
    ///
    /// The local tier's own housekeeping, and the few seconds for which the manager
    /// remembers ids it ended or found unknown, count on the system clock (the cache
    /// library's clock cannot be replaced); a held session is still expired by this
    /// clock when a request finds it.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.config.clock = clock;
        self
    }

    /// The store, the checked configuration and the runtime to start on: what
    /// [`build`](Self::build) starts the manager with.
    pub(crate) fn validated(
        self,
    ) -> Result<(Arc<dyn RemoteStore>, ManagerConfig, tokio::runtime::Handle), ConfigError> {
        let ManagerBuilder { store, config, .. } = self;
        let nodes = store.nodes();
        if nodes.is_empty() {
            return Err(ConfigError::NoNodes);
        }
        if let Some(node) = config.failover.iter().find(|node| !nodes.contains(node)) {
            return Err(ConfigError::UnknownFailoverNode { node: node.clone() });
        }
        if nodes.iter().all(|node| config.failover.contains(node)) {
            return Err(ConfigError::OnlyFailoverNodes);
        }
        if config.backup_queue == 0 {
            return Err(ConfigError::Invalid("the backup queue needs room for one"));
        }
        if config.backup_concurrency == 0 {
            return Err(ConfigError::Invalid(
                "backup concurrency must be at least 1",
            ));
        }
        if config.retry_interval.is_zero() {
            return Err(ConfigError::Invalid("the retry interval must not be zero"));
        }
        if let BackupMode::Sync { timeout } = config.backup
            && timeout.is_zero()
        {
            return Err(ConfigError::Invalid(
                "the sync backup timeout must not be zero",
            ));
        }
        if config.mode == Mode::NonSticky && config.lock_ttl < Duration::from_secs(1) {
            return Err(ConfigError::Invalid(
                "the lock TTL must be at least one second",
            ));
        }
        if config.concurrency == Concurrency::Lock && config.lock_timeout.is_zero() {
            return Err(ConfigError::Invalid("the lock timeout must not be zero"));
        }
        if config.negative_cache_ttl > MAX_NEGATIVE_CACHE_TTL {
            return Err(ConfigError::Invalid(
                "the negative cache TTL must be at most a day",
            ));
        }
        if config
            .peer_feed_interval
            .is_some_and(|interval| interval.is_zero())
        {
            return Err(ConfigError::Invalid(
                "the peer feed interval must not be zero (None turns the feed off)",
            ));
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ConfigError::NoRuntime)?;
        Ok((store, config, runtime))
    }
}
