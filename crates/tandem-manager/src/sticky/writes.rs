//! Sticky mode's writes to the remote tier: backups (of one session, or of a batch
//! pipelined per node), keep-alive touches, and the tombstone of an expired session.
//!
//! Every backup is conditional on what this server last knew of the remote copy
//! ([`RemoteCopy`]): it is created with `add` where there was none, and written with
//! compare-and-swap on the token of this server's last write or read otherwise. So a
//! server never overwrites a copy that another server wrote since (it took the
//! session over, or ended it with a tombstone): the write is refused, and this server
//! drops its own copy as no longer its own (counted in `ownership_lost`; the next
//! request reloads the current copy). A write whose answer was lost leaves the token
//! unknown: the next write first reads the copy, and goes on only if it holds bytes
//! this server wrote.
//!
//! Writes of one session never overlap: two overlapping writes could reach memcached
//! in the opposite order and leave the older state stored. The state is read under
//! the session's write-order lock, so a later writer always sends a newer state, and a
//! session retired meanwhile (invalidated, expired, taken over) is checked under that
//! lock too, so that nothing writes it after its end.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use tandem_core::Codec;
use tandem_core::StoreKey;
use tandem_core::{NodeId, SessionId};
use tandem_core::{Precondition, StoreError, Ttl, WriteItem, WriteOutcome};

use super::Engine;
use super::backup::Expired;
use super::entry::{LocalEntry, RemoteCopy};
use crate::common::ends::{self, End, EndAction, EndReason};
use crate::common::local_key::local_key;
use crate::common::stats::Counters;
use crate::common::ttl::remote_ttl;
use crate::common::{digest, unix_millis};
use crate::error::WriteFailure;

/// One backup, as read from an entry under its write-order lock.
pub(super) struct BackupJob<'a> {
    id: SessionId,
    /// Borrowed from the manager's node list: a job is one per write.
    node: &'a NodeId,
    key: StoreKey,
    ttl: Ttl,
    /// The encoded state, if it is newer than what the remote tier holds.
    bytes: Option<Vec<u8>>,
    revision: u64,
    /// The last access time the encoded state carries (see
    /// `LocalEntry::remote_accessed`).
    accessed: SystemTime,
    /// What this server knows of the remote copy: the condition of the write.
    remote: RemoteCopy,
    /// The node's epoch, read before the write is sent (see
    /// `LocalEntry::remote_epoch`).
    epoch: u64,
}

/// A backup write of a batch: the entry, what to send, and its condition.
type EntryWrite<'a, C> = (Arc<LocalEntry<C>>, BackupJob<'a>, Precondition);

/// What became of one write.
enum Written {
    /// Done, well or not.
    Done(Result<(), WriteFailure>),
    /// The copy vanished under a compare-and-swap (its node restarted empty, or
    /// evicted it): write it again as a new copy.
    Again,
    /// A new copy found its key taken: by another server's copy or a tombstone (this
    /// server's copy is then no longer the session), or by the tombstone of this
    /// session's own move away from this node, which its move back may replace.
    Taken,
    /// A compare-and-swap refused while a write of this server whose answer was lost
    /// is outstanding: that write may have landed after this one's condition was read
    /// (memcached need not handle two connections' requests in the order they were
    /// sent). The copy is ours if it holds exactly that write's bytes.
    Raced,
    /// A compare-and-swap refused with no write of this server outstanding: another
    /// server wrote the copy since (it took the session over), unless the copy is
    /// older than what this server last wrote, which only a store that went back in
    /// time (a Redis restarted from its snapshot) hands out.
    Conflicted,
}

