//! The backup copy of a non-sticky session, on the primary's successor: written after
//! each changed commit (in the background, or before the commit returns with a
//! synchronous backup mode), and its expiry slid along with the primary's. None for a
//! session whose primary node replicates itself under [`ReplicatedCopies::Skip`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use tandem_core::{Codec, NodeId, SessionId, StoreError, Ttl};

use super::Engine;
use super::refreshes::refresh_period;
use super::repair::Stale;
use crate::common::stats::Counters;
use crate::common::ttl::copy_ttl;
use crate::config::ReplicatedCopies;
use crate::error::WriteFailure;
use crate::outcome::BackupStatus;

impl<C: Codec> Engine<C> {
    /// Whether sessions whose primary is on `primary` keep no backup copy: the node
    /// replicates itself and [`ReplicatedCopies::Skip`] is configured.
    pub(super) fn skips_copies(&self, primary: &NodeId) -> bool {
        self.common.config.replicated_copies == ReplicatedCopies::Skip
            && self.common.store.replicates(primary)
    }

    /// Where the backup copy of a session whose primary is on `primary` is written and
    /// read: the first available node after it, if any, unless the session keeps no
    /// copy ([`skips_copies`](Self::skips_copies)).
    pub(super) fn backup_node(&self, primary: &NodeId) -> Option<NodeId> {
        if self.skips_copies(primary) {
            return None;
        }
        self.common.successor(primary)
    }

    /// Writes the backup copy on the primary's successor: in the background, or
    /// before returning with a synchronous backup mode (or during shutdown).
    pub(super) async fn write_backup(
        self: &Arc<Self>,
        id: SessionId,
        bytes: Vec<u8>,
        ttl: Ttl,
    ) -> BackupStatus {
        let primary = self.common.node_ref(&id);
        if self.skips_copies(primary) {
            return BackupStatus::NotNeeded;
        }
        let Some(node) = self.common.successor(primary) else {
            // With a single node there is no backup copy to write, ever: nothing to
            // repair, and nothing missing if the node keeps copies by itself (a
            // replicated deployment). Otherwise the other nodes are down, and the copy
            // waits for one.
            if self.common.natural_successor(primary).is_none()
                && self.common.store.replicates(primary)
            {
                return BackupStatus::NotNeeded;
            }
            if self.common.natural_successor(primary).is_some() {
                tracing::debug!(session = %id.redacted(), "no node for the backup copy; repaired when one answers");
                self.remember_repair(&id, ttl, Stale::WhereReadsLook);
            }
            return BackupStatus::Failed(WriteFailure::NoNode);
        };
        if self.common.natural_successor(primary) != Some(&node) {
            // The usual backup node is down: the copy goes to the next one, and the
            // usual one keeps an older copy that a read would find once it answers
            // again (and the primary does not). Repaired then.
            self.remember_repair(&id, ttl, Stale::OnUsualNode);
        }
        let sync_timeout = self.common.sync_write_timeout();
        if let Some(timeout) = sync_timeout {
            let status = match tokio::time::timeout(
                timeout,
                self.write_backup_copy(&node, &id, &bytes, ttl),
            )
            .await
            {
                Ok(Ok(())) => return BackupStatus::Written,
                Ok(Err(error)) => BackupStatus::Failed(error.into()),
                Err(_) => BackupStatus::Failed(WriteFailure::TimedOut(timeout)),
            };
            self.remember_repair(&id, ttl, Stale::WhereReadsLook);
            return status;
        }
        let inner = Arc::clone(self);
        self.common.in_flight.begin(1);
        tokio::spawn(async move {
            if inner
                .write_backup_copy(&node, &id, &bytes, ttl)
                .await
                .is_err()
            {
                inner.remember_repair(&id, ttl, Stale::WhereReadsLook);
            }
            inner.common.in_flight.end(1);
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
        if self
            .common
            .aborted
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return Err(StoreError::NodeDown { node: node.clone() });
        }
        let started = self.common.now();
        let result = self
            .common
            .store
            .set(node, &self.backup_key(id), bytes, ttl)
            .await;
        self.common
            .counters
            .histograms
            .backup_write(self.common.since(started), bytes.len());
        match &result {
            Ok(()) => {
                Counters::add(&self.common.counters.backups_written);
                self.backup_refreshes.record(id, started);
            }
            Err(error) => {
                Counters::add(&self.common.counters.backups_failed);
                tracing::debug!(session = %id.redacted(), %error, "backup copy not written");
            }
        }
        result
    }

    /// An unchanged request: slides the backup copy's expiry to the primary's (which
    /// the request's read slid, `read_at`), so that both expire together, if this
    /// server has not done so within the session's refresh period (see
    /// [`refreshes`](super::refreshes)). A missing backup copy (its node restarted,
    /// or was down when the session last changed) is repaired from the primary, never
    /// rewritten from this request's snapshot, which may be older than the primary
    /// (or of a session ended since).
    pub(super) fn refresh_backup(
        self: &Arc<Self>,
        id: &SessionId,
        interval: Option<Duration>,
        read_at: Instant,
    ) {
        let Some(node) = self.backup_node(&self.common.node_of(id)) else {
            return;
        };
        let period = refresh_period(self.common.config.backup_refresh, interval);
        if !self.backup_refreshes.claim(id, period, read_at) {
            Counters::add(&self.common.counters.backup_refreshes_skipped);
            return;
        }
        let ttl = match copy_ttl(interval) {
            Ttl::Never => Ttl::Never,
            Ttl::After(ttl) => Ttl::After(
                ttl.saturating_sub(self.common.since(read_at))
                    .max(Duration::from_secs(1)),
            ),
        };
        let inner = Arc::clone(self);
        let id = id.clone();
        self.common.in_flight.begin(1);
        tokio::spawn(async move {
            let key = inner.backup_key(&id);
            match inner.common.store.touch(&node, &key, ttl).await {
                Ok(true) => Counters::add(&inner.common.counters.touches),
                Ok(false) => {
                    Counters::add(&inner.common.counters.touch_failures);
                    inner.backup_refreshes.forget(&id);
                    inner.remember_repair(&id, ttl, Stale::WhereReadsLook);
                }
                Err(_) => {
                    Counters::add(&inner.common.counters.touch_failures);
                    inner.backup_refreshes.forget(&id);
                }
            }
            inner.common.in_flight.end(1);
        });
    }
}

/// A primary write of a commit whose backup copy is not written or handed to its
/// background task yet. If the commit is dropped in between (a client that hung up, a
/// timeout layer), the primary may hold a state its backup copy never gets: that copy
/// is repaired from the primary then, as after a backup write that failed, so that a
/// primary lost later does not take back a state that requests have read.
pub(super) struct Unbacked<'a, C: Codec> {
    pub(super) inner: &'a Engine<C>,
    pub(super) id: SessionId,
    pub(super) ttl: Ttl,
    /// The write did not land, or its backup copy is taken care of.
    pub(super) backed: bool,
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
pub(super) fn longest(a: Ttl, b: Ttl) -> Ttl {
    match (a, b) {
        (Ttl::After(a), Ttl::After(b)) => Ttl::After(a.max(b)),
        _ => Ttl::Never,
    }
}

/// The shorter of two TTLs.
pub(super) fn shortest(a: Ttl, b: Ttl) -> Ttl {
    match (a, b) {
        (Ttl::After(a), Ttl::After(b)) => Ttl::After(a.min(b)),
        (Ttl::After(a), Ttl::Never) | (Ttl::Never, Ttl::After(a)) => Ttl::After(a),
        (Ttl::Never, Ttl::Never) => Ttl::Never,
    }
}
