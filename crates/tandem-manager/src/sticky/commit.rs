//! Sticky mode's commits: a request's changes applied to the held copy (merged,
//! checked for conflicts and size), the backup scheduled, and the two commits that
//! end an id, invalidation and id cycling. A commit whose copy was dropped while the
//! request ran (ended, or taken over by another server) moves on to the current one.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tandem_core::AttributeValue;
use tandem_core::Codec;
use tandem_core::Precondition;
use tandem_core::SessionId;

use super::entry::{LocalEntry, RemoteCopy};
use super::{Engine, Found};
use crate::common::ends::{self, End, EndAction, EndReason};
use crate::common::local_key::local_key;
use crate::common::merge::{NewSession, cookie_for};
use crate::common::same_session;
use crate::common::stats::Counters;
use crate::common::ttl::{keepalive_slack, remote_ttl};
use crate::config::Concurrency;
use crate::error::{CommitError, WriteFailure};
use crate::outcome::{BackupStatus, CommitOutcome, CookieUpdate};
use crate::request::RequestSession;

/// How many times a commit whose copy was dropped while it ran moves on to the
/// current copy before it gives up (`CommitError::RetriesExhausted`).
const COMMIT_RELOADS: u8 = 3;

/// The least `max_unsaved_bytes` is by default, whatever the local tier's capacity:
/// backups in flight count as unsaved for a moment, and a small local tier must not
/// refuse commits under an ordinary burst.
const DEFAULT_MIN_UNSAVED_BYTES: u64 = 64 * 1024 * 1024;

/// The result of applying a request's changes.
struct Applied {
    id: SessionId,
    changed: bool,
    /// The session's size moved enough for the local tier to weigh it again.
    reweigh: bool,
    rekeyed: Option<(SessionId, SessionId)>,
}

/// Why a request's changes were not applied to its entry.
enum NotApplied {
    /// The session got a new id after this request loaded it under the old one.
    Cycled,
    /// The entry was retired (ended, or replaced by a newer copy) after the commit
    /// looked: the changes go to the current copy, if any.
    Retired,
    /// A conflict, the size limit, ...
    Refused(CommitError),
}

impl From<CommitError> for NotApplied {
    fn from(error: CommitError) -> NotApplied {
        NotApplied::Refused(error)
    }
}

impl<C: Codec> Engine<C> {
    /// Refuses a commit that would add one more session to those waiting for their
    /// backup when `max_unsaved_bytes` of them wait already.
    fn check_unsaved(&self, already_waiting: bool) -> Result<(), CommitError> {
        let limit = self.common.config.max_unsaved_bytes.unwrap_or_else(|| {
            self.common
                .config
                .local_capacity_bytes
                .max(DEFAULT_MIN_UNSAVED_BYTES)
        });
        if already_waiting || self.backups.dirty_bytes() < limit {
            return Ok(());
        }
        Counters::add(&self.common.counters.unsaved_limit_hits);
        tracing::warn!(
            limit,
            "too much session data waits for its backup; a change is refused"
        );
        Err(CommitError::Unavailable {
            source: WriteFailure::UnsavedLimit {
                bytes: self.backups.dirty_bytes(),
            },
        })
    }

    pub(crate) async fn commit_new(
        &self,
        request: RequestSession<C>,
    ) -> Result<CommitOutcome, CommitError> {
        let session = match self.common.prepare_new(
            request.session,
            request.had_cookie,
            request.invalidated,
        )? {
            NewSession::Store(session) => session,
            NewSession::Discard(outcome) => return Ok(outcome),
        };
        self.check_unsaved(false)?;
        let id = session.id().clone();
        let entry = Arc::new(LocalEntry::new(
            session,
            RemoteCopy::Absent,
            self.common.config.concurrency == Concurrency::Lock,
            self.common.now_ms(),
        ));
        self.local.insert(local_key(&id), Arc::clone(&entry));
        Counters::add(&self.common.counters.sessions_created);
        let backup = self.schedule_write(&entry).await;
        Ok(CommitOutcome {
            cookie: CookieUpdate::Set {
                max_inactive: entry.max_inactive(),
                id,
            },
            backup,
        })
    }

