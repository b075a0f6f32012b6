//! Backup copies that are older than the primary: copied again from the primary once
//! the nodes answer.
//!
//! A change whose backup copy failed (its node hung, was down, or no node was free to
//! hold it) lives only on the primary; one whose copy went to a further node because
//! the usual backup node was down leaves an older copy on the usual one. If the
//! primary then goes down, or is merely still marked down after coming back, the next
//! read moves the session to the backup copy it finds first, which is older: the
//! change is lost. So such a session is remembered here, and the manager's sweep
//! (every retry interval) copies what the primary holds then, the newest state, to
//! where reads look (the first available node after the primary) and, once it answers
//! again, to the usual backup node.
//!
//! A repair never replaces a newer copy: it reads the backup copy first and writes with
//! compare-and-swap on that read (or `add` where there was none), so a commit that
//! wrote the copy meanwhile wins and the repair stops.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tandem_core::Codec;
use tandem_core::{AddOutcome, CasOutcome, StoreError, Ttl};
use tandem_core::{NodeId, SessionId};

use super::Engine;
use super::copy::shortest;
use crate::common::local_key::{LocalKey, local_key};
use crate::common::stats::Counters;

/// At most this many sessions wait for a repair; beyond it a failure is only counted
/// (`backup_copy_repairs_abandoned`) and logged (its copy is rewritten by the
/// session's next change, or by its next read if the copy is missing).
pub(crate) const MAX_PENDING: usize = 100_000;

/// A repair not possible within this long is given up (counted and logged): by then
/// its session has most likely changed again, moved, or ended.
const GIVE_UP_AFTER: Duration = Duration::from_secs(600);

/// How long after a repair was remembered a write that caused it may still land: a
/// copy found current before then is checked again (memcached handles a write within
/// milliseconds of its sending; a dropped or timed-out caller may have sent it).
pub(super) const SETTLE: Duration = Duration::from_secs(1);

/// At most this many copies are repaired per sweep, one after another, so that a node
/// coming back after a long outage is not hit with every repair at once.
const PER_SWEEP: usize = 1_000;

/// Where a session's backup copy is older than its primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stale {
    /// Where reads look (the first available node after the primary), and on the
    /// usual backup node: the copy's write failed.
    WhereReadsLook,
    /// Only on the usual backup node, which was down when the copy went to a further
    /// node: repaired once it answers again.
    OnUsualNode,
}

/// A session waiting for its repair.
struct PendingRepair {
    id: SessionId,
    ttl: Ttl,
    stale: Stale,
    since: Instant,
}

/// The sessions waiting for a repair, one entry per session.
#[derive(Default)]
pub(crate) struct Repairs {
    pending: parking_lot::Mutex<HashMap<LocalKey, PendingRepair>>,
    /// Whether a sweep's repairs are still running: the next sweep waits for them.
    running: AtomicBool,
}

impl Repairs {
    /// Remembers that the backup copy of `id` is older than its primary, where `stale`
    /// says. A session already waiting keeps its place; a failed write widens what
    /// is to be repaired, and the newer TTL is kept.
    ///
    /// Returns `false` if the repair could not be remembered (too many wait already).
    #[must_use = "a repair not remembered is abandoned, and counted as such"]
    fn remember(&self, id: &SessionId, ttl: Ttl, stale: Stale, now: Instant) -> bool {
        let mut pending = self.pending.lock();
        if let Some(waiting) = pending.get_mut(id.storage_id()) {
            waiting.ttl = ttl;
            if stale == Stale::WhereReadsLook {
                waiting.stale = stale;
            }
            return true;
        }
        if pending.len() >= MAX_PENDING {
            // Counted by the caller; a warning each would flood the log in the very
            // outage that fills the table.
            tracing::debug!(session = %id.redacted(), "too many backup copies to repair; this one waits for the session's next change");
            return false;
        }
        pending.insert(
            local_key(id),
            PendingRepair {
                id: id.clone(),
                ttl,
                stale,
                since: now,
            },
        );
        true
    }

