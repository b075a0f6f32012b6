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
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use moka::notification::RemovalCause;

use tandem_core::{
    AddOutcome, Codec, NodeId, Precondition, SessionId, StoreError, Ttl, WriteOutcome,
};

use crate::common::ends::{self, End, EndAction, EndReason};
use crate::common::local_key::{LocalKey, local_key};
use crate::common::merge::{NewSession, cookie_for};
use crate::common::stats::Counters;
use crate::common::ttl::copy_ttl;
use crate::common::{Common, same_session};
use crate::config::{Concurrency, LockScope};
use crate::error::{CommitError, LoadError};
use crate::outcome::{BackupStatus, CommitOutcome, CookieUpdate, RequestInfo};
use crate::request::{Attached, RequestSession};
use copy::{Unbacked, longest};
use read::Read;
use transit::{
    ENDED_CYCLED, ENDED_INVALIDATED, ENDED_NOT, Transit, TransitMap, TransitRef, TransitState,
};

mod background;
mod copy;
mod epochs;
pub(crate) mod lock_queue;
mod locking;
mod read;
mod refreshes;
pub(crate) mod remote_lock;
mod repair;
#[cfg(test)]
mod tests;
pub(crate) mod transit;

/// How long a primary read may take before the backup copy is read alongside it.
/// memcached answers in well under a millisecond; a read this slow is likely hung.
const HEDGE_DELAY: Duration = Duration::from_millis(20);

/// How many requests of a pattern in a row must leave the session unchanged before
/// [`LockScope::Auto`] stops locking that pattern.
pub const AUTO_LOCK_LEARN_AFTER: u32 = 5;

/// The longest part of a request's path that [`LockScope::Auto`] learns from: longer
/// paths share what they have in common up to this length, so that a client sending
/// long paths cannot make the learned patterns large.
pub(super) const MAX_PATTERN_LEN: usize = 256;

/// How many bytes of learned request patterns [`LockScope::Auto`] keeps at most; the
/// least recently used beyond are forgotten (and counted).
pub(crate) const MAX_PATTERN_BYTES: u64 = 4 * 1024 * 1024;

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

/// The weight of a learned request pattern in [`LockScope::Auto`]'s cache: its length
/// plus what a cache entry costs besides.
#[expect(
    clippy::borrowed_box,
    reason = "the cache's weigher is given its key, a boxed str, by reference"
)]
fn pattern_weight(pattern: &Box<str>, _streak: &u32) -> u32 {
    u32::try_from(pattern.len() + 64).unwrap_or(u32::MAX)
}

/// The non-sticky engine: what non-sticky mode owns besides what both modes share.
pub(crate) struct Engine<C> {
    pub(crate) common: Arc<Common>,
    /// The sessions with requests in flight in this process.
    pub(crate) transit: Arc<TransitMap<C>>,
    /// Backup copies whose write failed, to be copied again from the primary.
    pub(crate) copy_repairs: repair::Repairs,
    /// The nodes' epochs as this server last saw them (see [`epochs`]).
    pub(crate) epochs: epochs::Epochs,
    /// When this server last slid each recently used session's backup copy.
    pub(crate) backup_refreshes: refreshes::BackupRefreshes,
    /// `LockScope::Auto`: per request pattern, how many requests in a row left the
    /// session unchanged.
    pub(crate) read_only_streaks: moka::sync::Cache<Box<str>, u32>,
}

impl<C: Codec> Engine<C> {
    /// The engine over `common`, with its sweep started on `runtime`.
    pub(crate) fn start(common: Arc<Common>, runtime: &tokio::runtime::Handle) -> Arc<Engine<C>> {
        let pattern_counters = Arc::clone(&common.counters);
        let engine = Arc::new(Engine {
            transit: Arc::new(parking_lot::Mutex::new(HashMap::default())),
            copy_repairs: repair::Repairs::default(),
            epochs: epochs::Epochs::new(&*common.store),
            backup_refreshes: refreshes::BackupRefreshes::new(common.now()),
            read_only_streaks: moka::sync::Cache::builder()
                .max_capacity(MAX_PATTERN_BYTES)
                // Weighed by their length (plus the entry's own cost): a client that
                // sends many long paths evicts patterns instead of growing the cache.
                .weigher(pattern_weight)
                .eviction_listener(move |_, _, cause| {
                    if cause == RemovalCause::Size {
                        Counters::add(&pattern_counters.lock_patterns_evicted);
                    }
                })
                .build(),
            common,
        });
        background::spawn_sweep(&engine, runtime);
        engine
    }

