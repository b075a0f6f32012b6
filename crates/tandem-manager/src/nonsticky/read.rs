//! Reading a non-sticky session: its primary copy, or else its backup copy, and the
//! rules that decide when a backup copy may stand in for a missing primary.
//!
//! A primary that is missing on a node that answers is ambiguous: the node may have
//! restarted empty (or evicted it), when the backup copy is the session; or the id
//! ended (a logout, an id change), when the backup copy must never bring it back; or it
//! expired, when the backup copy, which lives about as long, must not either. So a
//! backup copy is used only if
//!
//! - no *deletion marker* (`gone:` key, written beside the backup copies when the id
//!   ended) is there: an ended id never comes back, not even from a backup copy that a
//!   late write put back after the end; and
//! - it still has more than [`restore_margin`] to live: both copies' expiry slides
//!   together (the backup copy is touched, or written, right after the primary), so a
//!   primary that expired leaves a backup copy that is about to expire too.
//!
//! The same rules hold when the primary's node is down and the session moves to the
//! backup copy's node.

use std::time::Duration;

use tandem_core::Codec;
use tandem_core::Session;
use tandem_core::{CasToken, Item, Precondition, StoreError, Ttl};
use tandem_core::{KeySpace, StoreKey};
use tandem_core::{NodeId, SessionId};

use super::transit::TransitState;
use super::{Engine, HEDGE_DELAY};
use crate::common::ends::{self, End, EndAction, EndReason};
use crate::common::stats::Counters;
use crate::common::ttl::copy_ttl;
use crate::error::LoadError;

/// What a read of a non-sticky session found.
pub(super) enum Read<C> {
    /// The session.
    Found(Loaded<C>),
    /// No session under this id (or one that cannot be decoded).
    Unknown,
    /// The id ended, as its tombstone or deletion marker says.
    Ended(EndReason),
}

/// A session read from the remote tier.
pub(super) struct Loaded<C> {
    pub(super) session: Session<C>,
    /// What the primary key holds: this session under this token, or (with
    /// `on_primary` false) the tombstone of a move away, which a session moving back
    /// may replace, or an older state of this session, which the newer one from the
    /// backup copy replaces (see [`epochs`](super::epochs)).
    pub(super) cas: Option<CasToken>,
    /// Whether the primary holds this session under its current id; if not (it was
    /// restored from the backup, or moved), the next commit writes it even if
    /// nothing changed.
    pub(super) on_primary: bool,
}

/// How long a backup copy must still have to live to stand in for its primary: its
/// expiry slides with the primary's, within memcached's one-second clock, so a copy
/// closer to its end than this belongs to a primary that expired. Shorter for a
/// session whose whole interval is shorter.
pub(super) fn restore_margin(max_inactive: Option<Duration>) -> Duration {
    let margin = Duration::from_secs(2);
    max_inactive.map_or(margin, |interval| margin.min(interval / 2))
}

impl<C: Codec> Engine<C> {
    pub(super) fn backup_key(&self, id: &SessionId) -> StoreKey {
        self.common.key(KeySpace::Backup, id)
    }

    pub(super) fn gone_key(&self, id: &SessionId) -> StoreKey {
        self.common.key(KeySpace::Gone, id)
    }

