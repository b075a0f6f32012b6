//! Non-sticky mode: the remote tier is the source of truth.
//!
//! A session's *primary* copy lives on the node its id names, a *backup* copy (under
//! the `bak:` key) on the first available node after it in ring order (the regular
//! nodes in configuration order, then the failover nodes). A request reads the primary
//! with get-and-touch (one round trip, which also slides its expiry), falling back to
//! the backup; requests of one session in flight in this process share one *transit*
//! copy, dropped when the last of them ends. A changed session is written to the
//! primary with compare-and-swap on the request path (reloading and re-applying the
//! request's attribute changes on a conflict), and to the backup in the background.
//! A backup copy that could not be written is copied again from the primary later
//! (see [`repair`]).
//!
//! When the primary node is down, the session moves to the node that holds its backup
//! (the first available node after the primary): every server picks the same node, so
//! concurrent requests arriving at different servers agree on the new id.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;

use crate::codec::Codec;
use crate::id::{NodeId, SessionId};
use crate::key::{KeySpace, StoreKey};
use crate::session::Session;
use crate::store::{AddOutcome, CasOutcome, CasToken, RemoteStore, StoreError, Ttl};

use super::config::{BackupMode, Concurrency, LockScope, LockTimeoutPolicy};
use super::entry::{LocalKey, local_key};
use super::request::{Attached, RequestSession};
use super::stats::Counters;
use super::{
    BackupStatus, CommitError, CommitOutcome, CookieUpdate, Inner, LoadError, NewSession,
    RequestInfo,
};
use repair::Stale;

/// How long a primary read may take before the backup copy is read alongside it.
/// memcached answers in well under a millisecond; a read this slow is likely hung.
const HEDGE_DELAY: Duration = Duration::from_millis(20);

/// How many requests of a pattern in a row must leave the session unchanged before
/// [`LockScope::Auto`] stops locking that pattern.
pub const AUTO_LOCK_LEARN_AFTER: u32 = 5;

/// The TTL of both remote copies of a non-sticky session: its interval, plus a second
/// for memcached's once-a-second expiry clock. Every load slides it (get-and-touch).
pub(super) fn copy_ttl(max_inactive: Option<Duration>) -> Ttl {
    match max_inactive {
        Some(interval) => Ttl::After(interval.saturating_add(Duration::from_secs(1))),
        None => Ttl::Never,
    }
}

/// The longest a commit that lost a compare-and-swap waits before it reloads.
const MAX_MERGE_BACKOFF: Duration = Duration::from_millis(32);

/// How long a commit waits after losing its `attempt`-th compare-and-swap (from 1)
/// before it reloads and applies its changes again: a random time up to 2^attempt
/// ms, at most [`MAX_MERGE_BACKOFF`]. Without it, a server whose commit needs two
/// round trips (reload, then write) loses every race against another server's
/// back-to-back writes of the same session, and runs out of retries before that
/// burst ends; waiting a growing, random while lets it in after the burst.
fn merge_backoff(attempt: u32) -> Duration {
    let ceiling = Duration::from_millis(1u64 << attempt.min(16)).min(MAX_MERGE_BACKOFF);
    ceiling.mul_f64(rand::random::<f64>())
}

/// The transit copies of the sessions with requests in flight, by local key. Entries
/// are weak: a transit copy lives exactly as long as the requests holding it.
pub(super) type TransitMap<C> = Mutex<HashMap<LocalKey, Weak<Transit<C>>>>;

/// One session's transit copy, shared by its in-flight requests in this process.
pub(crate) struct Transit<C> {
    key: LocalKey,
    /// `None` until loaded (or after the session ended). An async lock: the first
    /// request loads while the others wait for its result, and commits of the session
    /// in this process run one after another.
    state: tokio::sync::Mutex<Option<TransitState<C>>>,
    /// Serializes this process's requests of the session under `Concurrency::Lock`
    /// before they take the remote lock.
    lock: Arc<tokio::sync::Mutex<()>>,
}

struct TransitState<C> {
    /// The newest state this process knows, without recorded changes.
    session: Session<C>,
    /// The primary copy's CAS token when `session` was read from it; `None` after this
    /// process wrote it (the token changed) or when the primary has no copy.
    cas: Option<CasToken>,
    /// Whether the primary node holds this session under its current id; if not (it
    /// was restored from the backup, or relocated), the next commit writes it even if
    /// nothing changed.
    on_primary: bool,
}

