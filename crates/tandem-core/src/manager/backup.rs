//! Background work: the backup queue with coalescing, retries, remote deletes, the
//! local tier's expiry sweep, and the flush at shutdown.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::{Semaphore, mpsc};

use crate::codec::Codec;
use crate::id::NodeId;
use crate::key::StoreKey;

use super::entry::{LocalEntry, LocalKey};
use super::{Inner, ShutdownReport};

/// The most queued backups one writer sends in one batch.
const BATCH_LIMIT: usize = 64;

/// A session the local tier expired, reported by its eviction listener.
pub(super) struct Expired<C> {
    pub(super) key: LocalKey,
    pub(super) entry: Arc<LocalEntry<C>>,
}

/// A remote copy to delete.
pub(super) struct Delete {
    node: NodeId,
    key: StoreKey,
}

/// The receiving ends, owned by the dispatcher task.
pub(super) struct Receivers<C> {
    backups: mpsc::Receiver<Arc<LocalEntry<C>>>,
    deletes: mpsc::UnboundedReceiver<Delete>,
}

/// The request path's side of the background work.
pub(super) struct Backups<C> {
    /// Entries waiting for a writer. Bounded: a full queue makes commits wait.
    queue: mpsc::Sender<Arc<LocalEntry<C>>>,
    deletes: mpsc::UnboundedSender<Delete>,
    /// Entries whose newest state is not known to be in the remote tier: queued,
    /// being written, or failed and waiting for a retry. Also what a load consults
    /// before the remote tier, so that a session swapped out before its backup landed
    /// is not read back stale. Hashed like the local tier (seeded foldhash, not
    /// SipHash): its keys are those of held sessions, and every write passes here.
    dirty: Mutex<DirtyMap<C>>,
    /// Jobs queued or running.
    in_flight: AtomicUsize,
}

type DirtyMap<C> = HashMap<LocalKey, Arc<LocalEntry<C>>, foldhash::fast::RandomState>;

impl<C: Codec> Backups<C> {
    pub(super) fn new(capacity: usize) -> (Backups<C>, Receivers<C>) {
        let (queue, backups) = mpsc::channel(capacity);
        let (deletes_tx, deletes) = mpsc::unbounded_channel();
        (
            Backups {
                queue,
                deletes: deletes_tx,
                dirty: Mutex::new(DirtyMap::default()),
                in_flight: AtomicUsize::new(0),
            },
            Receivers { backups, deletes },
        )
    }

    /// Queues a backup (write or touch) of `entry`. Returns `false` if one was already
    /// queued: that job will send the newest state, so this one coalesces into it.
    pub(super) async fn enqueue(&self, entry: &Arc<LocalEntry<C>>) -> bool {
        if entry.queued.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        if self.queue.send(Arc::clone(entry)).await.is_err() {
            // Only when the dispatcher is gone, i.e. the runtime shut down.
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            entry.queued.store(false, Ordering::Release);
        }
        true
    }

    /// Like [`enqueue`](Self::enqueue) but never waits: `false` if the queue is full.
    fn try_enqueue(&self, entry: &Arc<LocalEntry<C>>) -> bool {
        if entry.queued.swap(true, Ordering::AcqRel) {
            return true;
        }
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        if self.queue.try_send(Arc::clone(entry)).is_err() {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            entry.queued.store(false, Ordering::Release);
            return false;
        }
        true
    }