    /// Reads the session: the primary with get-and-touch, else the backup copy under
    /// the rules above. When the primary node is down the session moves to the backup's
    /// node (its id changes); when the primary just lacks the copy (restarted empty),
    /// the next commit writes it back.
    #[tracing::instrument(name = "tandem.remote_load", level = "debug", skip_all, fields(session = %id.redacted()))]
    pub(super) async fn read(&self, id: &SessionId) -> Result<Read<C>, LoadError> {
        let primary = self.common.node_of(id);
        let backup_node = self.backup_node(&primary);
        let ttl = copy_ttl(self.common.config.max_inactive);
        let primary_key = self.common.store_key(id);
        let read_backup = || async {
            match &backup_node {
                Some(node) => Some(
                    self.common
                        .store
                        .get_with_ttl(node, &self.backup_key(id))
                        .await,
                ),
                None => None,
            }
        };
        let started = self.common.now();
        let (primary_result, prefetched) = if !self.common.store.is_available(&primary) {
            (None, None)
        } else if backup_node.is_none() {
            // No backup copy to hedge with.
            (
                Some(
                    self.common
                        .store
                        .get_and_touch(&primary, &primary_key, ttl)
                        .await,
                ),
                None,
            )
        } else {
            let primary_read = self.common.store.get_and_touch(&primary, &primary_key, ttl);
            tokio::pin!(primary_read);
            tokio::select! {
                result = &mut primary_read => (Some(result), None),
                () = tokio::time::sleep(HEDGE_DELAY) => {
                    // The primary is slow, maybe hung: read the backup meanwhile, so
                    // that a hung primary costs one operation timeout, not two. The
                    // backup is used only if the primary fails: a slow primary may
                    // still hold a newer state.
                    let (result, backup) = tokio::join!(primary_read, read_backup());
                    (Some(result), Some(backup))
                }
            }
        };
        self.common
            .counters
            .histograms
            .remote_load(self.common.since(started));
        let primary_down = match primary_result {
            Some(Ok(Some(item))) => {
                let prefetched = prefetched.flatten();
                return self
                    .session_in_primary(&primary, backup_node.as_ref(), id, item, prefetched)
                    .await;
            }
            Some(Ok(None)) => false,
            Some(Err(error)) => {
                Counters::add(&self.common.counters.remote_load_failures);
                tracing::debug!(session = %id.redacted(), %error, "primary read failed");
                true
            }
            None => true,
        };
        let backup_result = match prefetched {
            Some(result) => result,
            None => read_backup().await,
        };
        let (Some(backup_result), Some(backup_node)) = (backup_result, &backup_node) else {
            return if primary_down {
                Err(self.unavailable_load())
            } else {
                Ok(Read::Unknown)
            };
        };
        match backup_result {
            Ok(Some((item, remaining))) => {
                self.session_in_backup(id, backup_node, item, remaining, primary_down)
                    .await
            }
            // Neither copy is reachable: the session may live on the down node, unless
            // the marker beside where its backup copy was says it ended.
            Ok(None) if primary_down => match self.gone(backup_node, id).await? {
                Some(reason) => Ok(Read::Ended(reason)),
                None => Err(self.unavailable_load()),
            },
            Ok(None) => Ok(Read::Unknown),
            Err(error) => {
                Counters::add(&self.common.counters.remote_load_failures);
                tracing::debug!(session = %id.redacted(), %error, "backup read failed");
                Err(self.unavailable_load())
            }
        }
    }

    /// The session in a primary copy just read (and touched with the default
    /// interval's TTL), checked against its backup copy (on `backup_node`, maybe
    /// already read: `prefetched`) for a while after a failover (see
    /// [`epochs`](super::epochs)).
    async fn session_in_primary(
        &self,
        primary: &NodeId,
        backup_node: Option<&NodeId>,
        id: &SessionId,
        item: Item,
        prefetched: Option<Result<Option<(Item, Ttl)>, StoreError>>,
    ) -> Result<Read<C>, LoadError> {
        if let Some(reason) = ends::tombstone_reason(&item.value) {
            return Ok(Read::Ended(reason));
        }
        let Some(session) = self.decode_read(id, &item.value) else {
            return Ok(Read::Unknown);
        };
        if session.max_inactive() != self.common.config.max_inactive {
            self.restore_own_interval(primary, id, session.max_inactive())
                .await?;
        }
        Counters::add(&self.common.counters.loaded_remote);
        Ok(self
            .checked_against_backup(id, primary, backup_node, &item, session, prefetched)
            .await)
    }

    /// The read slid the primary's expiry by the default interval: the session's own
    /// is put back now, before the request goes on. If that fails for a session
    /// shorter-lived than the default, it is not served (it would otherwise live the
    /// default interval), and the shorter expiry is retried until it lands. A longer
    /// one expires early at worst, and its next read puts it right.
    async fn restore_own_interval(
        &self,
        primary: &NodeId,
        id: &SessionId,
        interval: Option<Duration>,
    ) -> Result<(), LoadError> {
        let ttl = copy_ttl(interval);
        let key = self.common.store_key(id);
        let Err(error) = self.common.store.touch(primary, &key, ttl).await else {
            return Ok(());
        };
        let shorter = match (interval, self.common.config.max_inactive) {
            (Some(own), Some(default)) => own < default,
            (Some(_), None) => true,
            (None, _) => false,
        };
        tracing::debug!(session = %id.redacted(), %error, shorter, "session's own expiry not set");
        if !shorter {
            return Ok(());
        }
        self.common.remember_ends([End {
            node: primary.clone(),
            key,
            action: EndAction::ShortenTtl(ttl),
            ttl: copy_ttl(self.common.config.max_inactive),
            condition: Precondition::None,
        }]);
        Err(self.unavailable_load())
    }

