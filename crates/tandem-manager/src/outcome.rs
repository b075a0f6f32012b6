//! What a commit, a load and a shutdown report to the caller: plain values.

use std::time::Duration;

use tandem_core::SessionId;

use crate::error::WriteFailure;

/// What the client's session cookie must become after a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CookieUpdate {
    /// Leave it as it is (or absent, if the request had none and stored nothing).
    Keep,
    /// Set it to this id: the session is new, or its id changed (relocation to
    /// another node, takeover by this server, [`RequestSession::cycle_id`](crate::RequestSession::cycle_id)).
    Set {
        /// The session's id.
        id: SessionId,
        /// The session's max inactive interval; `None` means it never expires.
        max_inactive: Option<Duration>,
    },
    /// Clear it: the session was invalidated, or the client sent an id that no
    /// longer names a session.
    Clear,
}

/// What happened to the remote copy in a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupStatus {
    /// Nothing had to be written.
    NotNeeded,
    /// The write is queued for a background writer (asynchronous backup).
    Queued,
    /// The write finished before the commit returned (synchronous backup).
    Written,
    /// The synchronous write failed or was too slow; it is retried in the background
    /// (sticky: the session stays queued for backup; non-sticky: the backup copy is
    /// repaired from the primary). Until then the change lives on one node only.
    Failed(WriteFailure),
}

/// The result of a successful [`SessionManager::commit`](crate::SessionManager::commit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitOutcome {
    /// What to do with the client's cookie.
    pub cookie: CookieUpdate,
    /// What happened to the remote copy.
    pub backup: BackupStatus,
}

/// What a web layer knows about the request that loads a session: used by
/// [`LockScope`](crate::LockScope) to decide which requests take the session lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestInfo<'a> {
    /// The HTTP method, e.g. `GET`.
    pub method: &'a str,
    /// The request path, e.g. `/cart/items`.
    pub path: &'a str,
}

/// What [`SessionManager::shutdown`](crate::SessionManager::shutdown) achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ShutdownReport {
    /// Backups written during the shutdown.
    pub written: usize,
    /// Sessions whose newest state could not be written before the deadline (their
    /// node down or too slow).
    pub unsaved: usize,
    /// Tombstones of ended session ids (logouts, id changes, moves off a down node)
    /// that could not be written before the deadline, their node down or too slow:
    /// until their copies expire by their TTL, another server may still load them.
    pub ends_unwritten: usize,
}