    pub(crate) async fn commit_existing(
        self: &Arc<Self>,
        mut entry: Arc<LocalEntry<C>>,
        request: &RequestSession<C>,
    ) -> Result<CommitOutcome, CommitError> {
        // An entry retired since the request loaded it was replaced by a newer copy
        // (takeover check) or ended: the changes go to the current copy, if any.
        if entry.is_retired() {
            if request.invalidated {
                match self.current_copy(Arc::clone(&entry)) {
                    Ok(current) => entry = current,
                    // No copy here any more. The logout still ends the id below unless
                    // this server ended it already: the copy may have been dropped for
                    // one that lives on in the remote tier or on another server.
                    Err(_) => {
                        if self.common.ended.get(&local_key(&entry.id())) == Some(EndReason::Ended)
                        {
                            return Ok(ended_outcome());
                        }
                    }
                }
            } else {
                // Boxed, as every rare path of the commit (see `load_for`).
                entry = Box::pin(self.copy_for_commit(entry)).await?;
            }
        }
        if request.invalidated {
            let same = request
                .incoming
                .as_ref()
                .is_some_and(|incoming| same_session(incoming, &entry.id()));
            if !same {
                // The session this request wanted to end got a new id meanwhile (a
                // login): the old one is over already, and the new one is not this
                // request's to end.
                return Ok(ended_outcome());
            }
            return Ok(Box::pin(self.invalidate(&entry)).await);
        }
        let modified = request.session.is_modified() || request.cycle_id;
        if modified {
            self.check_unsaved(entry.in_dirty.load(Ordering::Acquire))?;
        }
        let mut reloads = 0;
        let applied = loop {
            match self.apply(&entry, request) {
                Ok(applied) => break applied,
                // Retired since the check above: the current copy, as then, a few
                // times at most (two servers taking a session from each other on every
                // request could otherwise keep a commit busy). Awaited below, where
                // the outcome of `apply` is no longer held.
                Err(NotApplied::Retired) if reloads < COMMIT_RELOADS => reloads += 1,
                Err(NotApplied::Retired) => {
                    return Err(CommitError::RetriesExhausted {
                        attempts: u32::from(COMMIT_RELOADS) + 1,
                    });
                }
                Err(NotApplied::Refused(error)) => return Err(error),
                // Loaded under an id that was cycled since: a read-only request ends
                // as it came (its cookie is left alone: it must not learn the new id,
                // and must not clear the one the login set); a change is refused.
                Err(NotApplied::Cycled) if modified => return Err(CommitError::SessionEnded),
                Err(NotApplied::Cycled) => {
                    return Ok(CommitOutcome {
                        cookie: CookieUpdate::Keep,
                        backup: BackupStatus::NotNeeded,
                    });
                }
            }
            entry = Box::pin(self.copy_for_commit(entry)).await?;
        };
        if let Some((old, new)) = &applied.rekeyed {
            Box::pin(self.rekey(&entry, old, new)).await;
        } else if applied.reweigh {
            // Re-insert so that the local tier weighs the new size.
            self.local
                .insert(local_key(&applied.id), Arc::clone(&entry));
        }
        // Queueing a backup may wait for room in the queue: boxed so that the common
        // commit's future stays small (see `load_for`).
        let backup = if applied.changed {
            Box::pin(self.schedule_write(&entry)).await
        } else {
            Counters::add(&self.common.counters.backups_skipped_unchanged);
            // Extends the remote copy's expiry once half of its slack is used up.
            if self.touch_due(&entry) {
                Box::pin(self.backups.enqueue(&entry)).await;
            }
            BackupStatus::NotNeeded
        };
        let cookie = cookie_for(request.incoming.as_ref(), &applied.id, entry.max_inactive());
        Ok(CommitOutcome { cookie, backup })
    }

    /// The copy that replaced a retired entry: an entry retired since the request
    /// loaded it was replaced by a newer copy (takeover check) or ended.
    fn current_copy(
        &self,
        mut entry: Arc<LocalEntry<C>>,
    ) -> Result<Arc<LocalEntry<C>>, CommitError> {
        while entry.is_retired() {
            let key = local_key(&entry.id());
            match self.local.get(&key) {
                Some(current) if !Arc::ptr_eq(&current, &entry) => entry = current,
                _ => return Err(CommitError::SessionEnded),
            }
        }
        Ok(entry)
    }