/// A request's hold on a transit copy. The last one dropped removes the copy.
pub(crate) struct TransitRef<C> {
    transit: Arc<Transit<C>>,
    map: Arc<TransitMap<C>>,
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

/// A remote session lock held by a request (a `lock:` key added with a TTL). Released
/// at commit, or in the background when the request is dropped without a commit.
pub(crate) struct RemoteLock {
    store: Arc<dyn RemoteStore>,
    node: NodeId,
    key: StoreKey,
    released: bool,
}

impl RemoteLock {
    fn release_in_background(mut self) {
        self.released = true;
        let (store, node, key) = (Arc::clone(&self.store), self.node.clone(), self.key.clone());
        spawn_detached(async move {
            if let Err(error) = store.delete(&node, &key).await {
                tracing::debug!(%error, "session lock not released; it expires by its TTL");
            }
        });
    }
}

impl Drop for RemoteLock {
    fn drop(&mut self) {
        if !self.released {
            let (store, node, key) = (Arc::clone(&self.store), self.node.clone(), self.key.clone());
            spawn_detached(async move {
                let _ = store.delete(&node, &key).await;
            });
        }
    }
}

/// Runs `task` on the current tokio runtime, if there is one (a drop outside a runtime
/// leaves the lock to its TTL).
fn spawn_detached(task: impl std::future::Future<Output = ()> + Send + 'static) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(task);
    }
}

/// What a remote read found.
struct Loaded<C> {
    session: Session<C>,
    cas: Option<CasToken>,
    on_primary: bool,
}

impl<C: Codec> Inner<C> {
    /// The ring of nodes: regular nodes in configuration order, then failover nodes.
    fn ring(&self) -> impl Iterator<Item = &NodeId> + Clone {
        self.regular.iter().chain(&self.failover)
    }