impl<C: Codec> Engine<C> {
    /// Writes the entry's newest state to its node, or touches the remote copy if it
    /// is up to date and due. Returns a description of the failure, if any.
    #[tracing::instrument(name = "tandem.backup", level = "trace", skip_all)]
    pub(super) async fn run_backup(&self, entry: &Arc<LocalEntry<C>>) -> Result<(), WriteFailure> {
        if self.common.aborted.load(Ordering::Acquire) {
            return Err(WriteFailure::Aborted);
        }
        let _order = self.write_order(entry).lock().await;
        if entry.is_retired() {
            // Never written again. Changes it holds that no write carried are lost
            // with it: a synchronous commit that made them must not report them saved.
            let state = entry.state.lock();
            if state.revision > state.backed_up {
                return Err(WriteFailure::Dropped);
            }
            return Ok(());
        }
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
        if job.epoch != entry.remote_epoch.load(Ordering::Relaxed) {
            return self.rewrite_after_epoch_change(entry, &job).await;
        }
        match self.common.store.touch(job.node, &job.key, job.ttl).await {
            Ok(true) => {
                entry
                    .remote_refreshed_ms
                    .store(self.common.now_ms(), Ordering::Relaxed);
                Counters::add(&self.common.counters.touches);
                Ok(())
            }
            Ok(false) => {
                // The copy is gone: its node restarted empty, or evicted it. It is
                // written again as a new copy; if a tombstone (the session ended
                // elsewhere) or another server's copy is there by then, that write is
                // refused and this server drops its own.
                Counters::add(&self.common.counters.touch_failures);
                {
                    let mut state = entry.state.lock();
                    state.backed_up = 0;
                    state.set_remote(RemoteCopy::Absent);
                }
                self.backups.mark_dirty(entry);
                let job = self.backup_job(entry)?;
                self.write(entry, job).await
            }
            Err(error) => {
                Counters::add(&self.common.counters.touch_failures);
                Err(error.into())
            }
        }
    }

    /// The copy's node failed over, or restarted from older files, since this server
    /// wrote or read the copy: what it holds now may be an older copy (the writes
    /// since were lost), which a touch would keep alive under the newer local state.
    /// The current state is written in full instead, under the usual condition: the
    /// token this server remembers is refused by an older copy, which is then
    /// recognised as older than this server's last write and replaced
    /// (`stale_copies_replaced`); a copy another server wrote (it took the session
    /// over) or a tombstone is not older, and this server gives the session up as
    /// after any refused write. A copy that vanished is created again. A write that
    /// fails leaves the session dirty, retried like any backup.
    async fn rewrite_after_epoch_change(
        &self,
        entry: &Arc<LocalEntry<C>>,
        job: &BackupJob<'_>,
    ) -> Result<(), WriteFailure> {
        Counters::add(&self.common.counters.backups_rewritten_after_epoch_change);
        tracing::info!(
            session = %job.id.redacted(),
            node = %job.node,
            "the node's epoch changed (a failover?): backup rewritten instead of touched"
        );
        entry.state.lock().backed_up = 0;
        self.backups.mark_dirty(entry);
        let job = self.backup_job(entry)?;
        self.write(entry, job).await
    }

    /// The lock that orders the remote writes of `entry`: one of a fixed set, chosen
    /// by the entry's address, so that entries need no lock of their own.
    pub(super) fn write_order(&self, entry: &Arc<LocalEntry<C>>) -> &tokio::sync::Mutex<()> {
        &self.write_order[self.write_order_index(entry)]
    }

    fn write_order_index(&self, entry: &Arc<LocalEntry<C>>) -> usize {
        let address = Arc::as_ptr(entry) as usize;
        (address >> 4) % self.write_order.len()
    }