    /// Puts a repair back for a later sweep, unless the session was remembered again
    /// meanwhile (that entry is newer). Returns `false` if it could not be (too many
    /// wait already).
    #[must_use = "a repair not put back is abandoned, and counted as such"]
    fn put_back(&self, repair: PendingRepair) -> bool {
        let mut pending = self.pending.lock();
        let key = local_key(&repair.id);
        if pending.len() < MAX_PENDING || pending.contains_key(&key) {
            pending.entry(key).or_insert(repair);
            return true;
        }
        // Counted by the caller, logged at debug level as in `remember`.
        tracing::debug!(session = %repair.id.redacted(), "too many backup copies to repair; this one waits for the session's next change");
        false
    }

    /// How many sessions wait for a repair.
    #[cfg(test)]
    pub(crate) fn pending(&self) -> usize {
        self.pending.lock().len()
    }
}

/// Clears [`Repairs::running`] when a sweep's repairs end, however they end.
struct Running<'a>(&'a AtomicBool);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// What one repair found.
enum Repaired {
    /// The copy now holds the primary's state.
    Written,
    /// The copy was as new as the primary already (a commit wrote it meanwhile).
    Current,
    /// The session is gone from its primary (ended, expired, or moved): nothing to
    /// repair.
    Gone,
}

impl<C: Codec> Engine<C> {
    /// Remembers that the backup copy of `id` is older than its primary, where `stale`
    /// says (see [`Repairs::remember`]); counts it as abandoned if it cannot be.
    pub(crate) fn remember_repair(&self, id: &SessionId, ttl: Ttl, stale: Stale) {
        if !self
            .copy_repairs
            .remember(id, ttl, stale, self.common.now())
        {
            Counters::add(&self.common.counters.backup_copy_repairs_abandoned);
        }
    }

    /// Puts a repair back for a later sweep; counts it as abandoned if it cannot be.
    fn put_back_repair(&self, repair: PendingRepair) {
        if !self.copy_repairs.put_back(repair) {
            Counters::add(&self.common.counters.backup_copy_repairs_abandoned);
        }
    }

    /// Called by the sweep: starts the repairs whose nodes answer, if no earlier
    /// sweep's repairs are still running.
    pub(crate) fn repair_copies(self: &Arc<Self>) {
        let repairs = &self.copy_repairs;
        if repairs.pending.lock().is_empty()
            || self.common.aborted.load(Ordering::Acquire)
            || repairs.running.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let due = self.due_repairs();
        if due.is_empty() {
            repairs.running.store(false, Ordering::Release);
            return;
        }
        let inner = Arc::clone(self);
        tokio::spawn(async move {
            let _running = Running(&inner.copy_repairs.running);
            for repair in due {
                if inner.common.aborted.load(Ordering::Acquire) {
                    break;
                }
                inner.repair(repair, true).await;
            }
        });
    }

    /// At shutdown: does every repair whose nodes answer, within `deadline`, so that
    /// no backup copy is left older than its primary when this process is gone.
    /// Returns how many repairs are left.
    pub(crate) async fn flush_repairs(&self, deadline: Duration) -> usize {
        let started = self.common.now();
        let due = {
            let mut pending = self.copy_repairs.pending.lock();
            pending
                .extract_if(|_, repair| self.repair_target(repair).is_some())
                .map(|(_, repair)| repair)
                .collect::<Vec<_>>()
        };
        for repair in due {
            let remaining = deadline.saturating_sub(self.common.since(started));
            if remaining.is_zero() {
                self.put_back_repair(repair);
                continue;
            }
            let id = repair.id.clone();
            if tokio::time::timeout(remaining, self.repair(repair, false))
                .await
                .is_err()
            {
                tracing::debug!(session = %id.redacted(), "backup copy not repaired before the shutdown deadline");
            }
        }
        self.copy_repairs.pending.lock().len()
    }

    /// The node a repair writes to: where reads look, or the usual backup node.
    fn repair_target(&self, repair: &PendingRepair) -> Option<NodeId> {
        let primary = self.common.node_ref(&repair.id);
        if !self.common.store.is_available(primary) {
            return None;
        }
        match repair.stale {
            Stale::WhereReadsLook => self.common.successor(primary),
            Stale::OnUsualNode => self
                .common
                .natural_successor(primary)
                .filter(|node| self.common.store.is_available(node))
                .cloned(),
        }
    }