    /// The nodes after `node` in ring order, wrapping around, without `node` itself.
    /// Read on every load: walks the ring in place rather than collecting it.
    fn ring_after(&self, node: &NodeId) -> impl Iterator<Item = &NodeId> + '_ {
        let len = self.ring().count();
        let start = self.ring().position(|candidate| candidate == node);
        start
            .into_iter()
            .flat_map(move |start| self.ring().cycle().skip(start + 1).take(len - 1))
    }

    /// The first available node after `node` in ring order (never `node` itself): where
    /// `node`'s sessions keep their backup, and where they move when `node` is down.
    pub(super) fn successor(&self, node: &NodeId) -> Option<NodeId> {
        self.ring_after(node)
            .find(|candidate| self.store.is_available(candidate))
            .cloned()
    }

    /// The node right after `node` in ring order, available or not: where `node`'s
    /// sessions keep their backup copy whenever it answers.
    pub(super) fn natural_successor(&self, node: &NodeId) -> Option<&NodeId> {
        self.ring_after(node).next()
    }

    fn backup_key(&self, id: &SessionId) -> StoreKey {
        self.config.prefix.key(KeySpace::Backup, id)
    }

    /// The transit copy of `key`, shared with the requests of the session in flight.
    fn transit(self: &Arc<Self>, key: &LocalKey) -> TransitRef<C> {
        let mut map = self.transit.lock();
        let transit = match map.get(key).and_then(Weak::upgrade) {
            Some(transit) => transit,
            None => {
                let transit = Arc::new(Transit {
                    key: key.clone(),
                    state: tokio::sync::Mutex::new(None),
                    lock: Arc::new(tokio::sync::Mutex::new(())),
                });
                map.insert(key.clone(), Arc::downgrade(&transit));
                transit
            }
        };
        TransitRef {
            transit,
            map: Arc::clone(&self.transit),
        }
    }

    /// Whether this request takes the session lock.
    fn needs_lock(&self, pattern: Option<&str>) -> bool {
        if self.config.concurrency != Concurrency::Lock {
            return false;
        }
        match (&self.config.lock_scope, pattern) {
            (LockScope::All, _) | (_, None) => true,
            (LockScope::Auto, Some(pattern)) => {
                self.read_only_streaks.get(pattern).unwrap_or(0) < AUTO_LOCK_LEARN_AFTER
            }
            (LockScope::Paths(paths), Some(pattern)) => {
                let path = pattern.split_once(' ').map_or(pattern, |(_, path)| path);
                paths.is_match(path)
            }
        }
    }

    /// Loads a session in non-sticky mode.
    pub(super) async fn ns_load(
        self: &Arc<Self>,
        incoming: Option<&str>,
        request: Option<&RequestInfo<'_>>,
    ) -> Result<RequestSession<C>, LoadError> {
        let Some(id) = incoming.and_then(|text| self.parse_incoming(text)) else {
            return Ok(self.fresh(None, incoming.is_some()));
        };
        let key = local_key(&id);
        if self.negative.contains_key(&key) {
            Counters::add(&self.counters.negative_cache_hits);
            return Ok(self.fresh(Some(id), true));
        }
        // Only the lock scopes that decide per request pattern need it.
        let pattern: Option<Box<str>> = request
            .filter(|_| self.config.locks_per_pattern())
            .map(|info| format!("{} {}", info.method, info.path).into());
        let transit = self.transit(&key);
        let mut local_lock = None;
        let mut remote_lock = None;
        if self.needs_lock(pattern.as_deref()) {
            local_lock = self.lock_transit(&transit.transit).await?;
            remote_lock = self.lock_remote(&id).await?;
        }
        let mut state = transit.transit.state.lock().await;
        // Under the lock the state must come from the remote tier: another server may
        // have changed the session since this process read it.
        if state.is_none() || remote_lock.is_some() {
            match self.ns_read(&id).await? {
                Some(loaded) => {
                    *state = Some(TransitState {
                        session: loaded.session,
                        cas: loaded.cas,
                        on_primary: loaded.on_primary,
                    });
                }
                None => {
                    *state = None;
                    if !self.config.negative_cache_ttl.is_zero() {
                        self.negative.insert(key, ());
                    }
                    return Ok(self.fresh(Some(id), true));
                }
            }
        } else {
            Counters::add(&self.counters.loaded_local);
        }
        let Some(current) = state.as_ref() else {
            return Ok(self.fresh(Some(id), true));
        };
        let snapshot = current.session.clone();
        drop(state);
        Ok(RequestSession {
            session: snapshot,
            attached: Attached::Transit(transit),
            incoming: Some(id),
            had_cookie: true,
            invalidated: false,
            cycle_id: false,
            _lock: local_lock,
            remote_lock,
            pattern,
        })
    }

    async fn lock_transit(
        &self,
        transit: &Transit<C>,
    ) -> Result<Option<tokio::sync::OwnedMutexGuard<()>>, LoadError> {
        if let Ok(guard) = Arc::clone(&transit.lock).try_lock_owned() {
            return Ok(Some(guard));
        }
        Counters::add(&self.counters.lock_waits);
        let timeout = self.config.lock_timeout;
        let started = Instant::now();
        let waited = tokio::time::timeout(timeout, Arc::clone(&transit.lock).lock_owned()).await;
        self.counters.histograms.lock_wait(started.elapsed());
        match waited {
            Ok(guard) => Ok(Some(guard)),
            Err(_) => self.lock_timed_out(timeout).map(|()| None),
        }
    }

    /// Takes the session's `lock:` key on its primary node (or where the session moves
    /// if the primary is down) with `add`, retrying with exponential backoff until the
    /// lock timeout.
    #[tracing::instrument(name = "tandem.lock", level = "debug", skip_all, fields(session = %id.storage_id()))]
    async fn lock_remote(&self, id: &SessionId) -> Result<Option<RemoteLock>, LoadError> {
        let primary = self.node_of(id);
        let node = if self.store.is_available(&primary) {
            primary
        } else {
            match self.successor(&primary) {
                Some(node) => node,
                None => return Err(self.unavailable_load()),
            }
        };
        let key = self.config.prefix.key(KeySpace::Lock, id);
        let ttl = Ttl::After(self.config.lock_ttl);
        let started = Instant::now();
        let mut backoff = Duration::from_millis(2);
        let mut waited = false;
        loop {
            match self.store.add(&node, &key, b"1", ttl).await {
                Ok(AddOutcome::Stored) => {
                    if waited {
                        self.counters.histograms.lock_wait(started.elapsed());
                    }
                    return Ok(Some(RemoteLock {
                        store: Arc::clone(&self.store),
                        node,
                        key,
                        released: false,
                    }));
                }
                Ok(AddOutcome::Exists) => {
                    if !waited {
                        waited = true;
                        Counters::add(&self.counters.lock_waits);
                    }
                }
                Err(error) if error.is_node_failure() => {
                    tracing::debug!(%error, "session lock: node failed");
                }
                Err(error) => tracing::warn!(%error, "session lock refused"),
            }
            let elapsed = started.elapsed();
            if elapsed >= self.config.lock_timeout {
                return self.lock_timed_out(elapsed).map(|()| None);
            }
            tokio::time::sleep(backoff.min(self.config.lock_timeout - elapsed)).await;
            backoff = (backoff * 2).min(Duration::from_millis(100));
        }
    }

    /// A lock not acquired in time: an error, or on without the lock (counted, warned).
    fn lock_timed_out(&self, waited: Duration) -> Result<(), LoadError> {
        Counters::add(&self.counters.lock_timeouts);
        match self.config.lock_timeout_policy {
            LockTimeoutPolicy::Fail => Err(LoadError::LockTimeout { waited }),
            LockTimeoutPolicy::ProceedUnlocked => {
                tracing::warn!(
                    ?waited,
                    "session lock not acquired in time; proceeding unlocked"
                );
                Ok(())
            }
        }
    }

    fn unavailable_load(&self) -> LoadError {
        Counters::add(&self.counters.unavailable);
        LoadError::Unavailable
    }

    /// Reads the session: the primary with get-and-touch, else the backup copy. When
    /// the primary node is down the session moves to the backup's node (its id
    /// changes); when the primary just lacks the copy (restarted empty), the next commit
    /// writes it back.
    #[tracing::instrument(name = "tandem.remote_load", level = "debug", skip_all, fields(session = %id.storage_id()))]
    async fn ns_read(&self, id: &SessionId) -> Result<Option<Loaded<C>>, LoadError> {
        let primary = self.node_of(id);
        let backup_node = self.successor(&primary);
        let ttl = copy_ttl(self.config.max_inactive);
        let primary_key = self.store_key(id);
        let read_backup = || async {
            match &backup_node {
                Some(node) => Some(self.store.get(node, &self.backup_key(id)).await),
                None => None,
            }
        };
        let started = Instant::now();
        let (primary_result, prefetched) = if !self.store.is_available(&primary) {
            (None, None)
        } else if backup_node.is_none() {
            // No backup copy to hedge with.
            (
                Some(self.store.get_and_touch(&primary, &primary_key, ttl).await),
                None,
            )
        } else {
            let primary_read = self.store.get_and_touch(&primary, &primary_key, ttl);
            tokio::pin!(primary_read);
            tokio::select! {
                result = &mut primary_read => (Some(result), None),
                () = tokio::time::sleep(HEDGE_DELAY) => {
                    // The primary is slow, maybe hung: read the backup meanwhile, so
                    // that a hung primary costs one operation timeout, not two. The
                    // backup is used only if the primary fails: a slow primary may
                    // still hold a newer state.
                    let (result, backup) = tokio::join!(primary_read, read_backup());
                    (Some(result), Some(backup))
                }
            }
        };
        self.counters.histograms.remote_load(started.elapsed());
        let primary_down = match primary_result {
            Some(Ok(Some(item))) => {
                return Ok(self.ns_decode(id, &item.value).map(|session| {
                    self.slide_custom_interval(&primary, id, &session);
                    Counters::add(&self.counters.loaded_remote);
                    Loaded {
                        session,
                        cas: Some(item.cas),
                        on_primary: true,
                    }
                }));
            }
            Some(Ok(None)) => false,
            Some(Err(error)) => {
                Counters::add(&self.counters.remote_load_failures);
                tracing::debug!(session = %id.storage_id(), %error, "primary read failed");
                true
            }
            None => true,
        };
        let backup_result = match prefetched {
            Some(result) => result,
            None => read_backup().await,
        };
        let (Some(backup_result), Some(backup_node)) = (backup_result, &backup_node) else {
            return if primary_down {
                Err(self.unavailable_load())
            } else {
                Ok(None)
            };
        };
        let item = match backup_result {
            Ok(Some(item)) => item,
            Ok(None) => {
                return if primary_down {
                    // Neither copy is reachable: the session may live on the down node.
                    Err(self.unavailable_load())
                } else {
                    Ok(None)
                };
            }
            Err(error) => {
                Counters::add(&self.counters.remote_load_failures);
                tracing::debug!(session = %id.storage_id(), %error, "backup read failed");
                return Err(self.unavailable_load());
            }
        };
        let Some(mut session) = self.ns_decode(id, &item.value) else {
            return Ok(None);
        };
        Counters::add(&self.counters.loaded_remote);
        if primary_down {
            let moved = id.with_node(backup_node);
            tracing::info!(from = %id.storage_id(), to = %moved.storage_id(), "session relocated off a down node");
            Counters::add(&self.counters.relocated);
            session.set_id(moved);
        }
        Ok(Some(Loaded {
            session,
            cas: None,
            on_primary: false,
        }))
    }

    fn ns_decode(&self, id: &SessionId, bytes: &[u8]) -> Option<Session<C>> {
        match self.decode(id, bytes) {
            Ok(session) => Some(session),
            Err(error) => {
                Counters::add(&self.counters.undecodable);
                tracing::warn!(session = %id.storage_id(), %error, "stored session cannot be decoded; starting a new session");
                None
            }
        }
    }

    /// The load slid the primary's expiry by the default interval; a session with an
    /// interval of its own gets the right one in the background.
    fn slide_custom_interval(&self, primary: &NodeId, id: &SessionId, session: &Session<C>) {
        if session.max_inactive() == self.config.max_inactive {
            return;
        }
        let (store, node, key) = (Arc::clone(&self.store), primary.clone(), self.store_key(id));
        let ttl = copy_ttl(session.max_inactive());
        spawn_detached(async move {
            let _ = store.touch(&node, &key, ttl).await;
        });
    }

    /// Commits a request of a non-sticky session.
    pub(super) async fn ns_commit(
        self: &Arc<Self>,
        transit: TransitRef<C>,
        mut request: RequestSession<C>,
    ) -> Result<CommitOutcome, CommitError> {
        let remote_lock = request.remote_lock.take();
        let pattern = request.pattern.take();
        let modified = request.session.is_modified() || request.cycle_id || request.invalidated;
        let result = self.ns_commit_locked(&transit.transit, &request).await;
        if let Some(lock) = remote_lock {
            lock.release_in_background();
        }
        if let (LockScope::Auto, Some(pattern)) = (&self.config.lock_scope, pattern) {
            let streak = if modified {
                0
            } else {
                self.read_only_streaks
                    .get(&pattern)
                    .unwrap_or(0)
                    .saturating_add(1)
            };
            self.read_only_streaks.insert(pattern, streak);
        }
        result
    }

    async fn ns_commit_locked(
        self: &Arc<Self>,
        transit: &Transit<C>,
        request: &RequestSession<C>,
    ) -> Result<CommitOutcome, CommitError> {
        let mut guard = transit.state.lock().await;
        let Some(state) = guard.as_mut() else {
            return Err(CommitError::SessionEnded);
        };
        if request.invalidated {
            let id = state.session.id().clone();
            *guard = None;
            drop(guard);
            return Ok(self.ns_invalidate(&id).await);
        }
        let interval_changed = request.session.is_max_inactive_modified()
            && request.session.max_inactive() != state.session.max_inactive();
        if !request.session.is_modified()
            && !interval_changed
            && !request.cycle_id
            && state.on_primary
        {
            Counters::add(&self.counters.backups_skipped_unchanged);
            self.ns_refresh_backup(state.session.clone());
            return Ok(CommitOutcome {
                cookie: super::cookie_for(
                    request.incoming.as_ref(),
                    state.session.id(),
                    state.session.max_inactive(),
                ),
                backup: BackupStatus::NotNeeded,
            });
        }
        let merge = self.config.concurrency != Concurrency::LastWriterWins;
        let mut new_id = None;
        let mut relocated = false;
        let mut lost_races = 0;
        for attempt in 0..=self.config.max_merge_retries {
            if attempt > 0 {
                Counters::add(&self.counters.merge_retries);
            }
            if merge {
                self.check_conflicts(&request.session, &state.session)?;
            }
            let mut next = state.session.clone();
            for change in request.session.changes() {
                let _ = next.apply(change.name, change.current.cloned());
            }
            if interval_changed {
                next.set_max_inactive(request.session.max_inactive());
            }
            self.check_size(&next)?;
            if request.cycle_id && new_id.is_none() {
                new_id = Some(SessionId::generate(&self.node_of(next.id()), None));
            }
            if let Some(id) = &new_id {
                next.set_id(id.clone());
            }
            next.touch(SystemTime::now());
            next.mark_unchanged();
            let id = next.id().clone();
            let node = self.node_of(&id);
            let bytes = self
                .seal(&next)
                .map_err(|reason| CommitError::Encoding { reason })?;
            let ttl = copy_ttl(next.max_inactive());
            let key = self.store_key(&id);
            // Whether another writer got in first (rather than the copy vanishing, or
            // this process not knowing its token): only a race lost is waited out.
            let mut lost_race = false;
            let written = if new_id.is_some() || !state.on_primary {
                self.store
                    .add(&node, &key, &bytes, ttl)
                    .await
                    .map(|outcome| {
                        lost_race = outcome == AddOutcome::Exists;
                        outcome == AddOutcome::Stored
                    })
            } else if let Some(cas) = state.cas {
                self.store
                    .cas(&node, &key, &bytes, ttl, cas)
                    .await
                    .map(|outcome| {
                        lost_race = outcome == CasOutcome::Conflict;
                        outcome == CasOutcome::Stored
                    })
            } else {
                // This process wrote the session last, so its CAS token is unknown:
                // read it (with whatever others wrote since) and apply again.
                Ok(false)
            };
            match written {
                Ok(true) => {
                    let old_id = state.session.id().clone();
                    state.session = next;
                    state.cas = None;
                    state.on_primary = true;
                    if new_id.is_some() {
                        Counters::add(&self.counters.ids_cycled);
                        self.ns_delete_copies(&old_id).await;
                    } else if let Some(incoming) = &request.incoming
                        && incoming.storage_id() != id.storage_id()
                    {
                        // Relocated: the new primary's node held the backup copy under
                        // the old id, which is stale now.
                        self.backups.delete(node.clone(), self.backup_key(incoming));
                    }
                    let backup = self.ns_write_backup(id, bytes, ttl).await;
                    return Ok(CommitOutcome {
                        cookie: super::cookie_for(
                            request.incoming.as_ref(),
                            state.session.id(),
                            state.session.max_inactive(),
                        ),
                        backup,
                    });
                }
                Ok(false) => {
                    // Someone else wrote (or the copy vanished): reload and re-apply,
                    // after a while if this was a race lost.
                    if lost_race {
                        lost_races += 1;
                        tokio::time::sleep(merge_backoff(lost_races)).await;
                    }
                    match self.ns_reload(state, &node, &key).await {
                        Ok(true) => {}
                        Ok(false) => return Err(CommitError::SessionEnded),
                        Err(error) => return Err(self.unavailable_commit(&error)),
                    }
                }
                Err(StoreError::TooLarge { size, limit }) => {
                    Counters::add(&self.counters.too_large);
                    return Err(CommitError::TooLarge { size, limit });
                }
                // A hung node already cost this request one operation timeout: answer
                // now (the node is marked down, so a retry moves the session at once)
                // rather than spend a second timeout on another node.
                Err(error @ StoreError::Timeout { .. }) => {
                    return Err(self.unavailable_commit(&error));
                }
                Err(error) if error.is_node_failure() && !relocated => {
                    // The primary died under us: move to where its backup lives.
                    let Some(target) = self.successor(&node) else {
                        return Err(self.unavailable_commit(&error));
                    };
                    relocated = true;
                    Counters::add(&self.counters.relocated);
                    let moved = state.session.id().with_node(&target);
                    if let Some(id) = &new_id {
                        new_id = Some(id.with_node(&target));
                    }
                    state.session.set_id(moved);
                    state.cas = None;
                    state.on_primary = false;
                }
                Err(error) => return Err(self.unavailable_commit(&error)),
            }
        }
        Err(CommitError::RetriesExhausted {
            attempts: self.config.max_merge_retries + 1,
        })
    }

    /// Re-reads the primary after a failed compare-and-swap. `Ok(false)` if the session
    /// is gone from both copies (ended by another request); a primary that lost its copy
    /// while the backup still has it (node restarted empty) is written back.
    async fn ns_reload(
        &self,
        state: &mut TransitState<C>,
        node: &NodeId,
        key: &StoreKey,
    ) -> Result<bool, StoreError> {
        let id = state.session.id().clone();
        if let Some(item) = self.store.get(node, key).await? {
            if let Some(session) = self.ns_decode(&id, &item.value) {
                state.session = session;
                state.cas = Some(item.cas);
                state.on_primary = true;
                return Ok(true);
            }
            return Ok(false);
        }
        let Some(backup_node) = self.successor(node) else {
            return Ok(false);
        };
        match self.store.get(&backup_node, &self.backup_key(&id)).await? {
            Some(item) => match self.ns_decode(&id, &item.value) {
                Some(session) => {
                    state.session = session;
                    state.cas = None;
                    state.on_primary = false;
                    Ok(true)
                }
                None => Ok(false),
            },
            None => Ok(false),
        }
    }

    fn unavailable_commit(&self, error: &StoreError) -> CommitError {
        Counters::add(&self.counters.unavailable);
        tracing::warn!(%error, "non-sticky commit failed: no node could take the write");
        CommitError::Unavailable {
            reason: error.to_string(),
        }
    }

    /// Stores a new session on its node (another live node if that one fails).
    pub(super) async fn ns_commit_new(
        self: &Arc<Self>,
        request: RequestSession<C>,
    ) -> Result<CommitOutcome, CommitError> {
        let mut session = match self.prepare_new(request)? {
            NewSession::Store(session) => session,
            NewSession::Discard(outcome) => return Ok(outcome),
        };
        let ttl = copy_ttl(session.max_inactive());
        let mut last_error = None;
        for _ in 0..3 {
            let node = self.node_of(session.id());
            let id = session.id().clone();
            // Sealed per attempt: a layer may bind the bytes to the id.
            let bytes = self
                .seal(&session)
                .map_err(|reason| CommitError::Encoding { reason })?;
            match self
                .store
                .add(&node, &self.store_key(&id), &bytes, ttl)
                .await
            {
                Ok(AddOutcome::Stored) => {
                    Counters::add(&self.counters.sessions_created);
                    let backup = self.ns_write_backup(id.clone(), bytes, ttl).await;
                    return Ok(CommitOutcome {
                        cookie: CookieUpdate::Set {
                            max_inactive: session.max_inactive(),
                            id,
                        },
                        backup,
                    });
                }
                // A 131-bit collision, or a node that failed: new id, live node.
                Ok(AddOutcome::Exists) => {}
                Err(StoreError::TooLarge { size, limit }) => {
                    Counters::add(&self.counters.too_large);
                    return Err(CommitError::TooLarge { size, limit });
                }
                Err(error @ StoreError::Timeout { .. }) => {
                    // One operation timeout is all a request may spend on a hung node.
                    return Err(self.unavailable_commit(&error));
                }
                Err(error) => last_error = Some(error),
            }
            let Some(node) = self.live_node() else {
                break;
            };
            session.set_id(SessionId::generate(&node, None));
        }
        let error = last_error.unwrap_or(StoreError::NodeDown {
            node: self.node_of(session.id()),
        });
        Err(self.unavailable_commit(&error))
    }

    /// Deletes both copies of an invalidated session: the primary on the request path
    /// (so the id stops loading everywhere at once), the backup in the background.
    async fn ns_invalidate(&self, id: &SessionId) -> CommitOutcome {
        Counters::add(&self.counters.invalidated);
        if !self.config.negative_cache_ttl.is_zero() {
            self.negative.insert(local_key(id), ());
        }
        self.ns_delete_copies(id).await;
        CommitOutcome {
            cookie: CookieUpdate::Clear,
            backup: BackupStatus::NotNeeded,
        }
    }

    async fn ns_delete_copies(&self, id: &SessionId) {
        self.delete_remote(&self.node_of(id), &self.store_key(id))
            .await;
        self.ns_delete_backup_in_background(id);
    }

    fn ns_delete_backup_in_background(&self, id: &SessionId) {
        if let Some(node) = self.successor(&self.node_of(id)) {
            self.backups.delete(node, self.backup_key(id));
        }
    }

    /// Writes the backup copy on the primary's successor: in the background, or
    /// before returning with a synchronous backup mode (or during shutdown).
    async fn ns_write_backup(
        self: &Arc<Self>,
        id: SessionId,
        bytes: Vec<u8>,
        ttl: Ttl,
    ) -> BackupStatus {
        let primary = self.node_ref(&id);
        let Some(node) = self.successor(primary) else {
            // With a single node there is no backup copy to write, ever: nothing to
            // repair. Otherwise the other nodes are down, and the copy waits for one.
            if self.natural_successor(primary).is_some() {
                tracing::debug!(session = %id.storage_id(), "no node for the backup copy; repaired when one answers");
                self.remember_repair(&id, ttl, Stale::WhereReadsLook);
            }
            return BackupStatus::Failed("no node is available for the backup copy".into());
        };
        if self.natural_successor(primary) != Some(&node) {
            // The usual backup node is down: the copy goes to the next one, and the
            // usual one keeps an older copy that a read would find once it answers
            // again (and the primary does not). Repaired then.
            self.remember_repair(&id, ttl, Stale::OnUsualNode);
        }
        let sync_timeout = match self.config.backup {
            _ if self.closing.load(std::sync::atomic::Ordering::Acquire) => {
                Some(Duration::from_secs(1))
            }
            BackupMode::Sync { timeout } => Some(timeout),
            BackupMode::Async => None,
        };
        if let Some(timeout) = sync_timeout {
            let status = match tokio::time::timeout(
                timeout,
                self.write_backup_copy(&node, &id, &bytes, ttl),
            )
            .await
            {
                Ok(Ok(())) => return BackupStatus::Written,
                Ok(Err(error)) => BackupStatus::Failed(error.to_string()),
                Err(_) => BackupStatus::Failed(format!("no answer within {timeout:?}")),
            };
            self.remember_repair(&id, ttl, Stale::WhereReadsLook);
            return status;
        }
        let inner = Arc::clone(self);
        self.backups.begin();
        tokio::spawn(async move {
            if inner
                .write_backup_copy(&node, &id, &bytes, ttl)
                .await
                .is_err()
            {
                inner.remember_repair(&id, ttl, Stale::WhereReadsLook);
            }
            inner.backups.end();
        });
        BackupStatus::Queued
    }

    async fn write_backup_copy(
        &self,
        node: &NodeId,
        id: &SessionId,
        bytes: &[u8],
        ttl: Ttl,
    ) -> Result<(), StoreError> {
        if self.aborted.load(std::sync::atomic::Ordering::Acquire) {
            return Err(StoreError::NodeDown { node: node.clone() });
        }
        let started = Instant::now();
        let result = self.store.set(node, &self.backup_key(id), bytes, ttl).await;
        self.counters
            .histograms
            .backup_write(started.elapsed(), bytes.len());
        match &result {
            Ok(()) => Counters::add(&self.counters.backups_written),
            Err(error) => {
                Counters::add(&self.counters.backups_failed);
                tracing::debug!(session = %id.storage_id(), %error, "backup copy not written");
            }
        }
        result
    }

    /// An unchanged request: slide the backup copy's expiry too, and write it again if
    /// it is missing (its node restarted, or was down when the session last changed).
    fn ns_refresh_backup(self: &Arc<Self>, session: Session<C>) {
        let id = session.id().clone();
        let Some(node) = self.successor(&self.node_of(&id)) else {
            return;
        };
        let inner = Arc::clone(self);
        self.backups.begin();
        tokio::spawn(async move {
            let key = inner.backup_key(&id);
            let ttl = copy_ttl(session.max_inactive());
            match inner.store.touch(&node, &key, ttl).await {
                Ok(true) => Counters::add(&inner.counters.touches),
                Ok(false) => {
                    Counters::add(&inner.counters.touch_failures);
                    let written = match inner.seal(&session) {
                        Ok(bytes) => inner.store.set(&node, &key, &bytes, ttl).await.is_ok(),
                        Err(_) => false,
                    };
                    let counter = if written {
                        &inner.counters.backups_written
                    } else {
                        &inner.counters.backups_failed
                    };
                    Counters::add(counter);
                }
                Err(_) => Counters::add(&inner.counters.touch_failures),
            }
            inner.backups.end();
        });
    }
}

pub(super) mod repair;
#[cfg(test)]
mod tests;
