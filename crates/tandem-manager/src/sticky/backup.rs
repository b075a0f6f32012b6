//! Background work: the backup queue with coalescing, retries, the local tier's
//! expiry sweep, the peer feed's timer, and the flush at shutdown.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{Semaphore, mpsc};

use tandem_core::Codec;
use tandem_core::SessionId;

use super::Engine;
use super::entry::LocalEntry;
use crate::common::background::InFlight;
use crate::common::local_key::{LocalKey, local_key};
use crate::outcome::ShutdownReport;

/// The most queued backups one writer sends in one batch.
const BATCH_LIMIT: usize = 64;

/// A session the local tier expired, reported by its eviction listener.
pub(crate) struct Expired<C> {
    pub(crate) key: LocalKey,
    pub(crate) entry: Arc<LocalEntry<C>>,
}

/// The receiving ends, owned by the dispatcher task.
pub(crate) struct Receivers<C> {
    backups: mpsc::Receiver<Arc<LocalEntry<C>>>,
}

/// The request path's side of the background work.
pub(crate) struct Backups<C> {
    /// Entries waiting for a writer. Bounded: a full queue makes commits wait.
    queue: mpsc::Sender<Arc<LocalEntry<C>>>,
    /// Entries whose newest state is not known to be in the remote tier: queued,
    /// being written, or failed and waiting for a retry. Also what a load consults
    /// before the remote tier, so that a session swapped out before its backup landed
    /// is not read back stale. Hashed like the local tier (seeded foldhash, not
    /// SipHash): its keys are those of held sessions, and every write passes here.
    dirty: Mutex<DirtyMap<C>>,
    /// The weight of the dirty entries, as each weighed when it became dirty: what
    /// `max_unsaved_bytes` bounds.
    dirty_bytes: AtomicU64,
    /// Jobs queued or running (shared with the manager's other background work).
    in_flight: Arc<InFlight>,
}

/// The dirty entries, with the weight each was counted with.
type DirtyMap<C> = HashMap<LocalKey, (Arc<LocalEntry<C>>, u64), foldhash::fast::RandomState>;

impl<C: Codec> Backups<C> {
    pub(crate) fn new(capacity: usize, in_flight: Arc<InFlight>) -> (Backups<C>, Receivers<C>) {
        let (queue, backups) = mpsc::channel(capacity);
        (
            Backups {
                queue,
                dirty: Mutex::new(DirtyMap::default()),
                dirty_bytes: AtomicU64::new(0),
                in_flight,
            },
            Receivers { backups },
        )
    }

    /// Queues a backup (write or touch) of `entry`, waiting for room in the queue if
    /// it is full. Returns `false` if one was already queued: that job will send the
    /// newest state, so this one coalesces into it.
    ///
    /// Cancellation-safe: the room is reserved first, and only a reserved place marks
    /// the entry queued and counts the job, in one step with no wait in between. A
    /// commit dropped while it waits for room (a client hanging up, a timeout layer)
    /// leaves nothing marked; its entry stays dirty and the sweep queues it.
    pub(crate) async fn enqueue(&self, entry: &Arc<LocalEntry<C>>) -> bool {
        if entry.queued.load(Ordering::Acquire) {
            return false;
        }
        let Ok(place) = self.queue.reserve().await else {
            // Only when the dispatcher is gone, i.e. the runtime shut down.
            return true;
        };
        if entry.queued.swap(true, Ordering::AcqRel) {
            // Another commit queued it while this one waited: the reserved place is
            // given back by the drop.
            return false;
        }
        self.in_flight.begin(1);
        place.send(Arc::clone(entry));
        true
    }

    /// Like [`enqueue`](Self::enqueue) but never waits: `false` if the queue is full.
    fn try_enqueue(&self, entry: &Arc<LocalEntry<C>>) -> bool {
        if entry.queued.swap(true, Ordering::AcqRel) {
            return true;
        }
        self.in_flight.begin(1);
        if self.queue.try_send(Arc::clone(entry)).is_err() {
            self.in_flight.end(1);
            entry.queued.store(false, Ordering::Release);
            return false;
        }
        true
    }