    /// A session that does not exist yet, on a live node (no route: routes are for
    /// sticky load balancing).
    fn fresh(&self, unknown: Option<SessionId>, had_cookie: bool) -> RequestSession<C> {
        RequestSession::fresh(self.common.new_session(unknown.as_ref(), None), had_cookie)
    }

    /// The new session a request gets for an id that ended. A cycled id does not
    /// clear the cookie: the browser may already hold the new id, set by the response
    /// of the login that cycled it.
    fn ended_id(&self, reason: EndReason) -> RequestSession<C> {
        Counters::add(&self.common.counters.ended_ids_presented);
        self.fresh(None, reason != EndReason::Cycled)
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
                    queue: Arc::default(),
                    written: AtomicU64::new(0),
                    ended: AtomicU8::new(ENDED_NOT),
                });
                map.insert(key.clone(), Arc::downgrade(&transit));
                transit
            }
        }
    }

    /// Loads a session in non-sticky mode: always from the remote tier, so that a
    /// request sees what any server acknowledged before it started, also while other
    /// requests of the session are in flight here.
    pub(super) async fn load(
        self: &Arc<Self>,
        incoming: Option<&str>,
        request: Option<&RequestInfo<'_>>,
    ) -> Result<RequestSession<C>, LoadError> {
        let Some(id) = incoming.and_then(|text| self.common.parse_incoming(text)) else {
            return Ok(self.fresh(None, incoming.is_some()));
        };
        let key = local_key(&id);
        if self.common.negative.contains_key(&key) {
            Counters::add(&self.common.counters.negative_cache_hits);
            return Ok(self.fresh(Some(id), true));
        }
        if let Some(reason) = self.common.ended.get(&key) {
            return Ok(self.ended_id(reason));
        }
        // Only the lock scopes that decide per request pattern need it.
        let pattern = request
            .filter(|_| self.common.config.locks_per_pattern())
            .map(Self::pattern);
        let transit = self.transit(&key);
        let mut remote_lock = None;
        if self.needs_lock(pattern.as_deref()) {
            remote_lock = Some(self.lock_session(&id, &transit).await?);
        }
        let read_at = self.common.now();
        let written = transit.written.load(Ordering::Acquire);
        let loaded = match self.read(&id).await? {
            Read::Found(loaded) => loaded,
            Read::Unknown => {
                if !self.common.config.negative_cache_ttl.is_zero() {
                    self.common.negative.insert(key, ());
                }
                return Ok(self.fresh(Some(id), true));
            }
            Read::Ended(reason) => {
                self.common.ended.insert(key, reason);
                return Ok(self.ended_id(reason));
            }
        };
        let snapshot = loaded.session.clone();
        let read = TransitState::from(loaded);
        // The freshest state for the commits of this process, unless one of them is
        // writing right now (it leaves its own result there) or wrote since this read
        // began (this read may be older: its token would fail the next write).
        if let Ok(mut state) = transit.state.try_lock()
            && transit.written.load(Ordering::Acquire) == written
        {
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
            lock_guard: None,
            remote_lock,
            pattern,
        })
    }

    fn unavailable_load(&self) -> LoadError {
        Counters::add(&self.common.counters.unavailable);
        LoadError::Unavailable
    }

    /// Commits a request of a non-sticky session.
    pub(super) async fn commit(
        self: &Arc<Self>,
        mut transit: TransitRef<C>,
        mut request: RequestSession<C>,
    ) -> Result<CommitOutcome, CommitError> {
        let remote_lock = request.remote_lock.take();
        let pattern = request.pattern.take();
        let modified = request.session.is_modified() || request.cycle_id || request.invalidated;
        let result = self
            .commit_holding(&mut transit, &request, remote_lock, modified)
            .await;
        if let (LockScope::Auto, Some(pattern)) = (&self.common.config.lock_scope, pattern) {
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

    async fn commit_locked(
        self: &Arc<Self>,
        transit: &mut TransitRef<C>,
        request: &RequestSession<C>,
    ) -> Result<CommitOutcome, CommitError> {
        let timeout = self.common.config.lock_timeout;
        let Ok(mut guard) = tokio::time::timeout(timeout, transit.transit.state.lock()).await
        else {
            // Earlier commits of the session here hold it (a slow node): this one does
            // not wait beyond the lock timeout.
            Counters::add(&self.common.counters.lock_timeouts);
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
            return Ok(self.invalidate(&original).await);
        }
        let interval_changed = request.session.is_max_inactive_modified()
            && request.session.max_inactive() != state.session.max_inactive();
        if !request.session.is_modified()
            && !interval_changed
            && !request.cycle_id
            && state.on_primary
        {
            Counters::add(&self.common.counters.backups_skipped_unchanged);
            self.refresh_backup(
                state.session.id(),
                state.session.max_inactive(),
                transit.read.1,
            );
            return Ok(CommitOutcome {
                cookie: cookie_for(
                    request.incoming.as_ref(),
                    state.session.id(),
                    state.session.max_inactive(),
                ),
                backup: BackupStatus::NotNeeded,
            });
        }
        let merge = self.common.config.concurrency != Concurrency::LastWriterWins;
        let mut new_id = None;
        let mut relocated = false;
        let mut lost_races = 0;
        for attempt in 0..=self.common.config.max_merge_retries {
            if attempt > 0 {
                Counters::add(&self.common.counters.merge_retries);
            }
            if merge {
                self.common
                    .check_conflicts(&request.session, &state.session)?;
            }
            let mut next = state.session.clone();
            for change in request.session.changes() {
                let _ = next.apply(change.name, change.current.cloned());
            }
            if interval_changed {
                next.set_max_inactive(request.session.max_inactive());
            }
            self.common.check_size(&next)?;
            if request.cycle_id && new_id.is_none() {
                new_id = Some(SessionId::generate(&self.common.node_of(next.id()), None));
            }
            if let Some(id) = &new_id {
                next.set_id(id.clone());
            }
            next.touch(self.common.wall());
            next.mark_unchanged();
            let id = next.id().clone();
            let node = self.common.node_of(&id);
            let bytes = self
                .common
                .seal(&next)
                .map_err(|source| CommitError::Encoding { source })?;
            let ttl = copy_ttl(next.max_inactive());
            let key = self.common.store_key(&id);
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
                    self.common
                        .store
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
                    transit.transit.written.fetch_add(1, Ordering::AcqRel);
                    if new_id.is_some() {
                        // The old id ends everywhere, then in this process: requests
                        // still holding it cannot commit into the session under its
                        // new id.
                        Counters::add(&self.common.counters.ids_cycled);
                        self.common
                            .ended
                            .insert(local_key(&original), EndReason::Cycled);
                        transit.transit.ended.store(ENDED_CYCLED, Ordering::Release);
                        let ends = self.ends_of(&original, EndReason::Cycled, ttl);
                        self.common.end_ids(ends, None::<fn()>).await;
                    } else if original.storage_id() != id.storage_id() {
                        // Moved off a down node: the copy left there gets a tombstone
                        // once it answers, and the new primary's node held the backup
                        // copy under the old id, which is stale now.
                        self.moved_away(&original, &node, ttl);
                    }
                    let backup = self.write_backup(id, bytes, ttl).await;
                    unbacked.backed = true;
                    let outcome = CommitOutcome {
                        cookie: cookie_for(
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
                    match self.common.store.get(&node, &key).await {
                        Ok(Some(item))
                            if ends::tombstone_reason(&item.value) == Some(EndReason::Moved) =>
                        {
                            state.cas = Some(item.cas);
                        }
                        Ok(_) => {
                            self.reload_into(state, &node, &key, &mut lost_races, lost_race)
                                .await?
                        }
                        Err(error) => return Err(self.unavailable_commit(&error)),
                    }
                }
                Ok(_) => {
                    // Someone else wrote (or the copy vanished, or its token is
                    // unknown): reload and re-apply, after a while if this was a race
                    // lost.
                    self.reload_into(state, &node, &key, &mut lost_races, lost_race)
                        .await?;
                }
                Err(StoreError::TooLarge { size, limit }) => {
                    Counters::add(&self.common.counters.too_large);
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
                    let Some(target) = self.common.successor(&node) else {
                        return Err(self.unavailable_commit(&error));
                    };
                    relocated = true;
                    Counters::add(&self.common.counters.relocated);
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
            attempts: self.common.config.max_merge_retries + 1,
        })
    }

    /// After a write whose condition failed: waits if it was a race lost, then reloads
    /// the session into `state`; a session gone or ended meanwhile ends the commit.
    async fn reload_into(
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
        match self.reload(&id, node, key).await {
            Ok(Some(loaded)) => {
                *state = TransitState::from(loaded);
                Ok(())
            }
            Ok(None) => Err(CommitError::SessionEnded),
            Err(error) => Err(self.unavailable_commit(&error)),
        }
    }

    fn unavailable_commit(&self, error: &StoreError) -> CommitError {
        Counters::add(&self.common.counters.unavailable);
        tracing::warn!(%error, "non-sticky commit failed: no node could take the write");
        CommitError::Unavailable {
            source: error.clone().into(),
        }
    }

    /// Stores a new session on its node (another live node if that one fails).
    pub(super) async fn commit_new(
        self: &Arc<Self>,
        request: RequestSession<C>,
    ) -> Result<CommitOutcome, CommitError> {
        let mut session = match self.common.prepare_new(
            request.session,
            request.had_cookie,
            request.invalidated,
        )? {
            NewSession::Store(session) => session,
            NewSession::Discard(outcome) => return Ok(outcome),
        };
        let ttl = copy_ttl(session.max_inactive());
        let mut last_error = None;
        for _ in 0..3 {
            let node = self.common.node_of(session.id());
            let id = session.id().clone();
            // Sealed per attempt: a layer may bind the bytes to the id.
            let bytes = self
                .common
                .seal(&session)
                .map_err(|source| CommitError::Encoding { source })?;
            match self
                .common
                .store
                .add(&node, &self.common.store_key(&id), &bytes, ttl)
                .await
            {
                Ok(AddOutcome::Stored) => {
                    Counters::add(&self.common.counters.sessions_created);
                    let backup = self.write_backup(id.clone(), bytes, ttl).await;
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
                    Counters::add(&self.common.counters.too_large);
                    return Err(CommitError::TooLarge { size, limit });
                }
                Err(error @ StoreError::Timeout { .. }) => {
                    // One operation timeout is all a request may spend on a hung node.
                    return Err(self.unavailable_commit(&error));
                }
                Err(error) => last_error = Some(error),
            }
            let Some(node) = self.common.live_node() else {
                break;
            };
            session.set_id(SessionId::generate(&node, None));
        }
        let error = last_error.unwrap_or(StoreError::NodeDown {
            node: self.common.node_of(session.id()),
        });
        Err(self.unavailable_commit(&error))
    }

    /// Ends a non-sticky session: a tombstone over its primary copy and deletion markers
    /// beside its backup copies, waited for (in a task of their own, so that a client
    /// hanging up does not stop them half way; retried while their node fails).
    async fn invalidate(self: &Arc<Self>, id: &SessionId) -> CommitOutcome {
        Counters::add(&self.common.counters.invalidated);
        self.common.ended.insert(local_key(id), EndReason::Ended);
        let ttl = copy_ttl(self.common.config.max_inactive);
        let ends = self.ends_of(id, EndReason::Ended, ttl);
        self.common.end_ids(ends, None::<fn()>).await;
        cleared()
    }

    /// What ends the non-sticky id `id`: a tombstone over its primary copy, and on
    /// every node its backup copy may be on (where reads look now, and its usual
    /// node), a deletion marker and the copy's delete. The tombstones live long enough
    /// for copies of the longest interval a session may have (`copy_ttl` of the
    /// session or of the default).
    fn ends_of(&self, id: &SessionId, reason: EndReason, copy_ttl: Ttl) -> Vec<End> {
        let ttl = ends::tombstone_ttl(longest(
            copy_ttl,
            self::copy_ttl(self.common.config.max_inactive),
        ));
        let primary = self.common.node_of(id);
        let mut ends = vec![End {
            node: primary.clone(),
            key: self.common.store_key(id),
            action: EndAction::Tombstone(reason),
            ttl,
            condition: Precondition::None,
        }];
        let mut backup_nodes: Vec<NodeId> = self.common.successor(&primary).into_iter().collect();
        if let Some(usual) = self.common.natural_successor(&primary)
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
    fn moved_away(&self, old: &SessionId, new_node: &NodeId, copy_ttl: Ttl) {
        let ttl = ends::tombstone_ttl(copy_ttl);
        self.common.remember_ends([
            End {
                node: self.common.node_of(old),
                key: self.common.store_key(old),
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