    /// A backup copy found for a primary that is missing (`primary_down` false) or
    /// unreachable: the session, moved to the backup's node in the second case, unless
    /// the id ended or the copy belongs to a primary that expired.
    async fn session_in_backup(
        &self,
        id: &SessionId,
        backup_node: &NodeId,
        item: Item,
        remaining: Ttl,
        primary_down: bool,
    ) -> Result<Read<C>, LoadError> {
        if let Some(reason) = self.gone(backup_node, id).await? {
            return Ok(Read::Ended(reason));
        }
        let Some(mut session) = self.decode_read(id, &item.value) else {
            return Ok(Read::Unknown);
        };
        if let Ttl::After(left) = remaining
            && left < restore_margin(session.max_inactive())
        {
            return Ok(Read::Unknown);
        }
        Counters::add(&self.common.counters.loaded_remote);
        if primary_down {
            let moved = id.with_node(backup_node);
            tracing::info!(from = %id.redacted(), to = %moved.redacted(), "session relocated off a down node");
            Counters::add(&self.common.counters.relocated);
            session.set_id(moved);
        }
        Ok(Read::Found(Loaded {
            session,
            cas: None,
            on_primary: false,
        }))
    }

    /// Whether `id` ended, as the deletion marker on `node` (where its backup copy is)
    /// says.
    async fn gone(&self, node: &NodeId, id: &SessionId) -> Result<Option<EndReason>, LoadError> {
        match self.common.store.get(node, &self.gone_key(id)).await {
            Ok(marker) => Ok(marker
                .map(|marker| ends::tombstone_reason(&marker.value).unwrap_or(EndReason::Ended))),
            Err(error) => {
                Counters::add(&self.common.counters.remote_load_failures);
                tracing::debug!(session = %id.redacted(), %error, "deletion marker unreadable");
                Err(self.unavailable_load())
            }
        }
    }

    pub(super) fn decode_read(&self, id: &SessionId, bytes: &[u8]) -> Option<Session<C>> {
        match self.common.decode(id, bytes) {
            Ok(session) => Some(session),
            Err(error) => {
                Counters::add(&self.common.counters.undecodable);
                tracing::warn!(session = %id.redacted(), %error, "stored session cannot be decoded; starting a new session");
                None
            }
        }
    }

    /// Re-reads the session after a write under a condition that failed: the primary,
    /// or (if it lacks the copy) the backup copy under the rules above. `Ok(None)` if
    /// the session is gone or ended.
    pub(super) async fn reload(
        &self,
        id: &SessionId,
        node: &NodeId,
        key: &StoreKey,
    ) -> Result<Option<Loaded<C>>, StoreError> {
        if let Some(item) = self.common.store.get(node, key).await? {
            // A tombstone: the id ended, or moved on while this request held it.
            if ends::tombstone_reason(&item.value).is_some() {
                return Ok(None);
            }
            return Ok(self.decode_read(id, &item.value).map(|session| Loaded {
                session,
                cas: Some(item.cas),
                on_primary: true,
            }));
        }
        self.reload_backup(id, node).await
    }

    async fn reload_backup(
        &self,
        id: &SessionId,
        node: &NodeId,
    ) -> Result<Option<Loaded<C>>, StoreError> {
        let Some(backup_node) = self.backup_node(node) else {
            return Ok(None);
        };
        let Some((item, remaining)) = self
            .common
            .store
            .get_with_ttl(&backup_node, &self.backup_key(id))
            .await?
        else {
            return Ok(None);
        };
        match self
            .session_in_backup(id, &backup_node, item, remaining, false)
            .await
        {
            Ok(Read::Found(loaded)) => Ok(Some(loaded)),
            Ok(_) => Ok(None),
            Err(_) => Err(StoreError::NodeDown { node: backup_node }),
        }
    }
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