    /// Queues the deletion of a remote copy.
    pub(super) fn delete(&self, node: NodeId, key: StoreKey) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        if self.deletes.send(Delete { node, key }).is_err() {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Counts background work started outside the queue (non-sticky backup copies),
    /// so that shutdown waits for it.
    pub(super) fn begin(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
    }

    /// Ends what [`begin`](Self::begin) started.
    pub(super) fn end(&self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    /// Records that `entry` holds state the remote tier may not have. Cheap when it is
    /// already recorded: a flag on the entry, no lock, no key.
    pub(super) fn mark_dirty(&self, entry: &Arc<LocalEntry<C>>) {
        if entry.in_dirty.load(Ordering::Acquire) {
            return;
        }
        let key = super::entry::local_key(&entry.id());
        let mut dirty = self.dirty.lock();
        dirty.insert(key, Arc::clone(entry));
        entry.in_dirty.store(true, Ordering::Release);
    }

    /// The entry's newest state is backed up: no longer dirty. Checked again under the
    /// lock, because a commit may have changed the session since the write started.
    pub(super) fn clean(&self, key: &LocalKey, entry: &Arc<LocalEntry<C>>) {
        let mut dirty = self.dirty.lock();
        let state = entry.state.lock();
        if state.backed_up == state.revision {
            Self::remove_held(&mut dirty, key, entry);
        }
    }

    /// The entry will never be written: drop it from the dirty set.
    pub(super) fn forget(&self, key: &LocalKey, entry: &Arc<LocalEntry<C>>) {
        Self::remove_held(&mut self.dirty.lock(), key, entry);
    }

    fn remove_held(dirty: &mut DirtyMap<C>, key: &LocalKey, entry: &Arc<LocalEntry<C>>) {
        if dirty.get(key).is_some_and(|held| Arc::ptr_eq(held, entry)) {
            dirty.remove(key);
            entry.in_dirty.store(false, Ordering::Release);
        }
    }

    /// The entry's key changed (relocation, new id): it is dirty under the new key.
    pub(super) fn rekey(&self, old: &LocalKey, new: LocalKey, entry: &Arc<LocalEntry<C>>) {
        let mut dirty = self.dirty.lock();
        Self::remove_held(&mut dirty, old, entry);
        dirty.insert(new, Arc::clone(entry));
        entry.in_dirty.store(true, Ordering::Release);
    }

    /// A dirty entry under `key`, if any.
    pub(super) fn unsaved(&self, key: &LocalKey) -> Option<Arc<LocalEntry<C>>> {
        self.dirty
            .lock()
            .get(key)
            .filter(|entry| !entry.is_retired())
            .cloned()
    }

    pub(super) fn dirty_count(&self) -> usize {
        self.dirty.lock().len()
    }

    /// Background jobs queued or running.
    pub(super) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    fn dirty_entries(&self) -> Vec<Arc<LocalEntry<C>>> {
        self.dirty.lock().values().cloned().collect()
    }
}

/// Starts the task that hands queued work to writers (at most the configured number
/// at once), retries failed backups and sweeps the local tier for expired sessions.
/// It holds the manager only weakly and ends when the manager is dropped.
pub(super) fn spawn_dispatcher<C: Codec>(
    inner: &Arc<Inner<C>>,
    receivers: Receivers<C>,
    mut expired: mpsc::UnboundedReceiver<Expired<C>>,
    runtime: &tokio::runtime::Handle,
) {
    let weak = Arc::downgrade(inner);
    let writers = Arc::new(Semaphore::new(inner.config.backup_concurrency));
    let period = inner.config.retry_interval;
    let linger = inner.config.backup_linger;
    let Receivers {
        mut backups,
        mut deletes,
    } = receivers;
    runtime.spawn(async move {
        let mut sweep = tokio::time::interval(period);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                entry = backups.recv() => {
                    let (Some(entry), Some(inner)) = (entry, weak.upgrade()) else { return };
                    let Ok(permit) = Arc::clone(&writers).acquire_owned().await else { return };
                    // Whatever else is queued, or arrives within the linger, goes in
                    // the same batch: one pipelined exchange per node instead of a
                    // round trip per session. The linger is one sleep, not a wait
                    // for each arriving entry: a busy server queues thousands of
                    // backups a second, and each wait would be a wake-up and a
                    // timer set and cancelled. A queue that already fills a batch
                    // is not waited for.
                    let mut batch = vec![entry];
                    if !linger.is_zero() && backups.len() + batch.len() < BATCH_LIMIT {
                        tokio::time::sleep(linger).await;
                    }
                    while batch.len() < BATCH_LIMIT {
                        match backups.try_recv() {
                            Ok(entry) => batch.push(entry),
                            Err(_) => break,
                        }
                    }
                    tokio::spawn(async move {
                        let count = batch.len();
                        // Failures are counted and logged inside; the entries stay dirty
                        // and the sweep retries them.
                        inner.run_backups(batch).await;
                        inner.backups.in_flight.fetch_sub(count, Ordering::AcqRel);
                        drop(permit);
                    });
                }
                delete = deletes.recv() => {
                    let (Some(delete), Some(inner)) = (delete, weak.upgrade()) else { return };
                    let Ok(permit) = Arc::clone(&writers).acquire_owned().await else { return };
                    tokio::spawn(async move {
                        inner.delete_remote(&delete.node, &delete.key).await;
                        inner.backups.in_flight.fetch_sub(1, Ordering::AcqRel);
                        drop(permit);
                    });
                }
                expired_entry = expired.recv() => {
                    let (Some(expired_entry), Some(inner)) = (expired_entry, weak.upgrade()) else { return };
                    tokio::spawn(async move { inner.expire(expired_entry).await });
                }
                _ = sweep.tick() => {
                    let Some(inner) = weak.upgrade() else { return };
                    inner.local.run_pending_tasks();
                    retry(&inner);
                    inner.repair_copies();
                    inner.export_metrics();
                }
            }
        }
    });
}

