//! Why a load or a commit failed.

use std::time::Duration;

/// Why [`SessionManager::load`](crate::SessionManager::load) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The session's lock was not free within the lock timeout
    /// ([`Concurrency::Lock`] with [`LockTimeoutPolicy::Fail`](crate::LockTimeoutPolicy::Fail)).
    #[error("the session is locked by another request (waited {waited:?})")]
    LockTimeout {
        /// How long the request waited.
        waited: Duration,
    },
    /// No node holding the session could be reached: non-sticky mode, or a sticky
    /// session this server does not hold whose node is down or did not answer. The
    /// session itself is not lost; a web layer answers 503 and keeps the cookie.
    #[error("no node can serve the session")]
    Unavailable,
}

/// Why [`SessionManager::commit`](crate::SessionManager::commit) failed. The request's changes were not applied; the
/// session itself is as it was before the commit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommitError {
    /// Another request changed these attributes after this request read them
    /// ([`Concurrency::Merge`](crate::Concurrency::Merge)). A web layer answers 409 Conflict.
    #[error("concurrent change of attribute(s) {attributes:?}")]
    Conflict {
        /// The conflicting attribute names.
        attributes: Vec<String>,
    },
    /// The session would be larger than the configured maximum.
    #[error("session of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The stored size the commit would have produced.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The session this request loaded ended while the request was using it: another
    /// request invalidated it or gave it a new id ([`RequestSession::cycle_id`](crate::RequestSession::cycle_id)), or
    /// (sticky) another server took it over. Nothing of this request was applied, in
    /// particular nothing to the session under its new id. A web layer answers 409.
    #[error("the session ended while this request used it")]
    SessionEnded,
    /// Non-sticky mode: earlier commits of the same session in this process held it
    /// longer than the lock timeout (a slow node), and this commit gave up waiting.
    /// A web layer answers 503.
    #[error("the session is busy with other commits (waited {waited:?})")]
    LockTimeout {
        /// How long the commit waited.
        waited: Duration,
    },
    /// Non-sticky mode: no node could take the write. A web layer answers 503.
    #[error("no node can store the session: {reason}")]
    Unavailable {
        /// The last store error.
        reason: String,
    },
    /// The session could not be sealed for storage (a layer failed).
    #[error("the session could not be prepared for storage: {reason}")]
    Encoding {
        /// What the layer reported.
        reason: String,
    },
    /// Non-sticky mode: the session kept changing under this commit; it gave up after
    /// this many compare-and-swap attempts.
    #[error("the session kept changing; gave up after {attempts} attempts")]
    RetriesExhausted {
        /// How many writes were tried.
        attempts: u32,
    },
}
