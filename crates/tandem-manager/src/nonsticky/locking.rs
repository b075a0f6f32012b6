//! Who takes the session lock in non-sticky [`Concurrency::Lock`]: a turn in this
//! process's queue for the session (see [`lock_queue`](super::lock_queue)), then the
//! remote `lock:` key; and, for
//! [`LockScope::Auto`] and [`LockScope::Paths`], which requests need it.

use std::sync::Arc;
use std::time::Duration;

use tandem_core::{AddOutcome, Codec, KeySpace, SessionId};

use super::lock_queue::{SessionLock, Taken, Waited};
use super::remote_lock::RemoteLock;
use super::transit::{Transit, TransitRef};
use super::{AUTO_LOCK_LEARN_AFTER, Engine, MAX_PATTERN_LEN};
use crate::common::stats::Counters;
use crate::config::{Concurrency, LockScope, LockTimeoutPolicy};
use crate::error::{CommitError, LoadError};
use crate::outcome::CommitOutcome;
use crate::outcome::RequestInfo;
use crate::request::RequestSession;

/// The longest pause between two attempts to take a remote lock another server holds:
/// short enough that a server whose queue leaves the lock free for
/// [`YIELD`](super::lock_queue::YIELD) lets one of them in.
pub(super) const MAX_LOCK_BACKOFF: Duration = Duration::from_millis(8);

impl<C: Codec> Engine<C> {
    /// Whether this request takes the session lock.
    pub(super) fn needs_lock(&self, pattern: Option<&str>) -> bool {
        if self.common.config.concurrency != Concurrency::Lock {
            return false;
        }
        match (&self.common.config.lock_scope, pattern) {
            (LockScope::All, _) | (_, None) => true,
            (LockScope::Auto, Some(pattern)) => {
                self.read_only_streaks.get(pattern).unwrap_or(0) < AUTO_LOCK_LEARN_AFTER
            }
            (LockScope::Paths(paths), Some(pattern)) => {
                let path = pattern.split_once(' ').map_or(pattern, |(_, path)| path);
                paths.is_match(path)
            }
        }
    }

    /// The pattern [`LockScope::Auto`] and [`LockScope::Paths`] decide on: the method
    /// and (the start of) the path.
    pub(super) fn pattern(request: &RequestInfo<'_>) -> Box<str> {
        let mut end = request.path.len().min(MAX_PATTERN_LEN);
        while !request.path.is_char_boundary(end) {
            end -= 1;
        }
        format!("{} {}", request.method, &request.path[..end]).into()
    }

    /// Takes the session lock: this request's turn in the process's queue, then the
    /// remote lock, handed over by the previous request of the session here if it
    /// still held it, else taken with `add`. Both within the lock timeout in all.
    pub(super) async fn lock_session(
        &self,
        id: &SessionId,
        transit: &Transit<C>,
    ) -> Result<SessionLock, LoadError> {
        let timeout = self.common.config.lock_timeout;
        let started = self.common.now();
        let mut lock = SessionLock {
            queue: Arc::clone(&transit.queue),
            committing: false,
            turn: None,
            remote: None,
            clock: Arc::clone(&self.common.clock),
        };
        match transit.queue.try_turn() {
            Some(turn) => lock.turn = Some(turn),
            None => {
                Counters::add(&self.common.counters.lock_waits);
                let waited = transit.queue.turn(timeout).await;
                self.common
                    .counters
                    .histograms
                    .lock_wait(self.common.since(started));
                match waited {
                    Ok(turn) => lock.turn = Some(turn),
                    // Proceeding unlocked (the policy allows it): without the
                    // remote lock too, which the request ahead holds.
                    Err(Waited) => {
                        self.lock_timed_out(timeout)?;
                        return Ok(lock);
                    }
                }
            }
        }
        if let Some(taken) = transit.queue.take_handed() {
            if taken.lock.may_be_held() {
                lock.remote = Some(taken);
                return Ok(lock);
            }
            drop(taken);
        }
        if let Some(until) = transit.queue.yielding_until() {
            let pause = until.saturating_duration_since(self.common.now());
            tokio::time::sleep(pause.min(timeout.saturating_sub(self.common.since(started)))).await;
        }
        let budget = timeout.saturating_sub(self.common.since(started));
        lock.remote = self.lock_remote(id, budget).await?.map(|remote| Taken {
            lock: remote,
            at: self.common.now(),
        });
        Ok(lock)
    }