    /// Records that `entry` holds state the remote tier may not have. Cheap when it is
    /// already recorded: a flag on the entry, no lock, no key.
    pub(crate) fn mark_dirty(&self, entry: &Arc<LocalEntry<C>>) {
        if entry.in_dirty.load(Ordering::Acquire) {
            return;
        }
        let mut dirty = self.dirty.lock();
        // The id is read under the lock that re-keying takes too: a commit that gives
        // the session a new id meanwhile cannot leave it recorded under the old one.
        let key = local_key(&entry.id());
        self.insert(&mut dirty, key, entry);
    }

    fn insert(&self, dirty: &mut DirtyMap<C>, key: LocalKey, entry: &Arc<LocalEntry<C>>) {
        let weight = u64::from(entry.weight());
        if let Some((_, replaced)) = dirty.insert(key, (Arc::clone(entry), weight)) {
            self.dirty_bytes.fetch_sub(replaced, Ordering::AcqRel);
        }
        self.dirty_bytes.fetch_add(weight, Ordering::AcqRel);
        entry.in_dirty.store(true, Ordering::Release);
    }

    /// The weight of the sessions waiting for their backup, in bytes.
    pub(crate) fn dirty_bytes(&self) -> u64 {
        self.dirty_bytes.load(Ordering::Acquire)
    }

    /// The entry's newest state is backed up: no longer dirty. Checked again under the
    /// lock, because a commit may have changed the session since the write started.
    pub(crate) fn clean(&self, key: &LocalKey, entry: &Arc<LocalEntry<C>>) {
        let mut dirty = self.dirty.lock();
        let state = entry.state.lock();
        if state.backed_up == state.revision {
            self.remove_held(&mut dirty, key, entry);
        }
    }

    /// The entry will never be written: drop it from the dirty set.
    pub(crate) fn forget(&self, key: &LocalKey, entry: &Arc<LocalEntry<C>>) {
        self.remove_held(&mut self.dirty.lock(), key, entry);
    }

    fn remove_held(&self, dirty: &mut DirtyMap<C>, key: &LocalKey, entry: &Arc<LocalEntry<C>>) {
        if dirty
            .get(key)
            .is_some_and(|(held, _)| Arc::ptr_eq(held, entry))
            && let Some((_, weight)) = dirty.remove(key)
        {
            self.dirty_bytes.fetch_sub(weight, Ordering::AcqRel);
            entry.in_dirty.store(false, Ordering::Release);
        }
    }

    /// The entry's key changed (relocation, new id): it is dirty under the new key.
    pub(crate) fn rekey(&self, old: &LocalKey, new: LocalKey, entry: &Arc<LocalEntry<C>>) {
        let mut dirty = self.dirty.lock();
        self.remove_held(&mut dirty, old, entry);
        self.insert(&mut dirty, new, entry);
    }

    /// A dirty entry under `key`, if any.
    pub(crate) fn unsaved(&self, key: &LocalKey) -> Option<Arc<LocalEntry<C>>> {
        self.dirty
            .lock()
            .get(key)
            .map(|(entry, _)| entry)
            .filter(|entry| !entry.is_retired())
            .cloned()
    }

    pub(crate) fn dirty_count(&self) -> usize {
        self.dirty.lock().len()
    }

    fn dirty_entries(&self) -> Vec<Arc<LocalEntry<C>>> {
        self.dirty
            .lock()
            .values()
            .map(|(entry, _)| Arc::clone(entry))
            .collect()
    }
}

