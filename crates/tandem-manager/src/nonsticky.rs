//! Non-sticky mode: the remote tier is the source of truth.
//!
//! A session's *primary* copy lives on the node its id names, a *backup* copy (under
//! the `bak:` key) on the first available node after it in ring order (the regular
//! nodes in configuration order, then the failover nodes). Every request reads the
//! primary with get-and-touch (one round trip, which also slides its expiry), falling
//! back to the backup copy under the rules of [`read`]: so a read always sees what any
//! server acknowledged before it started, and a session kept busy never expires. The
//! requests of one session in flight in this process share one *transit* copy, which
//! orders their commits and keeps the newest state and compare-and-swap token this
//! process knows; it is dropped when the last of them ends. A changed session is
//! written to the primary with compare-and-swap on the request path (reloading and
//! re-applying the request's attribute changes on a conflict), and to the backup in
//! the background. A backup copy that could not be written is copied again from the
//! primary later (see [`repair`]).
//!
//! When the primary node is down, the session moves to the node that holds its backup
//! (the first available node after the primary): every server picks the same node, so
//! concurrent requests arriving at different servers agree on the new id.
//!
//! Ids end for good: a logout or an id change puts a tombstone over the primary copy
//! and a deletion marker beside the backup copies (see `ends`), and ends the transit
//! copy, so that no request still holding the old id can commit into the session under
//! its new id or bring the old one back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;

use tandem_core::Codec;
use tandem_core::Session;
use tandem_core::{AddOutcome, CasToken, Precondition, StoreError, Ttl, WriteOutcome};
use tandem_core::{NodeId, SessionId};

use super::config::{BackupMode, Concurrency, LockScope, LockTimeoutPolicy};
use super::ends::{self, End, EndAction, EndReason};
use super::entry::{LocalKey, local_key};
use super::request::{Attached, RequestSession};
use super::stats::Counters;
use super::sticky::same_session;
use super::{
    BackupStatus, CommitError, CommitOutcome, CookieUpdate, Inner, LoadError, NewSession,
    RequestInfo,
};
use read::{Loaded, Read};
use repair::Stale;

pub(crate) use lock::RemoteLock;

/// How long a primary read may take before the backup copy is read alongside it.
/// memcached answers in well under a millisecond; a read this slow is likely hung.
const HEDGE_DELAY: Duration = Duration::from_millis(20);

/// How many requests of a pattern in a row must leave the session unchanged before
/// [`LockScope::Auto`] stops locking that pattern.
pub const AUTO_LOCK_LEARN_AFTER: u32 = 5;

/// The longest part of a request's path that [`LockScope::Auto`] learns from: longer
/// paths share what they have in common up to this length, so that a client sending
/// long paths cannot make the learned patterns large.
const MAX_PATTERN_LEN: usize = 256;

/// How many bytes of learned request patterns [`LockScope::Auto`] keeps at most; the
/// least recently used beyond are forgotten (and counted).
pub(super) const MAX_PATTERN_BYTES: u64 = 4 * 1024 * 1024;

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
    /// `None` until a commit needs it (it then starts from that request's read). An
    /// async lock: commits of the session in this process run one after another.
    state: tokio::sync::Mutex<Option<TransitState<C>>>,
    /// Serializes this process's requests of the session under `Concurrency::Lock`
    /// before they take the remote lock.
    lock: Arc<tokio::sync::Mutex<()>>,
    /// Why the session ended in this process, if it did ([`ENDED_NOT`] while it lives):
    /// the requests still holding it cannot commit into it any more.
    ended: AtomicU8,
}

const ENDED_NOT: u8 = 0;
const ENDED_INVALIDATED: u8 = 1;
const ENDED_CYCLED: u8 = 2;

struct TransitState<C> {
    /// The newest state this process knows, without recorded changes.
    session: Session<C>,
    /// The primary's CAS token for `session` (or, with `on_primary` false, the
    /// tombstone of a move that the session moving back may replace); `None` when
    /// unknown: the next write reloads first.
    cas: Option<CasToken>,
    /// Whether the primary node holds this session under its current id; if not (it was
    /// restored from the backup, or moved), the next commit writes it even if nothing
    /// changed.
    on_primary: bool,
}

impl<C> From<Loaded<C>> for TransitState<C> {
    fn from(loaded: Loaded<C>) -> TransitState<C> {
        TransitState {
            session: loaded.session,
            cas: loaded.cas,
            on_primary: loaded.on_primary,
        }
    }
}