    /// Takes the repairs that can be done now (up to [`PER_SWEEP`]), and drops those
    /// waiting longer than [`GIVE_UP_AFTER`].
    fn due_repairs(&self) -> Vec<PendingRepair> {
        let mut pending = self.copy_repairs.pending.lock();
        pending.retain(|_, repair| {
            let keep = self.common.since(repair.since) <= GIVE_UP_AFTER;
            if !keep {
                Counters::add(&self.common.counters.backup_copy_repairs_abandoned);
                tracing::warn!(session = %repair.id.redacted(), "backup copy not repaired in time; given up");
            }
            keep
        });
        pending
            .extract_if(|_, repair| self.repair_target(repair).is_some())
            .take(PER_SWEEP)
            .map(|(_, repair)| repair)
            .collect()
    }

    /// One repair: the copy where it is due, then, if that was not the usual backup
    /// node, the session waits for the usual one. With `recheck` (not at shutdown,
    /// when there is no later), a copy found current within [`SETTLE`] is checked
    /// again by a later sweep.
    async fn repair(&self, repair: PendingRepair, recheck: bool) {
        let Some(target) = self.repair_target(&repair) else {
            self.put_back_repair(repair);
            return;
        };
        match self.repair_copy(&repair.id, repair.ttl, &target).await {
            Ok(Repaired::Gone) => {}
            // The copy matches the primary, but the write that made the repair
            // necessary (a commit dropped with its primary write on the wire, a backup
            // write that timed out) may still land: looked at again until it could not.
            Ok(Repaired::Current) if recheck && self.common.since(repair.since) < SETTLE => {
                self.put_back_repair(repair);
            }
            Ok(repaired) => {
                if matches!(repaired, Repaired::Written) {
                    Counters::add(&self.common.counters.backup_copies_repaired);
                }
                let primary = self.common.node_ref(&repair.id);
                if self.common.natural_successor(primary) != Some(&target) {
                    self.put_back_repair(PendingRepair {
                        stale: Stale::OnUsualNode,
                        ..repair
                    });
                }
            }
            Err(error) => {
                tracing::debug!(session = %repair.id.redacted(), %error, "backup copy not repaired yet");
                self.put_back_repair(repair);
            }
        }
    }

    /// Copies the primary's state of `id` to its backup copy on `node`, unless a copy
    /// at least as new is there.
    async fn repair_copy(
        &self,
        id: &SessionId,
        ttl: Ttl,
        node: &NodeId,
    ) -> Result<Repaired, StoreError> {
        let key = self.backup_key(id);
        // The copy is read before the primary: if a commit writes a newer copy after
        // this read, the compare-and-swap below fails and leaves it alone. (A commit
        // writes its primary before its copy, so a copy read here is never newer than
        // the primary read next.)
        let copy = self.common.store.get(node, &key).await?;
        let Some((source, left)) = self
            .common
            .store
            .get_with_ttl(self.common.node_ref(id), &self.common.store_key(id))
            .await?
        else {
            return Ok(Repaired::Gone);
        };
        // The copy lives as long as the primary has left, never longer: a repair runs
        // up to minutes after the change it copies, and a copy given the whole TTL
        // then would outlive its primary and bring the session back after it expired
        // (a read that misses the primary takes a copy with time left).
        let ttl = match left {
            Ttl::After(left) => shortest(ttl, Ttl::After(left.max(Duration::from_secs(1)))),
            Ttl::Never => ttl,
        };
        // Ended since the repair was remembered: its tombstone is no copy to make.
        if crate::common::ends::tombstone_reason(&source.value).is_some() {
            return Ok(Repaired::Gone);
        }
        let written = match copy {
            Some(copy) if copy.value == source.value => false,
            Some(copy) => {
                self.common
                    .store
                    .cas(node, &key, &source.value, ttl, copy.cas)
                    .await?
                    == CasOutcome::Stored
            }
            None => {
                self.common
                    .store
                    .add(node, &key, &source.value, ttl)
                    .await?
                    == AddOutcome::Stored
            }
        };
        Ok(if written {
            Repaired::Written
        } else {
            Repaired::Current
        })
    }
}
