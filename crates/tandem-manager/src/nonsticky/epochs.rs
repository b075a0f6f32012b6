//! Older copies after a failover: a node that replicates itself may, after a failover
//! to a replica that lagged behind (or a restart from older persistence files), hand
//! out an older copy of a session than the one it acknowledged. Its
//! [epoch](tandem_core::RemoteStore::node_epoch) changes then.
//!
//! For a while after the epoch of a session's primary node, or of the node of its
//! backup copy, changed, a read that finds the primary also reads the backup copy and
//! compares the two. Copies that differ are counted (`older_copies_detected`); the
//! one with the later last access is served, and the other repaired:
//!
//! - a newer backup copy is served, under the rules that let a backup copy stand in
//!   for its primary (no deletion marker, not about to expire, see [`read`](super::read)),
//!   and the request's commit writes it back over the older primary, conditional on
//!   the older primary's token (so a write by another server since wins);
//! - a newer primary is served, and its backup copy repaired from it as after a
//!   failed backup write (see [`repair`](super::repair): conditional too).
//!
//! A session's last access only grows from one stored state to the next (every
//! changed commit is conditional on the state it read, and `Session::touch` never goes
//! back), so a later one is a newer state. Two copies with the same last access (two
//! changes within one millisecond, or a writer whose clock is behind) cannot be told
//! apart: the primary is served, as without the check, and nothing is repaired.
//!
//! A primary that went back to before the session's end (a logout, an id change) is
//! caught too: the end deleted the backup copy and left a deletion marker beside it,
//! which the read finds, and the id stays ended.
//!
//! The window: the session's interval (the longer of the configured default and the
//! primary copy's own), counted from when this server first saw the new epoch. A copy
//! written before the failover is either read within that time (and compared) or
//! idle for its whole interval since its last read, and then expired on both nodes.
//! (A lost write that lengthened the session's interval beyond both can outlive the
//! window.) Sessions that never expire are checked for as long as the manager runs.
//! A server sees only the changes it was running for: one started after a failover
//! takes the epochs it finds as the starting point, and compares nothing.
//!
//! Where there is no backup copy (a single node, or
//! [`ReplicatedCopies::Skip`](crate::ReplicatedCopies::Skip)) an older primary cannot
//! be detected: it is served as the session.

use std::cmp::Ordering;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use tandem_core::{Codec, Item, NodeId, Precondition, RemoteStore, Session, SessionId, Ttl};

use super::read::{Loaded, Read, restore_margin};
use super::repair::Stale;
use super::{Engine, copy::longest};
use crate::common::ends::{self, End, EndAction, EndReason};
use crate::common::stats::Counters;
use crate::common::ttl::copy_ttl;
use crate::common::unix_millis;

/// The epoch this server last saw for each node, and when it last saw it change.
pub(crate) struct Epochs {
    nodes: Vec<(NodeId, Mutex<Seen>)>,
}

struct Seen {
    epoch: u64,
    /// When this server first saw the current epoch; `None` while it is the one the
    /// manager started with.
    changed: Option<Instant>,
}

impl Epochs {
    /// The epochs `store` reports now, taken as the starting point: a change before
    /// the manager started is not seen.
    pub(crate) fn new(store: &dyn RemoteStore) -> Epochs {
        Epochs {
            nodes: store
                .nodes()
                .into_iter()
                .map(|node| {
                    let epoch = store.node_epoch(&node);
                    (
                        node,
                        Mutex::new(Seen {
                            epoch,
                            changed: None,
                        }),
                    )
                })
                .collect(),
        }
    }

    /// When `node`'s epoch last changed, as far as this server saw (at `now` if it
    /// sees it change now); `None` if it never did since the manager started.
    pub(crate) fn last_change(
        &self,
        store: &dyn RemoteStore,
        node: &NodeId,
        now: Instant,
    ) -> Option<Instant> {
        let (_, seen) = self.nodes.iter().find(|(id, _)| id == node)?;
        let epoch = store.node_epoch(node);
        let mut seen = seen.lock();
        if seen.epoch != epoch {
            tracing::info!(%node, from = seen.epoch, to = epoch, "the node's epoch changed (a failover?): reads compare its sessions' copies for a while");
            seen.epoch = epoch;
            seen.changed = Some(now);
        }
        seen.changed
    }
}

impl<C: Codec> Engine<C> {
    /// Whether a read of a session with primary `primary`, backup copy on `backup` and
    /// interval `interval` (the primary copy's) compares its copies (see the module).
    fn compares_copies(
        &self,
        primary: &NodeId,
        backup: &NodeId,
        interval: Option<Duration>,
    ) -> bool {
        let (store, now) = (&*self.common.store, self.common.now());
        let changed = [primary, backup]
            .into_iter()
            .filter_map(|node| self.epochs.last_change(store, node, now))
            .max();
        let Some(changed) = changed else {
            return false;
        };
        match longest(
            copy_ttl(interval),
            copy_ttl(self.common.config.max_inactive),
        ) {
            Ttl::Never => true,
            Ttl::After(window) => self.common.since(changed) < window,
        }
    }