    /// Backs up several queued entries: the writes go to each node as one pipelined
    /// batch, under the write-order locks of all of them (taken in stripe order, so
    /// two batches cannot wait for each other); touches, writes whose condition must
    /// be checked first and writes to do again take the single-entry path.
    pub(super) async fn run_backups(&self, batch: Vec<Arc<LocalEntry<C>>>) {
        for entry in &batch {
            entry.queued.store(false, Ordering::Release);
        }
        if batch.len() == 1 || self.common.aborted.load(Ordering::Acquire) {
            for entry in &batch {
                let _ = self.run_backup(entry).await;
            }
            return;
        }
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
        let mut guards = Vec::with_capacity(batch.len());
        let mut writes: Vec<EntryWrite<'_, C>> = Vec::with_capacity(batch.len());
        let mut last_index = None;
        for (index, entry) in batch {
            // Sessions that share a stripe are written under one guard.
            if last_index != Some(index) {
                last_index = Some(index);
                guards.push(self.write_order[index].lock().await);
            }
            // Retired while this batch waited for the guard: never written again.
            if entry.is_retired() {
                continue;
            }
            match self.backup_job(&entry) {
                Ok(job) if job.bytes.is_some() => match precondition(job.remote) {
                    // A new copy whose key has an end being written: the single-entry
                    // path waits for it (see `Ends::withdraw`).
                    Some(Precondition::Absent)
                        if self.common.ends.is_writing(job.node, &job.key) =>
                    {
                        later.push(entry);
                    }
                    Some(precondition) => writes.push((entry, job, precondition)),
                    None => later.push(entry),
                },
                // A touch, or nothing to send: the single-entry path decides, once the
                // guards are released.
                Ok(_) => later.push(entry),
                Err(_) => {}
            }
        }
        // Grouped by a scan rather than a map: a store has a handful of nodes, and
        // a map would hash the node id once per entry.
        let mut by_node: Vec<(&NodeId, Vec<EntryWrite<'_, C>>)> = Vec::new();
        for write in writes {
            match by_node.iter_mut().find(|(node, _)| *node == write.1.node) {
                Some((_, jobs)) => jobs.push(write),
                None => by_node.push((write.1.node, vec![write])),
            }
        }
        for (node, jobs) in by_node {
            let items: Vec<WriteItem<'_>> = jobs
                .iter()
                .map(|(_, job, precondition)| WriteItem {
                    key: &job.key,
                    value: job.bytes.as_deref().unwrap_or_default(),
                    ttl: job.ttl,
                    precondition: *precondition,
                })
                .collect();
            let started = self.common.now();
            let mut results = self.common.store.write_many(node, &items).await.into_iter();
            let elapsed = self.common.since(started);
            for (entry, job, precondition) in &jobs {
                // A store that answered fewer items than it was given broke the
                // trait's contract: the unanswered ones failed (counted, retried).
                let result = results.next().unwrap_or_else(|| {
                    Err(StoreError::Server {
                        node: node.clone(),
                        message: "write_many returned no result for this item".into(),
                    })
                });
                if let Written::Again | Written::Taken | Written::Raced =
                    self.wrote(entry, job, *precondition, result, elapsed)
                {
                    later.push(Arc::clone(entry));
                }
            }
        }
        drop(guards);
        for entry in later {
            let _ = self.run_backup(&entry).await;
        }
    }

    /// What a backup of `entry` sends now: the sealed state if it is newer than the
    /// remote copy, where it goes, and what is known of the copy there.
    pub(super) fn backup_job(&self, entry: &LocalEntry<C>) -> Result<BackupJob<'_>, WriteFailure> {
        let state = entry.state.lock();
        let id = state.session.id().clone();
        let node = self.common.node_ref(&id);
        let epoch = self.common.store.node_epoch(node);
        let bytes = if state.revision > state.backed_up {
            Some(self.common.seal_envelope(&id, state.session.envelope().to_vec()).inspect_err(|error| {
                Counters::add(&self.common.counters.backups_failed);
                tracing::warn!(session = %id.redacted(), %error, "session could not be sealed for its backup");
            }).map_err(WriteFailure::Sealing)?)
        } else {
            None
        };
        Ok(BackupJob {
            node,
            epoch,
            key: self.common.store_key(&id),
            ttl: remote_ttl(state.session.max_inactive()),
            bytes,
            revision: state.revision,
            accessed: state.session.last_accessed(),
            remote: state.remote(),
            id,
        })
    }

