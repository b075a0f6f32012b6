//! Sticky mode: the local tier holds the primary copy of each session.
//!
//! A request for a session this server holds under exactly the id it sent touches no
//! network. Everything else is here: loading a session from the remote tier (after a
//! restart, a swap-out for space, or a takeover from another server), moving a held
//! session off a down node, and the session's local lock; committing a request's
//! changes, invalidation and id cycling are in `commit`. The remote writes themselves
//! are in `writes`, the background queue in `backup`.
//!
//! Ids end for good here. A session invalidated or given a new id is ended on this
//! server at once (the old id is remembered as ended, and its requests in flight
//! cannot commit into the session under its new id) and everywhere else by a
//! tombstone over its remote copy and an announcement in the peer feed, which makes
//! every other server drop its own copy.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use moka::notification::RemovalCause;
use tokio::sync::mpsc;

use tandem_core::{Codec, Precondition, Route, SessionId};

use crate::common::ends::{self, End, EndAction, EndReason};
use crate::common::local_key::{LocalKey, local_key};
use crate::common::merge::cookie_for;
use crate::common::stats::Counters;
use crate::common::ttl::remote_ttl;
use crate::common::{Common, same_session};
use crate::config::LockTimeoutPolicy;
use crate::error::LoadError;
use crate::outcome::{BackupStatus, CommitOutcome};
use crate::request::{Attached, RequestSession};
use backup::{Backups, Expired};
use entry::{EntryState, LocalEntry, RemoteCopy, SessionExpiry};
use feed::Feed;
use remote_load::{Found, RemoteLoad};

mod backup;
mod commit;
pub(crate) mod entry;
mod feed;
mod remote_load;
mod resident;
#[cfg(test)]
mod tests;
mod writes;

/// How often a request looks its session up again when the copy it found was retired
/// while it waited for the session's lock (replaced by a newer copy, or ended).
pub(crate) const LOOKUPS_AFTER_RETIRE: u8 = 2;

/// How many locks order remote writes. Sessions share them by address; with far more
/// stripes than concurrent writers, two sessions rarely wait for each other.
const WRITE_ORDER_STRIPES: usize = 1024;

/// The sticky engine: what sticky mode owns besides what both modes share.
pub(crate) struct Engine<C> {
    pub(crate) common: Arc<Common>,
    /// The local tier: the primary copy of each session this server holds.
    pub(crate) local: moka::sync::Cache<LocalKey, Arc<LocalEntry<C>>, foldhash::fast::RandomState>,
    /// Remote loads in progress, so that concurrent requests for a session this server
    /// does not hold share one remote read.
    pub(crate) loading: parking_lot::Mutex<HashMap<LocalKey, Arc<RemoteLoad<C>>>>,
    /// Where recently relocated sessions went: old local key to new id. Concurrent
    /// requests still carrying the old id follow the session instead of missing it.
    moved: moka::sync::Cache<LocalKey, SessionId>,
    /// The write-behind queue and the sessions not backed up yet.
    pub(crate) backups: Backups<C>,
    /// Orders the remote writes of each session (see `run_backup`).
    write_order: Box<[tokio::sync::Mutex<()>]>,
    /// The announcements to and from the other servers.
    feed: Arc<Feed>,
    /// Where sessions that expired go to have their remote copies ended.
    expired: mpsc::UnboundedSender<Expired<C>>,
}