    /// The session read from its primary copy (`item`, decoded as `session`), checked
    /// against its backup copy on `backup` if the epoch of either node changed lately
    /// (see the module). `prefetched` is the backup copy if the read already has it.
    /// A backup copy that cannot be read or decoded leaves the primary served.
    pub(super) async fn checked_against_backup(
        &self,
        id: &SessionId,
        primary: &NodeId,
        backup: Option<&NodeId>,
        item: &Item,
        session: Session<C>,
        prefetched: Option<Result<Option<(Item, Ttl)>, tandem_core::StoreError>>,
    ) -> Read<C> {
        let primary_served = |session| {
            Read::Found(Loaded {
                session,
                cas: Some(item.cas),
                on_primary: true,
            })
        };
        let Some(backup) = backup else {
            return primary_served(session);
        };
        if !self.compares_copies(primary, backup, session.max_inactive()) {
            return primary_served(session);
        }
        let copy = match prefetched {
            Some(copy) => copy,
            None => {
                self.common
                    .store
                    .get_with_ttl(backup, &self.backup_key(id))
                    .await
            }
        };
        let (copy, remaining) = match copy {
            Ok(Some(copy)) => copy,
            Ok(None) => {
                // No backup copy: if the id ended, its end deleted the copy and left
                // a marker; the primary then went back to before that end.
                return match self.marker(backup, id).await {
                    Some(reason) => {
                        self.primary_before_its_end(id, primary, item, &session, reason)
                    }
                    None => primary_served(session),
                };
            }
            Err(error) => {
                tracing::debug!(session = %id.redacted(), %error, "backup copy unreadable; the primary is served unchecked");
                return primary_served(session);
            }
        };
        if copy.value == item.value {
            return primary_served(session);
        }
        let Ok(copied) = self.common.decode::<C>(id, &copy.value) else {
            return primary_served(session);
        };
        Counters::add(&self.common.counters.older_copies_detected);
        let (ours, theirs) = (
            unix_millis(session.last_accessed()),
            unix_millis(copied.last_accessed()),
        );
        match theirs.cmp(&ours) {
            Ordering::Greater => {
                if let Some(reason) = self.marker(backup, id).await {
                    return self.primary_before_its_end(id, primary, item, &session, reason);
                }
                if let Ttl::After(left) = remaining
                    && left < restore_margin(copied.max_inactive())
                {
                    // At the end of its life: it must not bring the session back for
                    // another interval.
                    return primary_served(session);
                }
                tracing::warn!(session = %id.redacted(), %primary, "the primary copy is older than the backup copy (a failover lost writes?); the backup copy is served and written back");
                Read::Found(Loaded {
                    session: copied,
                    cas: Some(item.cas),
                    on_primary: false,
                })
            }
            Ordering::Less => {
                tracing::warn!(session = %id.redacted(), node = %backup, "the backup copy is older than the primary (a failover lost writes?); repaired");
                self.remember_repair(id, copy_ttl(session.max_inactive()), Stale::WhereReadsLook);
                primary_served(session)
            }
            Ordering::Equal => {
                tracing::warn!(session = %id.redacted(), "the copies differ with the same last access; the primary is served");
                primary_served(session)
            }
        }
    }

    /// The deletion marker of `id` on `node`, if it can be read and is there.
    async fn marker(&self, node: &NodeId, id: &SessionId) -> Option<EndReason> {
        match self.common.store.get(node, &self.gone_key(id)).await {
            Ok(marker) => marker
                .map(|marker| ends::tombstone_reason(&marker.value).unwrap_or(EndReason::Ended)),
            Err(error) => {
                tracing::debug!(session = %id.redacted(), %error, "deletion marker unreadable");
                None
            }
        }
    }

    /// The primary (`item`, decoded as `session`) holds the session as it was before
    /// the id ended: the id stays ended, and the primary gets its tombstone back
    /// (unless it changed since), as long-lived as the end's own.
    fn primary_before_its_end(
        &self,
        id: &SessionId,
        primary: &NodeId,
        item: &Item,
        session: &Session<C>,
        reason: EndReason,
    ) -> Read<C> {
        Counters::add(&self.common.counters.older_copies_detected);
        tracing::warn!(session = %id.redacted(), %primary, "the primary copy is from before the session ended (a failover lost writes?); it is ended again");
        self.common.remember_ends([End {
            node: primary.clone(),
            key: self.common.store_key(id),
            action: EndAction::Tombstone(reason),
            ttl: ends::tombstone_ttl(longest(
                copy_ttl(session.max_inactive()),
                copy_ttl(self.common.config.max_inactive),
            )),
            condition: Precondition::Cas(item.cas),
        }]);
        Read::Ended(reason)
    }
}
