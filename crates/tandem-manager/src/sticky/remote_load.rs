//! Loading a session this server does not hold from the remote tier: one read shared
//! by the concurrent requests that want it, and the takeover of a session another
//! server held (the local copy is trusted only if the remote copy is still the one
//! this server last wrote or read).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tandem_core::{Codec, NodeId, SessionId, StoreError};

use super::Engine;
use super::entry::{LocalEntry, RemoteCopy};
use crate::common::digest;
use crate::common::ends::{self, EndReason};
use crate::common::local_key::LocalKey;
use crate::common::stats::Counters;
use crate::config::Concurrency;
use crate::error::LoadError;

/// What a remote read of a session found.
pub(crate) enum Found<C> {
    /// The session, now held locally.
    Entry(Arc<LocalEntry<C>>),
    /// No session under this id (or one that cannot be decoded).
    Unknown,
    /// The id ended, as its tombstone says.
    Ended(EndReason),
}

/// What a remote load shared by concurrent requests ended with, when it found no
/// session.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Missing {
    /// No copy, or one that cannot be decoded.
    Absent,
    /// A tombstone.
    Ended(EndReason),
    /// The node failed or is down: the session may well exist.
    Unreachable,
}

/// One request's share of a remote load. Dropped when the request is done with it,
/// finished or cancelled: the last share of an unfinished load, or any share of a
/// finished one, removes the load from the map, so that loads whose requests all went
/// away leave nothing behind (a client can drop its connection mid-load).
pub(crate) struct SharedLoad<'a, C> {
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
pub(crate) type RemoteLoad<C> = tokio::sync::OnceCell<Result<Arc<LocalEntry<C>>, Missing>>;

impl<C: Codec> Engine<C> {
    /// Loads a session this server does not hold from its node, through the local
    /// tier's loader so that concurrent requests for it share one remote read. A node
    /// that is down or does not answer is [`LoadError::Unavailable`]: the session may
    /// well exist, and the client keeps its cookie.
    pub(super) async fn load_remote(
        &self,
        id: &SessionId,
        key: &LocalKey,
    ) -> Result<Found<C>, LoadError> {
        if let Some(entry) = self.backups.unsaved(key) {
            // Swapped out for space while its backup was still pending: the pending
            // entry is newer than anything remote.
            self.local.insert(key.clone(), Arc::clone(&entry));
            Counters::add(&self.common.counters.loaded_local);
            return Ok(Found::Entry(entry));
        }
        if self.common.negative.contains_key(key) {
            Counters::add(&self.common.counters.negative_cache_hits);
            return Ok(Found::Unknown);
        }
        let node = self.common.node_of(id);
        if !self.common.store.is_available(&node) {
            Counters::add(&self.common.counters.remote_load_failures);
            return Err(LoadError::Unavailable);
        }
        let shared = SharedLoad {
            loading: &self.loading,
            key,
            load: Some(Arc::clone(
                self.loading.lock().entry(key.clone()).or_default(),
            )),
        };
        let load: &RemoteLoad<C> = shared.load.as_ref().expect("set above");
        let loaded = load
            .get_or_init(|| async {
                // A load that finished between this request's miss and now.
                if let Some(entry) = self.held(key.as_str()) {
                    return Ok(entry);
                }
                match self.read_remote(&node, id).await {
                    Ok(Found::Entry(entry)) => {
                        self.local.insert(key.clone(), Arc::clone(&entry));
                        // Another server may hold a copy of it too (it took the
                        // session over earlier): it drops that copy.
                        self.announce(id);
                        Ok(entry)
                    }
                    Ok(Found::Unknown) => Err(Missing::Absent),
                    Ok(Found::Ended(reason)) => Err(Missing::Ended(reason)),
                    Err(_) => Err(Missing::Unreachable),
                }
            })
            .await
            .clone();
        drop(shared);
        match loaded {
            Ok(entry) => Ok(Found::Entry(entry)),
            Err(Missing::Absent) => {
                if !self.common.config.negative_cache_ttl.is_zero() {
                    self.common.negative.insert(key.clone(), ());
                }
                Ok(Found::Unknown)
            }
            Err(Missing::Ended(reason)) => {
                self.common.ended.insert(key.clone(), reason);
                Ok(Found::Ended(reason))
            }
            Err(Missing::Unreachable) => Err(LoadError::Unavailable),
        }
    }

    /// Reads and decodes the remote copy of `id` into a new local entry (not yet in
    /// the local tier). A copy that cannot be decoded is no session (counted, logged).
    #[tracing::instrument(name = "tandem.remote_load", level = "debug", skip_all, fields(session = %id.redacted(), node = %node))]
    async fn read_remote(&self, node: &NodeId, id: &SessionId) -> Result<Found<C>, StoreError> {
        let started = self.common.now();
        // Before the read: a failover during it leaves an epoch that differs.
        let epoch = self.common.store.node_epoch(node);
        let result = self
            .common
            .store
            .get(node, &self.common.store_key(id))
            .await;
        self.common
            .counters
            .histograms
            .remote_load(self.common.since(started));
        let item = match result {
            Ok(item) => item,
            Err(error) => {
                Counters::add(&self.common.counters.remote_load_failures);
                tracing::debug!(session = %id.redacted(), %error, "remote load failed");
                return Err(error);
            }
        };
        let Some(item) = item else {
            return Ok(Found::Unknown);
        };
        if let Some(reason) = ends::tombstone_reason(&item.value) {
            return Ok(Found::Ended(reason));
        }
        match self.common.decode(id, &item.value) {
            Ok(session) => {
                Counters::add(&self.common.counters.loaded_remote);
                tracing::debug!(
                    session = %id.redacted(),
                    bytes = item.value.len(),
                    elapsed = ?self.common.since(started),
                    "session loaded from the remote tier"
                );
                let entry = LocalEntry::new(
                    session,
                    RemoteCopy::Cas(item.cas),
                    self.common.config.concurrency == Concurrency::Lock,
                    self.common.now_ms(),
                );
                entry
                    .remote_digest
                    .store(digest(&item.value), Ordering::Relaxed);
                entry.remote_epoch.store(epoch, Ordering::Relaxed);
                Ok(Found::Entry(Arc::new(entry)))
            }
            Err(error) => {
                Counters::add(&self.common.counters.undecodable);
                tracing::warn!(
                    session = %id.redacted(),
                    %error,
                    "stored session cannot be decoded; starting a new session"
                );
                Ok(Found::Unknown)
            }
        }
    }