    /// Writes a job's bytes under its condition, checking first what is there when
    /// the condition is unknown.
    async fn write(
        &self,
        entry: &Arc<LocalEntry<C>>,
        job: BackupJob<'_>,
    ) -> Result<(), WriteFailure> {
        let Some(bytes) = &job.bytes else {
            return Ok(());
        };
        let mut precondition = match precondition(job.remote) {
            Some(precondition) => precondition,
            None => match self.recheck_copy(entry, &job).await? {
                Some(precondition) => precondition,
                None => return self.lose_ownership(entry, &job.id),
            },
        };
        // A new copy under a key this session left (it moves back to that node) must
        // not have the tombstone of its move away land over it.
        if precondition == Precondition::Absent
            && self.common.ends.withdraw(job.node, &job.key).await
        {
            entry.state.lock().over_own_moved_copy = true;
        }
        // At most three times: as known, as a new copy if it had vanished, over the
        // tombstone of its own move if it moves back.
        for _ in 0..3 {
            let started = self.common.now();
            let unanswered = Unanswered {
                entry,
                id: &job.id,
                bytes,
                answered: false,
            };
            let result = self
                .common
                .store
                .write(job.node, &job.key, bytes, job.ttl, precondition)
                .await;
            unanswered.answered();
            match self.wrote(
                entry,
                &job,
                precondition,
                result,
                self.common.since(started),
            ) {
                Written::Done(result) => return result,
                Written::Again => precondition = Precondition::Absent,
                Written::Taken => match self.common.store.get(job.node, &job.key).await {
                    Ok(Some(item))
                        if ends::tombstone_reason(&item.value) == Some(EndReason::Moved)
                            || entry.state.lock().over_own_moved_copy =>
                    {
                        precondition = Precondition::Cas(item.cas);
                    }
                    Ok(_) => {
                        return self.lose_ownership(entry, &job.id);
                    }
                    Err(error) => {
                        Counters::add(&self.common.counters.backups_failed);
                        return Err(error.into());
                    }
                },
                Written::Conflicted => match self.common.store.get(job.node, &job.key).await {
                    Ok(Some(item)) if self.older_than_ours(entry, &job.id, &item.value) => {
                        Counters::add(&self.common.counters.stale_copies_replaced);
                        tracing::warn!(session = %job.id.redacted(), "the remote copy is older than what this server wrote (a store restored from a snapshot?); replaced");
                        precondition = Precondition::Cas(item.cas);
                    }
                    Ok(_) => {
                        Counters::add(&self.common.counters.backups_failed);
                        return self.lose_ownership(entry, &job.id);
                    }
                    Err(error) => {
                        Counters::add(&self.common.counters.backups_failed);
                        return Err(error.into());
                    }
                },
                Written::Raced => match self.common.store.get(job.node, &job.key).await {
                    Ok(Some(item)) if self.attempted_here(entry, &item.value) => {
                        precondition = Precondition::Cas(item.cas);
                    }
                    Ok(Some(item)) if self.older_than_ours(entry, &job.id, &item.value) => {
                        Counters::add(&self.common.counters.stale_copies_replaced);
                        tracing::warn!(session = %job.id.redacted(), "the remote copy is older than what this server wrote (a failover that lost writes?); replaced");
                        precondition = Precondition::Cas(item.cas);
                    }
                    Ok(_) => {
                        Counters::add(&self.common.counters.backups_failed);
                        return self.lose_ownership(entry, &job.id);
                    }
                    Err(error) => {
                        Counters::add(&self.common.counters.backups_failed);
                        return Err(error.into());
                    }
                },
            }
        }
        Err(WriteFailure::KeptChanging)
    }

