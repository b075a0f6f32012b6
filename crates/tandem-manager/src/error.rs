//! Why a load or a commit failed.

use std::time::Duration;

use tandem_core::{EnvelopeError, LayerError, StoreError};

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
    /// No node could take the write (non-sticky mode), sticky mode's limit of unsaved
    /// sessions is reached while the remote tier is unreachable, or the manager was
    /// aborted. A web layer answers 503.
    #[error("no node can store the session: {source}")]
    Unavailable {
        /// Why.
        #[source]
        source: WriteFailure,
    },
    /// The session could not be sealed for storage (a layer failed).
    #[error("the session could not be prepared for storage: {source}")]
    Encoding {
        /// What the layer reported.
        #[source]
        source: LayerError,
    },
    /// Non-sticky mode: the session kept changing under this commit; it gave up after
    /// this many compare-and-swap attempts.
    #[error("the session kept changing; gave up after {attempts} attempts")]
    RetriesExhausted {
        /// How many writes were tried.
        attempts: u32,
    },
}

/// Why a remote write did not land: the source of [`CommitError::Unavailable`] and of
/// [`BackupStatus::Failed`](crate::BackupStatus::Failed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WriteFailure {
    /// The store failed the operation (the node is down, did not answer in time,
    /// refused the value, ...).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The write did not finish within the commit's wait (synchronous backups).
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
    /// No node is available to take it.
    #[error("no node is available")]
    NoNode,
    /// Sticky mode: another server wrote the session's remote copy since this server
    /// did; the copy is no longer this server's to write.
    #[error("another server wrote the session's copy since this server did")]
    NotOurs,
    /// Sticky mode: this server's copy was dropped before its backup (another server
    /// took the session over, or it ended).
    #[error("the session's copy here was dropped before its backup")]
    Dropped,
    /// The remote copy kept changing while it was written.
    #[error("the session's copy kept changing while it was written")]
    KeptChanging,
    /// The session could not be sealed for storage (a layer failed).
    #[error("the session could not be sealed: {0}")]
    Sealing(#[source] LayerError),
    /// Sticky mode: the unsaved sessions waiting for an unreachable remote tier reached
    /// the configured maximum (`ManagerBuilder::max_unsaved_bytes`).
    #[error("too much session data waits for its backup ({bytes} bytes)")]
    UnsavedLimit {
        /// The bytes waiting.
        bytes: u64,
    },
    /// The manager was aborted (`SessionManager::abort`).
    #[error("the manager was aborted")]
    Aborted,
}

/// Why stored bytes could not be opened into a session.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpenError {
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
}