/// Re-queues dirty entries that are not queued and whose node is available again.
fn retry<C: Codec>(inner: &Inner<C>) {
    for entry in inner.backups.dirty_entries() {
        if entry.is_retired() {
            let key = super::entry::local_key(&entry.id());
            inner.backups.forget(&key, &entry);
            continue;
        }
        let node = inner.node_of(&entry.id());
        if inner.store.is_available(&node) && !inner.backups.try_enqueue(&entry) {
            return; // queue full: the next sweep continues
        }
    }
}

/// Waits for queued work to finish, then writes what is still dirty, all within
/// `deadline`.
pub(super) async fn flush<C: Codec>(inner: &Arc<Inner<C>>, deadline: Duration) -> ShutdownReport {
    let started = Instant::now();
    let written_before = inner.counters.snapshot().backups_written;
    while inner.backups.in_flight.load(Ordering::Acquire) > 0 && started.elapsed() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Whatever is still dirty is written here, each entry once. An entry that a
    // commit is writing synchronously meanwhile (commits are synchronous from the
    // start of the shutdown) is up to date by the time its turn comes here, and counts
    // as saved; what cannot be written (its node down, or the deadline passed) is
    // reported as unsaved.
    let leftovers = inner.backups.dirty_entries();
    let remaining = deadline.saturating_sub(started.elapsed());
    let mut writers = tokio::task::JoinSet::new();
    for entry in leftovers {
        let inner = Arc::clone(inner);
        writers.spawn(async move {
            matches!(
                tokio::time::timeout(remaining, inner.run_backup(&entry)).await,
                Ok(Ok(()))
            )
        });
    }
    let mut unsaved = 0;
    let all_joined = tokio::time::timeout(remaining, async {
        while let Some(saved) = writers.join_next().await {
            if !matches!(saved, Ok(true)) {
                unsaved += 1;
            }
        }
    })
    .await;
    if all_joined.is_err() {
        unsaved += writers.len();
    }
    let written = inner.counters.snapshot().backups_written - written_before;
    if unsaved > 0 {
        tracing::warn!(
            unsaved,
            "shutdown: some sessions could not be backed up in time"
        );
    } else {
        tracing::info!(written, "shutdown: every pending backup written");
    }
    ShutdownReport {
        written: usize::try_from(written).unwrap_or(usize::MAX),
        unsaved,
    }
}