    /// An id whose route names another server (or none): this server takes the session
    /// over. The local copy, if any, is kept only if the remote copy is still exactly
    /// what this server last wrote or read; otherwise the remote copy replaces it.
    /// Either way the session is written back under this server's ownership (so that
    /// the old owner's next write of it is refused), and the takeover is announced in
    /// the peer feed (so that the old owner drops its copy).
    #[tracing::instrument(name = "tandem.takeover", level = "debug", skip_all, fields(session = %id.redacted()))]
    pub(super) async fn take_over(
        self: &Arc<Self>,
        id: &SessionId,
        key: &LocalKey,
    ) -> Result<Found<C>, LoadError> {
        if self.common.negative.contains_key(key) {
            Counters::add(&self.common.counters.negative_cache_hits);
            return Ok(Found::Unknown);
        }
        let node = self.common.node_of(id);
        let held = self.held(key.as_str());
        // A backup of the held copy still on its way could land between this read and
        // its use below: the read would then carry an older token than the one that
        // backup records, and replace it (the bytes may well be the same), and the
        // next write, conditional on the older token, would be refused; this server
        // would drop its own copy, with every change since, as another server's. So
        // the copy is read and compared under the held copy's write-order lock, which
        // every backup of it holds while it runs. Released before the write back
        // below, which takes it (or, for a new entry, maybe the same stripe) itself.
        let order = match &held {
            Some(held) => Some(self.write_order(held).lock().await),
            None => None,
        };
        let epoch = self.common.store.node_epoch(&node);
        let remote = if self.common.store.is_available(&node) {
            let started = self.common.now();
            let result = self
                .common
                .store
                .get(&node, &self.common.store_key(id))
                .await;
            self.common
                .counters
                .histograms
                .remote_load(self.common.since(started));
            result
        } else {
            Err(StoreError::NodeDown { node: node.clone() })
        };
        let item = match remote {
            Ok(item) => item,
            Err(error) => {
                // The local copy cannot be verified, and a stale one may be a session
                // that was logged out elsewhere: not served. Nor is the session
                // dropped for the client: it may well exist.
                Counters::add(&self.common.counters.remote_load_failures);
                tracing::info!(session = %id.redacted(), %error, "takeover impossible: remote copy unreadable");
                if let Some(held) = held {
                    self.discard(key, &held);
                }
                return Err(LoadError::Unavailable);
            }
        };
        let Some(item) = item else {
            if let Some(held) = held {
                self.discard(key, &held);
            }
            if !self.common.config.negative_cache_ttl.is_zero() {
                self.common.negative.insert(key.clone(), ());
            }
            return Ok(Found::Unknown);
        };
        if let Some(reason) = ends::tombstone_reason(&item.value) {
            if let Some(held) = held {
                self.discard(key, &held);
            }
            self.common.ended.insert(key.clone(), reason);
            return Ok(Found::Ended(reason));
        }
        let remote_digest = digest(&item.value);
        let entry = match held {
            Some(held) if held.remote_digest.load(Ordering::Relaxed) == remote_digest => {
                held.state.lock().set_remote(RemoteCopy::Cas(item.cas));
                held.remote_epoch.store(epoch, Ordering::Relaxed);
                Counters::add(&self.common.counters.loaded_local);
                held
            }
            held => {
                if let Some(held) = held {
                    self.discard(key, &held);
                }
                let session = match self.common.decode(id, &item.value) {
                    Ok(session) => session,
                    Err(error) => {
                        Counters::add(&self.common.counters.undecodable);
                        tracing::warn!(session = %id.redacted(), %error, "stored session cannot be decoded; starting a new session");
                        return Ok(Found::Unknown);
                    }
                };
                let entry = Arc::new(LocalEntry::new(
                    session,
                    RemoteCopy::Cas(item.cas),
                    self.common.config.concurrency == Concurrency::Lock,
                    self.common.now_ms(),
                ));
                entry.remote_digest.store(remote_digest, Ordering::Relaxed);
                entry.remote_epoch.store(epoch, Ordering::Relaxed);
                self.local.insert(key.clone(), Arc::clone(&entry));
                Counters::add(&self.common.counters.loaded_remote);
                entry
            }
        };
        Counters::add(&self.common.counters.taken_over);
        tracing::info!(
            session = %id.redacted(),
            from = id.route().unwrap_or("-"),
            "session taken over from another server"
        );
        self.announce(id);
        // Written back at once: the old owner's next write, conditional on the token
        // it knows, is then refused, instead of overwriting this server's changes.
        entry.state.lock().revision += 1;
        drop(order);
        Box::pin(self.schedule_write(&entry)).await;
        Ok(Found::Entry(entry))
    }
}