    /// A write's condition is unknown (the answer to the last write was lost): reads
    /// the copy. Returns the condition to write under if it is this server's (or
    /// gone), `None` if another server wrote it since (the caller then gives the
    /// session up, see [`lose_ownership`](Self::lose_ownership)).
    async fn recheck_copy(
        &self,
        entry: &Arc<LocalEntry<C>>,
        job: &BackupJob<'_>,
    ) -> Result<Option<Precondition>, WriteFailure> {
        match self.own_copy(entry, job.node, &job.key).await {
            Ok(OwnCopy::Absent) => Ok(Some(Precondition::Absent)),
            Ok(OwnCopy::Ours(token)) => Ok(Some(Precondition::Cas(token))),
            Ok(OwnCopy::Older(token)) => {
                Counters::add(&self.common.counters.stale_copies_replaced);
                tracing::warn!(session = %job.id.redacted(), "the remote copy is older than what this server wrote (a failover that lost writes?); replaced");
                Ok(Some(Precondition::Cas(token)))
            }
            Ok(OwnCopy::Theirs) => Ok(None),
            Err(error) => {
                Counters::add(&self.common.counters.backups_failed);
                Err(error.into())
            }
        }
    }

    /// Reads the copy of `entry` and tells whether it holds bytes this server wrote or
    /// read (the last ones known, or those of a write whose answer was lost), or an
    /// older state than those (see [`older_than_ours`](Self::older_than_ours)).
    async fn own_copy(
        &self,
        entry: &LocalEntry<C>,
        node: &NodeId,
        key: &StoreKey,
    ) -> Result<OwnCopy, StoreError> {
        let Some(item) = self.common.store.get(node, key).await? else {
            return Ok(OwnCopy::Absent);
        };
        if ends::tombstone_reason(&item.value).is_some() {
            return Ok(OwnCopy::Theirs);
        }
        let found = digest(&item.value);
        let ours = found == entry.remote_digest.load(Ordering::Relaxed)
            || entry.state.lock().attempted.contains(found);
        Ok(if ours {
            OwnCopy::Ours(item.cas)
        } else if self.older_than_ours(entry, &entry.id(), &item.value) {
            OwnCopy::Older(item.cas)
        } else {
            OwnCopy::Theirs
        })
    }

    /// Whether `stored` holds this session as it was before the state this server
    /// last wrote or read: its last access is earlier. Every copy written after that
    /// one was derived from it (writes are conditional on its token), and a session's
    /// last access never goes back (`Session::touch`), whatever the writers' clocks; so
    /// an earlier one can only come from a store that lost writes it had acknowledged
    /// and kept older ones (a restart from a snapshot). A copy that cannot be read as
    /// a session (a tombstone, foreign bytes) is not older: it is not replaced.
    fn older_than_ours(&self, entry: &LocalEntry<C>, id: &SessionId, stored: &[u8]) -> bool {
        let ours = entry.remote_accessed_ms.load(Ordering::Relaxed);
        if ours == 0 || ends::tombstone_reason(stored).is_some() {
            return false;
        }
        self.common
            .decode::<C>(id, stored)
            .is_ok_and(|found| unix_millis(found.last_accessed()) < ours)
    }

    /// Whether `stored` is exactly what a write of this server whose answer was lost
    /// sent.
    fn attempted_here(&self, entry: &LocalEntry<C>, stored: &[u8]) -> bool {
        entry.state.lock().attempted.contains(digest(stored))
    }