    /// A lock not acquired in time: an error, or on without the lock (counted, warned).
    pub(super) fn lock_timed_out(&self, waited: Duration) -> Result<(), LoadError> {
        Counters::add(&self.common.counters.lock_timeouts);
        match self.common.config.lock_timeout_policy {
            LockTimeoutPolicy::Fail => Err(LoadError::LockTimeout { waited }),
            LockTimeoutPolicy::ProceedUnlocked => {
                tracing::warn!(
                    ?waited,
                    "session lock not acquired in time; proceeding unlocked"
                );
                Ok(())
            }
        }
    }

    /// Takes the session's `lock:` key on its primary node (or where the session moves
    /// if the primary is down) with `add`, retrying with exponential backoff for at most
    /// `budget` (at least once).
    #[tracing::instrument(name = "tandem.lock", level = "debug", skip_all, fields(session = %id.redacted()))]
    pub(super) async fn lock_remote(
        &self,
        id: &SessionId,
        budget: Duration,
    ) -> Result<Option<RemoteLock>, LoadError> {
        let primary = self.common.node_of(id);
        let node = if self.common.store.is_available(&primary) {
            primary
        } else {
            match self.common.successor(&primary) {
                Some(node) => node,
                None => return Err(self.unavailable_load()),
            }
        };
        let key = self.common.key(KeySpace::Lock, id);
        let ttl = self.common.config.lock_ttl;
        let mut lock = RemoteLock::new(&self.common.store, node, key, ttl, &self.common.clock);
        let started = self.common.now();
        let mut backoff = Duration::from_millis(2);
        let mut waited = false;
        loop {
            match lock.try_take().await {
                Ok(AddOutcome::Stored) => {
                    if waited {
                        self.common
                            .counters
                            .histograms
                            .lock_wait(self.common.since(started));
                    }
                    return Ok(Some(lock));
                }
                Ok(AddOutcome::Exists) => {
                    if !waited {
                        waited = true;
                        Counters::add(&self.common.counters.lock_waits);
                    }
                }
                Err(error) if error.is_node_failure() => {
                    tracing::debug!(%error, "session lock: node failed");
                }
                Err(error) => {
                    tracing::warn!(%error, "session lock refused");
                }
            }
            let elapsed = self.common.since(started);
            if elapsed >= budget {
                return self.lock_timed_out(elapsed).map(|()| None);
            }
            tokio::time::sleep(backoff.min(budget - elapsed)).await;
            backoff = (backoff * 2).min(MAX_LOCK_BACKOFF);
        }
    }

    /// Commits a request with its session lock (if it has it), then passes the lock on.
    /// A request that held its lock longer than the lock's TTL may have lost it to
    /// another request: it commits a change only if it still holds it.
    pub(super) async fn commit_holding(
        self: &Arc<Self>,
        transit: &mut TransitRef<C>,
        request: &RequestSession<C>,
        lock: Option<SessionLock>,
        modified: bool,
    ) -> Result<CommitOutcome, CommitError> {
        let Some(mut lock) = lock else {
            return self.commit_locked(transit, request).await;
        };
        lock.committing = modified;
        let result = match lock.remote() {
            Some(remote) if modified => match remote.still_held().await {
                Ok(true) => self.commit_locked(transit, request).await,
                Ok(false) => {
                    Counters::add(&self.common.counters.locks_lost);
                    Counters::add(&self.common.counters.conflicts);
                    tracing::warn!(
                        "session lock expired and was taken by another request; commit refused"
                    );
                    Err(CommitError::Conflict {
                        attributes: request
                            .session
                            .changes()
                            .map(|change| change.name.to_owned())
                            .collect(),
                    })
                }
                Err(error) => Err(self.unavailable_commit(&error)),
            },
            _ => self.commit_locked(transit, request).await,
        };
        lock.committing = false;
        lock.finish().await;
        result
    }
}
