//! Who takes the session lock in non-sticky [`Concurrency::Lock`]: this process's
//! lock of the transit copy, then the remote `lock:` key; and, for
//! [`LockScope::Auto`] and [`LockScope::Paths`], which requests need it.

use std::sync::Arc;
use std::time::Duration;

use tandem_core::{AddOutcome, Codec, KeySpace, SessionId};

use super::remote_lock::RemoteLock;
use super::transit::Transit;
use super::{AUTO_LOCK_LEARN_AFTER, Engine, MAX_PATTERN_LEN};
use crate::common::stats::Counters;
use crate::config::{Concurrency, LockScope, LockTimeoutPolicy};
use crate::error::LoadError;
use crate::outcome::RequestInfo;

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

    pub(super) async fn lock_transit(
        &self,
        transit: &Transit<C>,
    ) -> Result<Option<tokio::sync::OwnedMutexGuard<()>>, LoadError> {
        if let Ok(guard) = Arc::clone(&transit.lock).try_lock_owned() {
            return Ok(Some(guard));
        }
        Counters::add(&self.common.counters.lock_waits);
        let timeout = self.common.config.lock_timeout;
        let started = self.common.now();
        let waited = tokio::time::timeout(timeout, Arc::clone(&transit.lock).lock_owned()).await;
        self.common
            .counters
            .histograms
            .lock_wait(self.common.since(started));
        match waited {
            Ok(guard) => Ok(Some(guard)),
            Err(_) => self.lock_timed_out(timeout).map(|()| None),
        }
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
    /// if the primary is down) with `add`, retrying with exponential backoff until the
    /// lock timeout.
    #[tracing::instrument(name = "tandem.lock", level = "debug", skip_all, fields(session = %id.redacted()))]
    pub(super) async fn lock_remote(
        &self,
        id: &SessionId,
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
            if elapsed >= self.common.config.lock_timeout {
                return self.lock_timed_out(elapsed).map(|()| None);
            }
            tokio::time::sleep(backoff.min(self.common.config.lock_timeout - elapsed)).await;
            backoff = (backoff * 2).min(Duration::from_millis(100));
        }
    }
}