/// A request's hold on a transit copy. The last one dropped removes the copy.
pub(crate) struct TransitRef<C> {
    transit: Arc<Transit<C>>,
    map: Arc<TransitMap<C>>,
    /// What this request read, for a commit that finds no transit state yet, and
    /// when: an unchanged commit slides the backup copy's expiry to the primary's,
    /// which this read slid. Boxed: it rides in every request's session, in sticky
    /// mode too, whose futures must stay small.
    read: Box<(Option<TransitState<C>>, Instant)>,
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

/// Runs `task` on the current tokio runtime, if there is one (a drop outside a runtime
/// leaves the lock to its TTL).
fn spawn_detached(task: impl std::future::Future<Output = ()> + Send + 'static) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(task);
    }
}

impl<C: Codec> Inner<C> {
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

    /// The transit copy of `key`, shared with the requests of the session in flight.
    fn transit(self: &Arc<Self>, key: &LocalKey) -> Arc<Transit<C>> {
        let mut map = self.transit.lock();
        match map.get(key).and_then(Weak::upgrade) {
            Some(transit) => transit,
            None => {
                let transit = Arc::new(Transit {
                    key: key.clone(),
                    state: tokio::sync::Mutex::new(None),
                    lock: Arc::new(tokio::sync::Mutex::new(())),
                    ended: AtomicU8::new(ENDED_NOT),
                });
                map.insert(key.clone(), Arc::downgrade(&transit));
                transit
            }
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

    /// The pattern [`LockScope::Auto`] and [`LockScope::Paths`] decide on: the method
    /// and (the start of) the path.
    fn pattern(request: &RequestInfo<'_>) -> Box<str> {
        let mut end = request.path.len().min(MAX_PATTERN_LEN);
        while !request.path.is_char_boundary(end) {
            end -= 1;
        }
        format!("{} {}", request.method, &request.path[..end]).into()
    }

    /// Loads a session in non-sticky mode: always from the remote tier, so that a
    /// request sees what any server acknowledged before it started, also while other
    /// requests of the session are in flight here.
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
        if let Some(reason) = self.ended.get(&key) {
            return Ok(self.ended_id(reason));
        }
        // Only the lock scopes that decide per request pattern need it.
        let pattern = request
            .filter(|_| self.config.locks_per_pattern())
            .map(Self::pattern);
        let transit = self.transit(&key);
        let mut local_lock = None;
        let mut remote_lock = None;
        if self.needs_lock(pattern.as_deref()) {
            local_lock = self.lock_transit(&transit).await?;
            remote_lock = self.lock_remote(&id).await?;
        }
        let read_at = Instant::now();
        let loaded = match self.ns_read(&id).await? {
            Read::Found(loaded) => loaded,
            Read::Unknown => {
                if !self.config.negative_cache_ttl.is_zero() {
                    self.negative.insert(key, ());
                }
                return Ok(self.fresh(Some(id), true));
            }
            Read::Ended(reason) => {
                self.ended.insert(key, reason);
                return Ok(self.ended_id(reason));
            }
        };
        let snapshot = loaded.session.clone();
        let read = TransitState::from(loaded);
        // The freshest state for the commits of this process, unless one of them is
        // writing right now (it leaves its own result there).
        if let Ok(mut state) = transit.state.try_lock() {
            *state = Some(TransitState {
                session: read.session.clone(),
                cas: read.cas,
                on_primary: read.on_primary,
            });
        }
        Ok(RequestSession {
            session: snapshot,
            attached: Attached::Transit(TransitRef {
                transit,
                map: Arc::clone(&self.transit),
                read: Box::new((Some(read), read_at)),
            }),
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

    /// Commits a request of a non-sticky session.
    pub(super) async fn ns_commit(
        self: &Arc<Self>,
        mut transit: TransitRef<C>,
        mut request: RequestSession<C>,
    ) -> Result<CommitOutcome, CommitError> {
        let remote_lock = request.remote_lock.take();
        let pattern = request.pattern.take();
        let modified = request.session.is_modified() || request.cycle_id || request.invalidated;
        let result = match remote_lock {
            // A request that held its lock longer than the lock's TTL may have lost it
            // to another request: it commits only if it still holds it.
            Some(mut lock) if modified => {
                let held = lock.still_held().await;
                let result = match held {
                    Ok(true) => self.ns_commit_locked(&mut transit, &request).await,
                    Ok(false) => {
                        Counters::add(&self.counters.locks_lost);
                        Counters::add(&self.counters.conflicts);
                        tracing::warn!(
                            "session lock expired and was taken by another request; commit refused"
                        );
                        Err(CommitError::Conflict {
                            attributes: request
                                .session
                                .changes()
                                .map(|change| change.name.to_owned())
                                .collect(),
                        })
                    }
                    Err(error) => Err(self.unavailable_commit(&error)),
                };
                lock.release_in_background();
                result
            }
            lock => {
                let result = self.ns_commit_locked(&mut transit, &request).await;
                if let Some(lock) = lock {
                    lock.release_in_background();
                }
                result
            }
        };
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
        transit: &mut TransitRef<C>,
        request: &RequestSession<C>,
    ) -> Result<CommitOutcome, CommitError> {
        let timeout = self.config.lock_timeout;
        let Ok(mut guard) = tokio::time::timeout(timeout, transit.transit.state.lock()).await
        else {
            // Earlier commits of the session here hold it (a slow node): this one does
            // not wait beyond the lock timeout.
            Counters::add(&self.counters.lock_timeouts);
            return Err(CommitError::LockTimeout { waited: timeout });
        };
        let modified = request.session.is_modified() || request.cycle_id;
        match transit.transit.ended.load(Ordering::Acquire) {
            ENDED_NOT => {}
            // Ended while this request held it: a logout ends nothing more, a change
            // is refused, and a read-only request leaves its cookie alone (a cycled
            // id must not learn the new one, nor clear the one the login set).
            _ if request.invalidated => return Ok(cleared()),
            _ if modified => return Err(CommitError::SessionEnded),
            _ => return Ok(kept()),
        }
        if guard.is_none() {
            *guard = transit.read.0.take();
        }
        let Some(state) = guard.as_mut() else {
            return Err(CommitError::SessionEnded);
        };
        // The request's id as it loaded it, before any move: what an invalidation or a
        // cycle ends.
        let original = request
            .incoming
            .clone()
            .unwrap_or_else(|| state.session.id().clone());
        if !same_session(&original, state.session.id()) {
            return Err(CommitError::SessionEnded);
        }
        if request.invalidated {
            *guard = None;
            transit
                .transit
                .ended
                .store(ENDED_INVALIDATED, Ordering::Release);
            drop(guard);
            return Ok(self.ns_invalidate(&original).await);
        }
        let interval_changed = request.session.is_max_inactive_modified()
            && request.session.max_inactive() != state.session.max_inactive();
        if !request.session.is_modified()
            && !interval_changed
            && !request.cycle_id
            && state.on_primary
        {
            Counters::add(&self.counters.backups_skipped_unchanged);
            self.ns_refresh_backup(
                state.session.id(),
                state.session.max_inactive(),
                transit.read.1,
            );
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
            let precondition = if new_id.is_some() {
                Some(Precondition::Absent)
            } else {
                match (state.cas, state.on_primary) {
                    (Some(token), _) => Some(Precondition::Cas(token)),
                    (None, false) => Some(Precondition::Absent),
                    // This process's write of the session was not answered: its token
                    // is unknown; read it (with whatever others wrote since).
                    (None, true) => None,
                }
            };
            // From here until the backup copy is taken care of, a dropped commit
            // leaves that copy to be repaired.
            let mut unbacked = Unbacked {
                inner: self,
                id: id.clone(),
                ttl,
                backed: false,
            };
            // Whether another writer got in first (rather than the copy vanishing, or
            // this process not knowing its token): only a race lost is waited out.
            let written = match precondition {
                Some(precondition) => {
                    self.store
                        .write(&node, &key, &bytes, ttl, precondition)
                        .await
                }
                None => Ok(WriteOutcome::NotFound),
            };
            if !matches!(written, Ok(WriteOutcome::Stored(_))) {
                unbacked.backed = true;
            }
            let lost_race = matches!(written, Ok(WriteOutcome::Conflict))
                || (matches!(written, Ok(WriteOutcome::Exists)) && new_id.is_none());
            match written {
                Ok(WriteOutcome::Stored(token)) => {
                    state.session = next;
                    state.cas = token;
                    state.on_primary = true;
                    if new_id.is_some() {
                        // The old id ends everywhere, then in this process: requests
                        // still holding it cannot commit into the session under its
                        // new id.
                        Counters::add(&self.counters.ids_cycled);
                        self.ended.insert(local_key(&original), EndReason::Cycled);
                        transit.transit.ended.store(ENDED_CYCLED, Ordering::Release);
                        let ends = self.ns_ends(&original, EndReason::Cycled, ttl);
                        self.end_ids(ends, None).await;
                    } else if original.storage_id() != id.storage_id() {
                        // Moved off a down node: the copy left there gets a tombstone
                        // once it answers, and the new primary's node held the backup
                        // copy under the old id, which is stale now.
                        self.ns_moved_away(&original, &node, ttl);
                    }
                    let backup = self.ns_write_backup(id, bytes, ttl).await;
                    unbacked.backed = true;
                    let outcome = CommitOutcome {
                        cookie: super::cookie_for(
                            request.incoming.as_ref(),
                            state.session.id(),
                            state.session.max_inactive(),
                        ),
                        backup,
                    };
                    if new_id.is_some() {
                        *guard = None;
                    }
                    return Ok(outcome);
                }
                // A 131-bit collision of a new id: another one.
                Ok(WriteOutcome::Exists) if new_id.is_some() => {
                    new_id = None;
                }
                Ok(WriteOutcome::Exists) if !state.on_primary => {
                    // A session moving back to a node it left finds the tombstone of
                    // that move, which it may replace; anything else there is newer
                    // than what this request restored.
                    match self.store.get(&node, &key).await {
                        Ok(Some(item))
                            if ends::tombstone_reason(&item.value) == Some(EndReason::Moved) =>
                        {
                            state.cas = Some(item.cas);
                        }
                        Ok(_) => {
                            self.ns_reload_into(state, &node, &key, &mut lost_races, lost_race)
                                .await?
                        }
                        Err(error) => return Err(self.unavailable_commit(&error)),
                    }
                }
                Ok(_) => {
                    // Someone else wrote (or the copy vanished, or its token is
                    // unknown): reload and re-apply, after a while if this was a race
                    // lost.
                    self.ns_reload_into(state, &node, &key, &mut lost_races, lost_race)
                        .await?;
                }
                Err(StoreError::TooLarge { size, limit }) => {
                    Counters::add(&self.counters.too_large);
                    return Err(CommitError::TooLarge { size, limit });
                }
                // A hung node already cost this request one operation timeout: answer
                // now (the node is marked down, so a retry moves the session at once)
                // rather than spend a second timeout on another node.
                Err(error @ StoreError::Timeout { .. }) => {
                    // The write may have landed: its token is unknown.
                    state.cas = None;
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

    /// After a write whose condition failed: waits if it was a race lost, then reloads
    /// the session into `state`; a session gone or ended meanwhile ends the commit.
    async fn ns_reload_into(
        &self,
        state: &mut TransitState<C>,
        node: &NodeId,
        key: &tandem_core::StoreKey,
        lost_races: &mut u32,
        lost_race: bool,
    ) -> Result<(), CommitError> {
        if lost_race {
            *lost_races += 1;
            tokio::time::sleep(merge_backoff(*lost_races)).await;
        }
        let id = state.session.id().clone();
        match self.ns_reload(&id, node, key).await {
            Ok(Some(loaded)) => {
                *state = TransitState::from(loaded);
                Ok(())
            }
            Ok(None) => Err(CommitError::SessionEnded),
            Err(error) => Err(self.unavailable_commit(&error)),
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

    /// Ends a non-sticky session: a tombstone over its primary copy and deletion markers
    /// beside its backup copies, waited for (in a task of their own, so that a client
    /// hanging up does not stop them half way; retried while their node fails).
    async fn ns_invalidate(self: &Arc<Self>, id: &SessionId) -> CommitOutcome {
        Counters::add(&self.counters.invalidated);
        self.ended.insert(local_key(id), EndReason::Ended);
        let ttl = copy_ttl(self.config.max_inactive);
        let ends = self.ns_ends(id, EndReason::Ended, ttl);
        self.end_ids(ends, None).await;
        cleared()
    }

    /// What ends the non-sticky id `id`: a tombstone over its primary copy, and on
    /// every node its backup copy may be on (where reads look now, and its usual
    /// node), a deletion marker and the copy's delete. The tombstones live long enough
    /// for copies of the longest interval a session may have (`copy_ttl` of the
    /// session or of the default).
    fn ns_ends(&self, id: &SessionId, reason: EndReason, copy_ttl: Ttl) -> Vec<End> {
        let ttl = ends::tombstone_ttl(longest(copy_ttl, self::copy_ttl(self.config.max_inactive)));
        let primary = self.node_of(id);
        let mut ends = vec![End {
            node: primary.clone(),
            key: self.store_key(id),
            action: EndAction::Tombstone(reason),
            ttl,
            condition: Precondition::None,
        }];
        let mut backup_nodes: Vec<NodeId> = self.successor(&primary).into_iter().collect();
        if let Some(usual) = self.natural_successor(&primary)
            && !backup_nodes.contains(usual)
        {
            backup_nodes.push(usual.clone());
        }
        for node in backup_nodes {
            ends.push(End {
                node: node.clone(),
                key: self.gone_key(id),
                action: EndAction::Tombstone(reason),
                ttl,
                condition: Precondition::None,
            });
            ends.push(End {
                node,
                key: self.backup_key(id),
                action: EndAction::Delete,
                ttl,
                condition: Precondition::None,
            });
        }
        ends
    }

    /// The session moved from `old` (its node down) to `new_node`: the copy left on the
    /// old node gets a tombstone once that node answers (a session moving back may
    /// replace it), and the backup copy under the old id, on the new primary's node,
    /// is deleted.
    fn ns_moved_away(&self, old: &SessionId, new_node: &NodeId, copy_ttl: Ttl) {
        let ttl = ends::tombstone_ttl(copy_ttl);
        self.remember_ends([
            End {
                node: self.node_of(old),
                key: self.store_key(old),
                action: EndAction::Tombstone(EndReason::Moved),
                ttl,
                condition: Precondition::None,
            },
            End {
                node: new_node.clone(),
                key: self.backup_key(old),
                action: EndAction::Delete,
                ttl,
                condition: Precondition::None,
            },
        ]);
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
                tracing::debug!(session = %id.redacted(), "no node for the backup copy; repaired when one answers");
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
                tracing::debug!(session = %id.redacted(), %error, "backup copy not written");
            }
        }
        result
    }

    /// An unchanged request: slides the backup copy's expiry to the primary's (which
    /// the request's read slid, `read_at`), so that both expire together. A missing
    /// backup copy (its node restarted, or was down when the session last changed)
    /// is repaired from the primary, never rewritten from this request's snapshot,
    /// which may be older than the primary (or of a session ended since).
    fn ns_refresh_backup(
        self: &Arc<Self>,
        id: &SessionId,
        interval: Option<Duration>,
        read_at: Instant,
    ) {
        let Some(node) = self.successor(&self.node_of(id)) else {
            return;
        };
        let ttl = match copy_ttl(interval) {
            Ttl::Never => Ttl::Never,
            Ttl::After(ttl) => Ttl::After(
                ttl.saturating_sub(read_at.elapsed())
                    .max(Duration::from_secs(1)),
            ),
        };
        let inner = Arc::clone(self);
        let id = id.clone();
        self.backups.begin();
        tokio::spawn(async move {
            let key = inner.backup_key(&id);
            match inner.store.touch(&node, &key, ttl).await {
                Ok(true) => Counters::add(&inner.counters.touches),
                Ok(false) => {
                    Counters::add(&inner.counters.touch_failures);
                    inner.remember_repair(&id, ttl, Stale::WhereReadsLook);
                }
                Err(_) => Counters::add(&inner.counters.touch_failures),
            }
            inner.backups.end();
        });
    }
}

/// A primary write of a commit whose backup copy is not written or handed to its
/// background task yet. If the commit is dropped in between (a client that hung up, a
/// timeout layer), the primary may hold a state its backup copy never gets: that copy
/// is repaired from the primary then, as after a backup write that failed, so that a
/// primary lost later does not take back a state that requests have read.
struct Unbacked<'a, C: Codec> {
    inner: &'a Inner<C>,
    id: SessionId,
    ttl: Ttl,
    /// The write did not land, or its backup copy is taken care of.
    backed: bool,
}

impl<C: Codec> Drop for Unbacked<'_, C> {
    fn drop(&mut self) {
        if !self.backed {
            self.inner
                .remember_repair(&self.id, self.ttl, Stale::WhereReadsLook);
        }
    }
}

/// The longer of two TTLs.
fn longest(a: Ttl, b: Ttl) -> Ttl {
    match (a, b) {
        (Ttl::After(a), Ttl::After(b)) => Ttl::After(a.max(b)),
        _ => Ttl::Never,
    }
}

/// A commit that ended the session: the cookie is cleared.
fn cleared() -> CommitOutcome {
    CommitOutcome {
        cookie: CookieUpdate::Clear,
        backup: BackupStatus::NotNeeded,
    }
}

/// A commit that leaves the cookie alone and wrote nothing.
fn kept() -> CommitOutcome {
    CommitOutcome {
        cookie: CookieUpdate::Keep,
        backup: BackupStatus::NotNeeded,
    }
}

mod lock;
mod read;
pub(super) mod repair;
#[cfg(test)]
mod tests;
