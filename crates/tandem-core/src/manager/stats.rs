//! The manager's counters: plain atomics, so that counting costs no lock on any path.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($( $(#[$doc:meta])* $name:ident, )*) => {
        /// The live counters of a manager.
        #[derive(Debug, Default)]
        pub(crate) struct Counters {
            $( pub(crate) $name: AtomicU64, )*
        }

        /// A snapshot of a manager's counters, from
        /// [`SessionManager::stats`](super::SessionManager::stats). Every counter
        /// only grows while the manager lives.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct Stats {
            $( $(#[$doc])* pub $name: u64, )*
        }

        impl Counters {
            pub(crate) fn snapshot(&self) -> Stats {
                Stats {
                    $( $name: self.$name.load(Ordering::Relaxed), )*
                }
            }
        }
    };
}

counters! {
    /// Calls of `load`: requests that used their session.
    loads,
    /// New sessions stored by a commit.
    sessions_created,
    /// Loads served from the local tier without any network operation.
    loaded_local,
    /// Loads served from the remote tier (after a restart, takeover or swap-out).
    loaded_remote,
    /// Sessions moved to another node because the node their id named was down.
    relocated,
    /// Sessions this server took over from another route.
    taken_over,
    /// Sessions removed because they were idle past their max inactive interval.
    expired,
    /// Sessions invalidated by the application.
    invalidated,
    /// Session ids changed by `cycle_id`.
    ids_cycled,
    /// Incoming ids rejected by the strict parser or naming no configured node.
    invalid_ids,
    /// Incoming well-formed ids that no tier knows (a fresh session was started).
    unknown_ids,
    /// Unknown ids answered by the negative cache without asking the remote tier.
    negative_cache_hits,
    /// Remote loads that failed because the node was down or failed.
    remote_load_failures,
    /// Stored sessions that could not be decoded (corrupt bytes, unknown codec or
    /// format): counted, logged and answered with a fresh session.
    undecodable,
    /// Requests served while no node could hold their session's backup.
    degraded,
    /// Calls of `commit`.
    commits,
    /// Backups written to the remote tier.
    backups_written,
    /// Commits that changed nothing and therefore wrote nothing.
    backups_skipped_unchanged,
    /// Commits whose backup joined one already queued (only the newest state is sent).
    backups_coalesced,
    /// Backup writes that failed (retried in the background).
    backups_failed,
    /// Commits refused because the session exceeded the size limit.
    too_large,
    /// Remote expiry extensions (touch) of unchanged sessions.
    touches,
    /// Touches that failed or found no remote copy (which is then rewritten).
    touch_failures,
    /// Remote copies deleted after expiry, invalidation or an id change.
    remote_deletes,
    /// Sessions dropped from the local tier for space (still loadable remotely).
    swapped_out,
    /// Loads that had to wait for their session's lock.
    lock_waits,
    /// Loads that gave up waiting for their session's lock.
    lock_timeouts,
    /// Commits refused because another request changed the same attribute.
    conflicts,
    /// Non-sticky commits that reloaded the session and applied their changes again
    /// after a compare-and-swap conflict.
    merge_retries,
    /// Non-sticky requests refused because no node could serve them.
    unavailable,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