    /// Records the outcome of one backup write.
    fn wrote(
        &self,
        entry: &Arc<LocalEntry<C>>,
        job: &BackupJob<'_>,
        precondition: Precondition,
        result: Result<WriteOutcome, StoreError>,
        elapsed: Duration,
    ) -> Written {
        let bytes = job.bytes.as_deref().unwrap_or_default();
        self.common
            .counters
            .histograms
            .backup_write(elapsed, bytes.len());
        if moved_on(entry, &job.id) {
            // The session got a new id (a login) or moved to another node while this
            // write was on its way: it went to the old key, which that change ends
            // with a tombstone. Whatever it met there (that tombstone, say) tells
            // nothing of the copy under the new key, which its own write creates.
            return Written::Done(Ok(()));
        }
        match result {
            Ok(WriteOutcome::Stored(token)) => {
                entry
                    .remote_refreshed_ms
                    .store(self.common.now_ms(), Ordering::Relaxed);
                entry.remote_epoch.store(job.epoch, Ordering::Relaxed);
                let written = digest(bytes);
                entry.remote_digest.store(written, Ordering::Relaxed);
                entry
                    .remote_accessed_ms
                    .store(unix_millis(job.accessed), Ordering::Relaxed);
                let clean = {
                    let mut state = entry.state.lock();
                    state.backed_up = state.backed_up.max(job.revision);
                    state.over_own_moved_copy = false;
                    // A store that reports no token leaves the next write to check
                    // the copy against these bytes.
                    state.attempted.clear();
                    let remote = match token {
                        Some(token) => RemoteCopy::Cas(token),
                        None => {
                            state.attempted.record(written);
                            RemoteCopy::Unknown
                        }
                    };
                    state.set_remote(remote);
                    state.backed_up == state.revision
                };
                if clean {
                    self.backups.clean(&local_key(&job.id), entry);
                }
                Counters::add(&self.common.counters.backups_written);
                tracing::trace!(
                    session = %job.id.redacted(),
                    bytes = bytes.len(),
                    ?elapsed,
                    "backup written"
                );
                Written::Done(Ok(()))
            }
            Ok(WriteOutcome::NotFound) => {
                entry.state.lock().set_remote(RemoteCopy::Absent);
                Written::Again
            }
            Ok(WriteOutcome::Exists) => Written::Taken,
            Ok(WriteOutcome::Conflict) if !entry.state.lock().attempted.is_empty() => {
                Written::Raced
            }
            Ok(WriteOutcome::Conflict) => Written::Conflicted,
            Err(error) => {
                Counters::add(&self.common.counters.backups_failed);
                if ends::ambiguous(&error) && precondition != Precondition::None {
                    // The write may have landed: what is there is checked next time.
                    let mut state = entry.state.lock();
                    state.set_remote(RemoteCopy::Unknown);
                    state.attempted.record(digest(bytes));
                }
                if error.is_node_failure() {
                    tracing::debug!(session = %job.id.redacted(), %error, "backup failed; will retry");
                } else {
                    tracing::warn!(session = %job.id.redacted(), %error, "backup failed; will retry");
                }
                Written::Done(Err(error.into()))
            }
        }
    }

    /// Another server wrote this session's copy since this server did (it took the
    /// session over, or ended it): this server's copy is not the session any more.
    /// `sent` is the id the refused write (or the read that checked the copy) was for.
    ///
    /// Unless the session left that key meanwhile: the refusal, and the read that
    /// looked at the copy after it, are network round trips, during which a commit may
    /// give the session a new id (a login) or move it to another node. The old key
    /// then holds that change's tombstone (or another server's copy of the old id),
    /// which says nothing of the session under its new key; dropping the entry would
    /// lose the session with the login's change, whose own backup would find the entry
    /// retired. As in `wrote`, such a write is done: the new key gets its own write.
    /// The id is compared and the entry retired under the state lock, which a commit
    /// that changes the id holds while it checks that the entry is not retired
    /// (`apply`): either the commit sees the entry retired (and moves to the current
    /// copy), or this sees the new id.
    pub(super) fn lose_ownership(
        &self,
        entry: &Arc<LocalEntry<C>>,
        sent: &SessionId,
    ) -> Result<(), WriteFailure> {
        let id = {
            let state = entry.state.lock();
            if state.session.id().storage_id() != sent.storage_id() {
                return Ok(());
            }
            if entry.is_retired() {
                return Err(WriteFailure::NotOurs);
            }
            entry.retire();
            state.session.id().clone()
        };
        Counters::add(&self.common.counters.ownership_lost);
        tracing::info!(session = %id.redacted(), "another server wrote this session's copy; the local copy is dropped");
        self.discard(&local_key(&id), entry);
        Err(WriteFailure::NotOurs)
    }