impl<C: Codec> Engine<C> {
    /// The engine over `common`, with its background tasks started on `runtime`.
    pub(crate) fn start(common: Arc<Common>, runtime: &tokio::runtime::Handle) -> Arc<Engine<C>> {
        let config = &common.config;
        let (expired_tx, expired_rx) = mpsc::unbounded_channel();
        let listener_expired = expired_tx.clone();
        let listener_counters = Arc::clone(&common.counters);
        let listener_ended = common.ended.clone();
        let local = moka::sync::Cache::builder()
            .max_capacity(config.local_capacity_bytes)
            .weigher(|_key: &LocalKey, entry: &Arc<LocalEntry<C>>| entry.weight())
            // LRU, not TinyLFU: TinyLFU may refuse to admit a new or changed session
            // when the cache is full, and a refused primary copy would be lost until
            // its backup lands. LRU always admits and swaps out the coldest session.
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .expire_after(SessionExpiry)
            .eviction_listener(move |key, entry: Arc<LocalEntry<C>>, cause| match cause {
                RemovalCause::Expired if entry.claim_expiry() => {
                    // At once, not in the task that ends the remote copy: a request
                    // arriving meanwhile must not reload the still-live remote copy
                    // and bring the expired session back.
                    entry.retire();
                    listener_ended.insert((*key).clone(), EndReason::Ended);
                    // The receiver is gone only when the manager is; nothing to do then.
                    let _ = listener_expired.send(Expired {
                        key: (*key).clone(),
                        entry,
                    });
                }
                RemovalCause::Size => Counters::add(&listener_counters.swapped_out),
                RemovalCause::Expired | RemovalCause::Explicit | RemovalCause::Replaced => {}
            })
            // Every request hashes its id once here. A fast hasher with a per-process
            // random seed is enough even though requests probe the tier with the id
            // text as sent: a seeded table cannot be flooded by lookups, and only ids
            // this server generated or found in the remote tier are inserted.
            .build_with_hasher(foldhash::fast::RandomState::default());
        let moved = moka::sync::Cache::builder()
            .max_capacity(100_000)
            .time_to_live(config.moved_ttl)
            .build();
        let (backups, backup_rx) = Backups::new(config.backup_queue, Arc::clone(&common.in_flight));
        let (feed, announcements) = Feed::new(
            config.key_secret.as_ref(),
            config.peer_feed_interval.is_some(),
            Arc::clone(&common.counters),
        );
        let engine = Arc::new(Engine {
            local,
            loading: parking_lot::Mutex::new(HashMap::new()),
            moved,
            backups,
            write_order: (0..WRITE_ORDER_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            feed: Arc::new(feed),
            expired: expired_tx,
            common,
        });
        backup::spawn_dispatcher(&engine, backup_rx, expired_rx, announcements, runtime);
        engine
    }

    /// Loads the session for a request (see `SessionManager::load`).
    pub(crate) async fn load(
        self: &Arc<Self>,
        incoming: Option<&str>,
    ) -> Result<RequestSession<C>, LoadError> {
        // The common request: a session this server holds, under exactly the id the
        // client sent. Found by the text as sent, before any parsing: a text equal to
        // a held id is valid by construction, and the held id stands in for a parsed
        // copy (nothing validated, nothing allocated, one lookup).
        if let Some((entry, id)) = incoming.and_then(|text| self.held_as_sent(text)) {
            Counters::add(&self.common.counters.loaded_local);
            return self.attach(entry, id, LOOKUPS_AFTER_RETIRE).await;
        }
        let Some(id) = incoming.and_then(|text| self.common.parse_incoming(text)) else {
            return Ok(self.fresh(None, incoming.is_some()));
        };
        let our_route = self
            .common
            .config
            .route
            .as_ref()
            .map(|route| route.as_str());
        // A session this server holds under the id's key and our route, whose held
        // id still differs from the one sent (its route not rewritten yet): attach
        // rewrites it. No network.
        if id.route() == our_route
            && let Some(entry) = self.held(id.storage_id())
        {
            Counters::add(&self.common.counters.loaded_local);
            return self.attach(entry, id, LOOKUPS_AFTER_RETIRE).await;
        }
        Box::pin(self.load_elsewhere(id, LOOKUPS_AFTER_RETIRE)).await
    }

    /// See `SessionManager::commit_now`.
    #[expect(
        clippy::result_large_err,
        reason = "the request is handed back as it came, for `commit`; boxing it would add the allocation this avoids"
    )]
    pub(crate) fn commit_now(
        &self,
        request: RequestSession<C>,
    ) -> Result<CommitOutcome, RequestSession<C>> {
        let Attached::Local(entry) = &request.attached else {
            return Err(request);
        };
        if request.session.is_modified()
            || request.cycle_id
            || request.invalidated
            || entry.is_retired()
            || self.touch_due(entry)
            || self.common.aborted.load(Ordering::Acquire)
        {
            return Err(request);
        }
        Counters::add(&self.common.counters.commits);
        Counters::add(&self.common.counters.backups_skipped_unchanged);
        // What `commit_existing` does for an unchanged session: slide the local
        // expiry, and keep or set the cookie.
        let cookie = {
            let mut state = entry.state.lock();
            if let Some(incoming) = &request.incoming
                && !same_session(incoming, state.session.id())
            {
                // Cycled since the request loaded it: `commit` answers that.
                drop(state);
                return Err(request);
            }
            state.session.touch(self.common.wall());
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

    /// Sessions whose newest state is not known to be in the remote tier, plus remote
    /// work queued or running.
    pub(crate) fn pending_backups(&self) -> usize {
        self.backups.dirty_count() + self.common.in_flight.count()
    }

    /// A session that does not exist yet, on a live node, with this server's route.
    fn fresh(&self, unknown: Option<SessionId>, had_cookie: bool) -> RequestSession<C> {
        let session = self
            .common
            .new_session(unknown.as_ref(), self.common.config.route.as_ref());
        RequestSession::fresh(session, had_cookie)
    }

    /// Ends `ends` (see `Common::end_ids`), then announces `announce` in the peer feed.
    async fn end_ids(&self, ends: Vec<End>, announce: Option<SessionId>) -> bool {
        let feed = Arc::clone(&self.feed);
        self.common
            .end_ids(ends, announce.map(|id| move || feed.announce(&id)))
            .await
    }

    /// Announces `id` in the peer feed (see `Feed::announce`).
    fn announce(&self, id: &SessionId) {
        self.feed.announce(id);
    }

    /// A session this server holds under the id's key and route (its id may still
    /// differ from the one sent, by the route), or else
    /// [`load_elsewhere`](Self::load_elsewhere).
    pub(crate) async fn load_parsed(
        self: &Arc<Self>,
        id: SessionId,
        lookups: u8,
    ) -> Result<RequestSession<C>, LoadError> {
        let our_route = self
            .common
            .config
            .route
            .as_ref()
            .map(|route| route.as_str());
        if id.route() == our_route
            && let Some(entry) = self.held(id.storage_id())
        {
            Counters::add(&self.common.counters.loaded_local);
            return self.attach(entry, id, lookups).await;
        }
        Box::pin(self.load_elsewhere(id, lookups)).await
    }

    /// The entry the local tier holds under `key`, unless it was retired (ended, or
    /// replaced) and the cache has not let it go yet: a request must not find it and
    /// then give up on a session that lives elsewhere.
    ///
    /// A session inactive for its whole interval by the manager's clock is expired
    /// here, if the tier has not expired it yet (see `LocalEntry::expired_at`).
    pub(crate) fn held(&self, key: &str) -> Option<Arc<LocalEntry<C>>> {
        let entry = self.local.get(key).filter(|entry| !entry.is_retired())?;
        if entry.expired_at(self.common.now_ms()) {
            self.expire_held(&entry);
            return None;
        }
        Some(entry)
    }

    /// A session this server does not hold under the id's own key and route: moved
    /// off a down node, held by another server (takeover), ended, or only in the
    /// remote tier.
    pub(crate) async fn load_elsewhere(
        self: &Arc<Self>,
        id: SessionId,
        lookups: u8,
    ) -> Result<RequestSession<C>, LoadError> {
        // A session that expired locally stays hidden until the cache's housekeeping
        // reports it; reported now, its id is known as ended before anything reads
        // its still-live remote copy (which outlives it by the keep-alive slack).
        self.local.run_pending_tasks();
        let our_route = self
            .common
            .config
            .route
            .as_ref()
            .map(|route| route.as_str());
        let key = local_key(&id);
        // Not held under the id itself: the session may have moved to another node
        // (a session held under the id wins over such a record, since a session can
        // move away from a node and later back to it).
        let moved = if self.local.contains_key(&key) {
            None
        } else {
            self.moved.get(&key)
        };
        // The id as sent stays the request's incoming id, so that the commit of a
        // request that followed the session tells the client its new id.
        let (sent, id, key) = match moved {
            Some(moved) => {
                let route = id.route().and_then(|route| Route::new(route).ok());
                let key = local_key(&moved);
                (Some(id), moved.with_route(route.as_ref()), key)
            }
            None => (None, id, key),
        };
        if let Some(reason) = self.common.ended_reason(&key, &id) {
            return Ok(self.ended_id(reason));
        }
        let found = if id.route() != our_route {
            self.take_over(&id, &key).await?
        } else {
            match self.held(key.as_str()) {
                Some(entry) => {
                    Counters::add(&self.common.counters.loaded_local);
                    Found::Entry(entry)
                }
                None => self.load_remote(&id, &key).await?,
            }
        };
        match found {
            Found::Entry(entry) => self.attach(entry, sent.unwrap_or(id), lookups).await,
            Found::Unknown => Ok(self.fresh(Some(id), true)),
            Found::Ended(reason) => Ok(self.ended_id(reason)),
        }
    }

    /// The new session a request gets for an id that ended. A cycled id does not
    /// clear the cookie: the browser may already hold the new id, set by the response
    /// of the login that cycled it.
    pub(crate) fn ended_id(&self, reason: EndReason) -> RequestSession<C> {
        Counters::add(&self.common.counters.ended_ids_presented);
        self.fresh(None, reason != EndReason::Cycled)
    }

    /// The held session whose id is exactly `text` (route included), and that id.
    pub(crate) fn held_as_sent(&self, text: &str) -> Option<(Arc<LocalEntry<C>>, SessionId)> {
        if text.len() > tandem_core::MAX_SESSION_ID_LEN {
            return None;
        }
        // Neither the random part nor the node id contains a dot.
        let storage = text.split_once('.').map_or(text, |(storage, _)| storage);
        let entry = self.held(storage)?;
        let id = {
            let state = entry.state.lock();
            let id = state.session.id();
            (id.as_str() == text).then(|| id.clone())?
        };
        let our_route = self
            .common
            .config
            .route
            .as_ref()
            .map(|route| route.as_str());
        (id.route() == our_route).then_some((entry, id))
    }

    /// A held session found expired by the manager's clock before the local tier
    /// noticed: handled as the tier's listener handles one it expires (retired and
    /// its id ended at once, its remote copy ended in the background), and taken
    /// out of the tier.
    fn expire_held(&self, entry: &Arc<LocalEntry<C>>) {
        if !entry.claim_expiry() {
            return;
        }
        let key = local_key(&entry.id());
        self.common.ended.insert(key.clone(), EndReason::Ended);
        self.discard(&key, entry);
        // The receiver is gone only when the manager is; nothing to do then.
        let _ = self.expired.send(Expired {
            key,
            entry: Arc::clone(entry),
        });
    }

    /// Drops a local entry that must not be used or written again, and takes it out
    /// of the local tier unless another entry has taken its key since.
    pub(crate) fn discard(&self, key: &LocalKey, entry: &Arc<LocalEntry<C>>) {
        entry.retire();
        self.backups.forget(key, entry);
        self.local
            .entry(key.clone())
            .and_compute_with(|held| match held {
                Some(held) if Arc::ptr_eq(held.value(), entry) => moka::ops::compute::Op::Remove,
                _ => moka::ops::compute::Op::Nop,
            });
    }

    /// Prepares a request on a held session: takes its lock, checks that the session
    /// is still the one the request's id names, rewrites its route, relocates it off a
    /// down node, and snapshots it.
    pub(crate) async fn attach(
        self: &Arc<Self>,
        entry: Arc<LocalEntry<C>>,
        incoming: SessionId,
        lookups: u8,
    ) -> Result<RequestSession<C>, LoadError> {
        let lock = self.lock(&entry).await?;
        if entry.is_retired() {
            // Retired while this request found it or waited for its lock: ended, or
            // replaced by a newer copy. Looked up again, as a new request would be.
            drop(lock);
            return match lookups.checked_sub(1) {
                Some(lookups) => Box::pin(self.load_parsed(incoming, lookups)).await,
                // Replaced again and again while this request waited: it does not
                // give the session up (a new, empty one would), it asks to be retried.
                None => Err(LoadError::Unavailable),
            };
        }
        let (snapshot, moved_from) = {
            let mut state = entry.state.lock();
            if !same_session(&incoming, state.session.id()) {
                // The session got a new id since this request found it under the old
                // one: the old id is ended, and nothing of the session under its new
                // id is this request's to see.
                drop(state);
                return Ok(self.ended_id(EndReason::Cycled));
            }
            let our_route = self.common.config.route.as_ref().map(|r| r.as_str());
            let off_route = state.session.id().route() != our_route;
            let node_down = !self
                .common
                .store
                .is_available(self.common.node_ref(state.session.id()));
            // The common request needs neither change, and copies nothing here.
            let moved_from = if off_route || node_down {
                self.rewrite_id(&mut state, off_route, node_down)
            } else {
                None
            };
            (state.session.session(), moved_from)
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
            lock_guard: lock,
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
            wanted = wanted.with_route(self.common.config.route.as_ref());
        }
        if node_down {
            match self.common.live_node() {
                Some(node) => wanted = wanted.with_node(&node),
                None => Counters::add(&self.common.counters.degraded),
            }
        }
        let moved_from = (wanted.storage_id() != current.storage_id()).then(|| current.clone());
        if wanted != current {
            state.session.set_id(wanted);
            if moved_from.is_some() {
                // The new node holds nothing yet.
                state.revision += 1;
                state.set_remote(RemoteCopy::Absent);
            }
        }
        moved_from
    }

    /// Moves a held session from the down node of `old` to the node of `new`. The
    /// copy left on the down node gets a tombstone once that node answers again, so
    /// that the old id does not load it as a live session later (after this
    /// server's record of the move is gone, or on another server).
    async fn relocate(&self, entry: &Arc<LocalEntry<C>>, old: &SessionId, new: &SessionId) {
        Counters::add(&self.common.counters.relocated);
        tracing::info!(from = %old.redacted(), to = %new.redacted(), "session relocated off a down node");
        let old_key = local_key(old);
        let new_key = local_key(new);
        self.moved.insert(old_key.clone(), new.clone());
        // Moving back to a key it left earlier: that key no longer points away.
        self.moved.invalidate(&new_key);
        self.local.insert(new_key.clone(), Arc::clone(entry));
        self.local.invalidate(&old_key);
        self.backups.rekey(&old_key, new_key, entry);
        // The new key may be one the session left earlier, whose old copy still
        // awaits the tombstone of that move: the tombstone must not land over the
        // copy written now, and the old copy it was for is this server's to replace.
        if self
            .common
            .ends
            .cancel(&self.common.node_of(new), &self.common.store_key(new))
        {
            entry.state.lock().over_own_moved_copy = true;
        }
        self.common.remember_ends([End {
            node: self.common.node_of(old),
            key: self.common.store_key(old),
            action: EndAction::Tombstone(EndReason::Moved),
            ttl: ends::tombstone_ttl(remote_ttl(entry.max_inactive())),
            condition: Precondition::None,
        }]);
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
        Counters::add(&self.common.counters.lock_waits);
        let timeout = self.common.config.lock_timeout;
        let started = self.common.now();
        let waited = tokio::time::timeout(timeout, Arc::clone(lock).lock_owned()).await;
        self.common
            .counters
            .histograms
            .lock_wait(self.common.since(started));
        match waited {
            Ok(guard) => Ok(Some(guard)),
            Err(_) => {
                Counters::add(&self.common.counters.lock_timeouts);
                match self.common.config.lock_timeout_policy {
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
}