    /// The copy a commit's changes go to when the entry its request loaded was
    /// retired: the copy that replaced it here, if any. Otherwise another server took
    /// the session over (this server's write was refused, or the peer feed announced
    /// it) while the request ran, or it ended: the current copy is read from the
    /// remote tier, and the changes are merged into it
    /// as into a copy changed by a concurrent request (attribute by attribute; a
    /// change of an attribute that changed meanwhile is a conflict). Refusing instead
    /// would let anyone who uses the same id on another server keep every commit of
    /// its owner failing, a login among them. An id that ended stays ended; under
    /// `Concurrency::Lock` the request's lock was on the dropped copy, so its changes
    /// are refused as before.
    async fn copy_for_commit(
        self: &Arc<Self>,
        entry: Arc<LocalEntry<C>>,
    ) -> Result<Arc<LocalEntry<C>>, CommitError> {
        let id = entry.id();
        if let Ok(current) = self.current_copy(entry) {
            return Ok(current);
        }
        if self.common.config.concurrency == Concurrency::Lock {
            return Err(CommitError::SessionEnded);
        }
        let key = local_key(&id);
        if self.common.ended_reason(&key, &id).is_some() {
            return Err(CommitError::SessionEnded);
        }
        let found = match self.held(key.as_str()) {
            Some(current) => Found::Entry(current),
            None => self
                .load_remote(&id, &key)
                .await
                .map_err(|_| CommitError::Unavailable {
                    source: WriteFailure::NoNode,
                })?,
        };
        match found {
            Found::Entry(current) => {
                Counters::add(&self.common.counters.merge_retries);
                Ok(current)
            }
            Found::Unknown | Found::Ended(_) => Err(CommitError::SessionEnded),
        }
    }

    /// Re-keys a held session whose id a commit changed from `old` to `new`, and ends
    /// the old id everywhere: remembered here as cycled, a tombstone over its remote
    /// copy, and an announcement in the peer feed.
    async fn rekey(self: &Arc<Self>, entry: &Arc<LocalEntry<C>>, old: &SessionId, new: &SessionId) {
        let (old_key, new_key) = (local_key(old), local_key(new));
        self.local.insert(new_key.clone(), Arc::clone(entry));
        self.local.invalidate(&old_key);
        self.backups.rekey(&old_key, new_key, entry);
        self.common.ended.insert(old_key, EndReason::Cycled);
        Counters::add(&self.common.counters.ids_cycled);
        let end = End {
            node: self.common.node_of(old),
            key: self.common.store_key(old),
            action: EndAction::Tombstone(EndReason::Cycled),
            ttl: ends::tombstone_ttl(remote_ttl(entry.max_inactive())),
            condition: Precondition::None,
        };
        // Announced by the task that writes the tombstone: a commit dropped while it
        // waits here must not skip it.
        self.end_ids(vec![end], Some(old.clone())).await;
    }