    /// A session expired in the local tier (the cache's listener already retired it,
    /// so that no request reloads it meanwhile): its remote copy gets a tombstone,
    /// unless another server wrote the copy since, so that neither this server nor
    /// another one loads it again within the copy's remaining lifetime.
    pub(super) async fn expire(&self, expired: Expired<C>) {
        let Expired { key, entry } = expired;
        self.backups.forget(&key, &entry);
        Counters::add(&self.common.counters.expired);
        if self
            .local
            .get(&key)
            .is_some_and(|held| !Arc::ptr_eq(&held, &entry))
        {
            // Another copy holds the key now: the remote copy is that one's.
            return;
        }
        // After any backup of it still being written: its outcome is the token the
        // tombstone is conditional on.
        let _order = self.write_order(&entry).lock().await;
        let (id, remote, interval) = {
            let state = entry.state.lock();
            (
                state.session.id().clone(),
                state.remote(),
                state.session.max_inactive(),
            )
        };
        tracing::debug!(session = %id.redacted(), "session expired");
        let (node, store_key) = (self.common.node_of(&id), self.common.store_key(&id));
        let token = match remote {
            RemoteCopy::Absent => return,
            RemoteCopy::Cas(token) => token,
            RemoteCopy::Unknown => match self.own_copy(&entry, &node, &store_key).await {
                // An older copy of the session is ended as well.
                Ok(OwnCopy::Ours(token) | OwnCopy::Older(token)) => token,
                Ok(OwnCopy::Absent | OwnCopy::Theirs) => return,
                Err(error) => {
                    tracing::debug!(session = %id.redacted(), %error, "expired session's copy unreadable; it expires by its TTL");
                    return;
                }
            },
        };
        let end = End {
            node,
            key: store_key,
            action: EndAction::Tombstone(EndReason::Ended),
            ttl: ends::tombstone_ttl(remote_ttl(interval)),
            condition: Precondition::Cas(token),
        };
        if !self.common.write_end(&end).await {
            self.common.remember_ends([end]);
        }
    }
}

/// A backup write on its way whose answer is not recorded yet. If the future writing
/// it is dropped first (a synchronous backup of a request whose client hung up or
/// that a timeout layer gave up, a timeout around `run_backup`), the write may still
/// land, under a token this server never learns. Left as it was, the entry's next
/// write would be conditional on the older token, be refused, and make this server
/// drop its own copy, with every change since, as written by another server. So the
/// drop leaves the copy unknown, as a lost answer does: the next write first checks
/// what is there against these bytes.
struct Unanswered<'a, C: Codec> {
    entry: &'a LocalEntry<C>,
    /// The id the write was sent under.
    id: &'a SessionId,
    bytes: &'a [u8],
    answered: bool,
}

impl<C: Codec> Unanswered<'_, C> {
    /// The answer arrived: `wrote` records it.
    fn answered(mut self) {
        self.answered = true;
    }
}

impl<C: Codec> Drop for Unanswered<'_, C> {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let mut state = self.entry.state.lock();
        // A write to a key the session left since tells nothing of its new one.
        if state.session.id().storage_id() != self.id.storage_id() {
            return;
        }
        state.set_remote(RemoteCopy::Unknown);
        state.attempted.record(digest(self.bytes));
    }
}

/// Whether the session of `entry` left the key a write under `sent` went to: it got
/// a new id, or moved to another node.
fn moved_on<C: Codec>(entry: &LocalEntry<C>, sent: &SessionId) -> bool {
    entry.state.lock().session.id().storage_id() != sent.storage_id()
}

/// What [`Inner::own_copy`] found.
enum OwnCopy {
    /// No copy.
    Absent,
    /// A copy this server wrote or read, with its token.
    Ours(tandem_core::CasToken),
    /// A copy older than the state this server last wrote or read (the store lost
    /// writes it had acknowledged), with its token: replaced like one of ours.
    Older(tandem_core::CasToken),
    /// A copy another server wrote, or a tombstone.
    Theirs,
}

/// The condition of a write given what is known of the copy; `None` when it must be
/// read first.
fn precondition(remote: RemoteCopy) -> Option<Precondition> {
    match remote {
        RemoteCopy::Absent => Some(Precondition::Absent),
        RemoteCopy::Cas(token) => Some(Precondition::Cas(token)),
        RemoteCopy::Unknown => None,
    }
}