/// Starts the task that hands queued work to writers (at most the configured number
/// at once), retries failed backups and session ends, sweeps the local tier for
/// expired sessions, writes and reads the peer feed. It holds the manager only weakly
/// and ends when the manager is dropped.
pub(crate) fn spawn_dispatcher<C: Codec>(
    inner: &Arc<Engine<C>>,
    receivers: Receivers<C>,
    mut expired: mpsc::UnboundedReceiver<Expired<C>>,
    mut announcements: mpsc::Receiver<SessionId>,
    runtime: &tokio::runtime::Handle,
) {
    let weak = Arc::downgrade(inner);
    let writers = Arc::new(Semaphore::new(inner.common.config.backup_concurrency));
    let period = inner.common.config.retry_interval;
    let linger = inner.common.config.backup_linger;
    // Without a feed the timer still runs, rarely, and its ticks do nothing.
    let feed_period = inner
        .common
        .config
        .peer_feed_interval
        .unwrap_or(Duration::from_secs(3600));
    let Receivers { mut backups } = receivers;
    runtime.spawn(async move {
        let mut sweep = tokio::time::interval(period);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first read after one period: a server that just started holds nothing
        // to drop.
        let mut feed = tokio::time::interval_at(tokio::time::Instant::now() + feed_period, feed_period);
        feed.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                        inner.common.in_flight.end(count);
                        drop(permit);
                    });
                }
                announcement = announcements.recv() => {
                    let (Some(first), Some(inner)) = (announcement, weak.upgrade()) else { return };
                    let mut batch = vec![first];
                    while batch.len() < super::feed::PER_APPEND {
                        match announcements.try_recv() {
                            Ok(id) => batch.push(id),
                            Err(_) => break,
                        }
                    }
                    let writers = Arc::clone(&writers);
                    tokio::spawn(async move {
                        let Ok(_permit) = writers.acquire_owned().await else { return };
                        inner.publish(batch).await;
                    });
                }
                expired_entry = expired.recv() => {
                    let (Some(expired_entry), Some(inner)) = (expired_entry, weak.upgrade()) else { return };
                    // Remote writes share the writers' bound: a burst of expiries (many
                    // sessions of one bot run) must not open a connection each.
                    let writers = Arc::clone(&writers);
                    tokio::spawn(async move {
                        let Ok(_permit) = writers.acquire_owned().await else { return };
                        inner.expire(expired_entry).await;
                    });
                }
                _ = sweep.tick() => {
                    let Some(inner) = weak.upgrade() else { return };
                    inner.local.run_pending_tasks();
                    retry(&inner);
                    inner.common.retry_ends();
                    inner.common.export_metrics(inner.local.entry_count(), inner.pending_backups());
                }
                _ = feed.tick() => {
                    let Some(inner) = weak.upgrade() else { return };
                    inner.read_feed();
                }
            }
        }
    });
}

/// Re-queues dirty entries that are not queued and whose node is available again.
fn retry<C: Codec>(inner: &Engine<C>) {
    for entry in inner.backups.dirty_entries() {
        if entry.is_retired() {
            let key = local_key(&entry.id());
            inner.backups.forget(&key, &entry);
            continue;
        }
        let node = inner.common.node_of(&entry.id());
        if inner.common.store.is_available(&node) && !inner.backups.try_enqueue(&entry) {
            return; // queue full: the next sweep continues
        }
    }
}

impl<C: Codec> Engine<C> {
    /// Waits for queued work to finish, then writes what is still dirty, then the session
    /// ends still waiting, all within `deadline`.
    pub(crate) async fn flush(self: &Arc<Self>, deadline: Duration) -> ShutdownReport {
        let inner = self;
        let started = inner.common.now();
        let written_before = inner.common.counters.snapshot().backups_written;
        // Queued work drains by itself, but gets at most half of the deadline: a job that
        // hangs on a hung node must not use up the time the direct writes below need.
        let queue_share = deadline / 2;
        while inner.common.in_flight.count() > 0 && inner.common.since(started) < queue_share {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Whatever is still dirty is written here, each entry once. An entry that a
        // commit is writing synchronously meanwhile (commits are synchronous from the
        // start of the shutdown) is up to date by the time its turn comes here, and counts
        // as saved; what cannot be written (its node down, or the deadline passed) is
        // reported as unsaved.
        let leftovers = inner.backups.dirty_entries();
        let remaining = deadline.saturating_sub(inner.common.since(started));
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
        let ends_unwritten = inner
            .common
            .flush_ends(deadline.saturating_sub(inner.common.since(started)))
            .await;
        let written = inner.common.counters.snapshot().backups_written - written_before;
        if unsaved > 0 || ends_unwritten > 0 {
            tracing::warn!(
                unsaved,
                ends_unwritten,
                "shutdown: some remote writes could not be done in time"
            );
        } else {
            tracing::info!(written, "shutdown: every pending backup written");
        }
        ShutdownReport {
            written: usize::try_from(written).unwrap_or(usize::MAX),
            unsaved,
            ends_unwritten,
        }
    }
}