    /// Applies a request's attribute changes to the entry's current state, checking
    /// first that the session still has the id the request loaded it under, then for
    /// conflicts and the size limit: all or nothing.
    fn apply(
        &self,
        entry: &LocalEntry<C>,
        request: &RequestSession<C>,
    ) -> Result<Applied, NotApplied> {
        let mut state = entry.state.lock();
        // Checked under the state lock: changes applied to an entry that is retired
        // afterwards are reported by its backup (see `run_backup`).
        if entry.is_retired() {
            return Err(NotApplied::Retired);
        }
        if let Some(incoming) = &request.incoming
            && !same_session(incoming, state.session.id())
        {
            return Err(NotApplied::Cycled);
        }
        let merge = self.common.config.concurrency != Concurrency::LastWriterWins;
        // Compared with the resident envelope in place: a commit decodes nothing.
        let changes: Vec<(&str, Option<&AttributeValue>)> = request
            .session
            .changes()
            .filter(|change| {
                state.session.value(change.name)
                    != change.current.map(|value| (value.codec(), value.bytes()))
            })
            .map(|change| (change.name, change.current))
            .collect();
        if merge {
            self.common
                .check_conflicts_with(&request.session, state.session.id(), |name| {
                    state.session.value(name)
                })?;
        }
        let interval_changed = request.session.is_max_inactive_modified()
            && request.session.max_inactive() != state.session.max_inactive();
        let old_id = state.session.id().clone();
        let new_id = request.cycle_id.then(|| {
            let node = self
                .common
                .live_node()
                .unwrap_or_else(|| self.common.node_of(&old_id));
            SessionId::generate(&node, self.common.config.route.as_ref())
        });
        let changed = !changes.is_empty() || interval_changed || new_id.is_some();
        let mut reweigh = false;
        if changed {
            let envelope = state.session.merged(
                &changes,
                interval_changed.then(|| request.session.max_inactive()),
                self.common.wall(),
            );
            self.common
                .check_encoded_size(new_id.as_ref().unwrap_or(&old_id), envelope.len())?;
            if let Some(id) = &new_id {
                state.session.set_id(id.clone());
                // Nothing is stored under the new id yet.
                state.set_remote(RemoteCopy::Absent);
            }
            state.session.set_envelope(envelope);
            state.revision += 1;
            reweigh = entry.refresh_metadata(&state.session);
        } else {
            state.session.touch(self.common.wall());
        }
        Ok(Applied {
            id: state.session.id().clone(),
            changed,
            reweigh,
            rekeyed: new_id.map(|new| (old_id, new)),
        })
    }

    /// Ends a session: dropped here (its id remembered as ended), a tombstone over its
    /// remote copy (waited for, in a task of its own so that a client hanging up does
    /// not stop it half way; retried while its node fails), and an announcement in the
    /// peer feed so that other servers drop their copies.
    async fn invalidate(self: &Arc<Self>, entry: &Arc<LocalEntry<C>>) -> CommitOutcome {
        let id = entry.id();
        let key = local_key(&id);
        self.discard(&key, entry);
        self.common.ended.insert(key, EndReason::Ended);
        Counters::add(&self.common.counters.invalidated);
        let end = End {
            node: self.common.node_of(&id),
            key: self.common.store_key(&id),
            action: EndAction::Tombstone(EndReason::Ended),
            ttl: ends::tombstone_ttl(remote_ttl(entry.max_inactive())),
            condition: Precondition::None,
        };
        // Announced by the task that writes the tombstone: a commit dropped while it
        // waits here must not skip it.
        self.end_ids(vec![end], Some(id)).await;
        ended_outcome()
    }

    /// Queues (or, in sync mode or during shutdown, performs) the backup of a changed
    /// entry.
    pub(crate) async fn schedule_write(&self, entry: &Arc<LocalEntry<C>>) -> BackupStatus {
        self.backups.mark_dirty(entry);
        let sync_timeout = self.common.sync_write_timeout();
        match sync_timeout {
            Some(timeout) => match tokio::time::timeout(timeout, self.run_backup(entry)).await {
                Ok(Ok(())) => BackupStatus::Written,
                Ok(Err(error)) => BackupStatus::Failed(error),
                Err(_) => BackupStatus::Failed(WriteFailure::TimedOut(timeout)),
            },
            None => {
                if !self.backups.enqueue(entry).await {
                    Counters::add(&self.common.counters.backups_coalesced);
                }
                BackupStatus::Queued
            }
        }
    }

    pub(crate) fn touch_due(&self, entry: &LocalEntry<C>) -> bool {
        let Some(interval) = entry.max_inactive() else {
            return false;
        };
        let half_slack =
            u64::try_from((keepalive_slack(interval) / 2).as_millis()).unwrap_or(u64::MAX);
        let refreshed = entry.remote_refreshed_ms.load(Ordering::Relaxed);
        self.common.now_ms().saturating_sub(refreshed) >= half_slack
    }
}

/// What the commit of a logout answers: the cookie is cleared.
fn ended_outcome() -> CommitOutcome {
    CommitOutcome {
        cookie: CookieUpdate::Clear,
        backup: BackupStatus::NotNeeded,
    }
}
