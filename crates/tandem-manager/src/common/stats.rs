//! The manager's counters and histograms: plain atomics, so that counting costs no
//! lock on any path, exported to the `metrics` facade with names prefixed `tandem_`.
//!
//! Counters are not sent to the facade one increment at a time (that would put a
//! recorder call on the sticky hot path); the manager publishes their totals with
//! `Counter::absolute` on every sweep (and when asked to), which a Prometheus
//! exporter renders like any counter. Histogram samples are recorded as they happen,
//! on the slow paths only (remote reads and writes, changed commits, lock waits).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

macro_rules! counters {
    ($( $(#[$doc:meta])* $name:ident, )*) => {
        /// The live counters of a manager.
        #[derive(Debug, Default)]
        pub(crate) struct Counters {
            $( pub(crate) $name: AtomicU64, )*
            pub(crate) histograms: Histograms,
        }

        /// A snapshot of a manager's counters and histograms, from
        /// [`SessionManager::stats`](super::SessionManager::stats). Every counter
        /// only grows while the manager lives. Exported to the `metrics` facade as
        /// `tandem_<name>_total`.
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct Stats {
            $( $(#[$doc])* pub $name: u64, )*
            /// Remote reads of a session (sticky remote loads and takeovers, non-sticky
            /// loads), in microseconds.
            pub remote_load_micros: HistogramSnapshot,
            /// Backup writes to the remote tier, in microseconds.
            pub backup_write_micros: HistogramSnapshot,
            /// Commits that changed the session (including any synchronous or
            /// non-sticky write), in microseconds.
            pub changed_commit_micros: HistogramSnapshot,
            /// Waits for a session lock, in microseconds.
            pub lock_wait_micros: HistogramSnapshot,
            /// Stored sizes of sessions written to the remote tier, in bytes.
            pub stored_bytes: HistogramSnapshot,
            /// Remote operations that waited because their node's connection limit
            /// was reached (every connection busy), summed over the nodes: the store's
            /// count ([`NodeStatus::connection_waits`](crate::NodeStatus)), read when
            /// the snapshot is taken. Per node in `SessionManager::nodes`.
            pub connection_waits: u64,
        }

        impl Counters {
            pub(crate) fn snapshot(&self) -> Stats {
                Stats {
                    $( $name: self.$name.load(Ordering::Relaxed), )*
                    remote_load_micros: self.histograms.remote_load.snapshot(),
                    backup_write_micros: self.histograms.backup_write.snapshot(),
                    changed_commit_micros: self.histograms.changed_commit.snapshot(),
                    lock_wait_micros: self.histograms.lock_wait.snapshot(),
                    stored_bytes: self.histograms.stored_bytes.snapshot(),
                    connection_waits: 0,
                }
            }

            /// Publishes every counter's total to the `metrics` facade.
            pub(crate) fn export(&self) {
                $(
                    metrics::counter!(concat!("tandem_", stringify!($name), "_total"))
                        .absolute(self.$name.load(Ordering::Relaxed));
                )*
            }

            /// Describes the histograms to the facade (units and help texts for
            /// exporters).
            pub(crate) fn describe() {
                for (name, unit, help) in HISTOGRAMS {
                    metrics::describe_histogram!(*name, *unit, *help);
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
    /// format, a layer refusing them): counted, logged and answered with a fresh
    /// session.
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
    /// Non-sticky backup copies rewritten from the primary after their write failed.
    backup_copies_repaired,
    /// Non-sticky backup copies left older than their primary: the repair was given up
    /// after 10 minutes without both nodes answering, or could not be remembered
    /// because 100,000 were already waiting. Until the session's next change, a read
    /// that finds the primary down moves it to that older copy.
    backup_copy_repairs_abandoned,
    /// Commits refused because the session exceeded the size limit.
    too_large,
    /// Remote expiry extensions (touch) of unchanged sessions.
    touches,
    /// Non-sticky: unchanged requests that left the backup copy's expiry alone
    /// because this server slid it (or wrote the copy) less than a period ago
    /// ([`BackupRefresh::Throttled`](crate::BackupRefresh::Throttled)).
    backup_refreshes_skipped,
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
    /// Commits that reloaded the session and applied their changes again: non-sticky
    /// after a compare-and-swap conflict, sticky after another server took the
    /// session over while the request ran (this server's copy was dropped).
    merge_retries,
    /// Non-sticky requests refused because no node could serve them.
    unavailable,
    /// Requests that presented the id of a session that had been logged out or given
    /// a new id (found as a tombstone, or as a local copy that changed its id): each
    /// got a new, empty session. A steady stream hints at replayed stolen cookies.
    ended_ids_presented,
    /// Sticky: backups refused because another server wrote the session's remote
    /// copy since this server last did (it took the session over, or ended it). This
    /// server drops its copy; the next request reloads the current one.
    ownership_lost,
    /// Sticky: remote copies found older than the state this server last wrote (a
    /// store restored from a snapshot, such as Redis with persistence), and replaced
    /// by this server's newer state instead of being taken for another server's.
    stale_copies_replaced,
    /// Sticky: keep-alive touches turned into full backup writes because the node of
    /// the session's copy changed its epoch (it failed over, or restarted from older
    /// files, see `RemoteStore::node_epoch`) since this server wrote or read the copy:
    /// the node may hold an older copy, which a touch would keep alive.
    backups_rewritten_after_epoch_change,
    /// Non-sticky: reads that found the session's two copies different for a while
    /// after the epoch of their nodes changed (a failover that may have lost writes,
    /// see `RemoteStore::node_epoch`), or its primary copy alive while a deletion
    /// marker says the id ended. The newer copy is served and the older repaired
    /// (copies with the same last access: the primary is served); an ended id stays
    /// ended. May also count a backup copy whose write was still on its way.
    older_copies_detected,
    /// Sticky: local copies dropped because another server announced in the peer feed
    /// that it took the session over, reloaded, cycled or ended it.
    stale_copies_dropped,
    /// Sticky: announcements this server wrote to the peer feed.
    peer_announcements,
    /// Sticky: announcements that could not be written (their queue was full, or no
    /// node took them): another server may then serve its copy of that session until
    /// the copy expires or its next backup is refused.
    peer_announcements_dropped,
    /// Tombstones written over ended session ids (logout, id change, expiry, a move off
    /// a down node), so that no copy of them is served or written again.
    tombstones_written,
    /// Tombstones, deletion markers and deletes written by a retry, after their node
    /// had failed.
    remote_ends_retried,
    /// Tombstones, deletion markers and deletes given up because 100,000 were already
    /// waiting for their nodes: their copies end by their TTL.
    remote_ends_abandoned,
    /// Sticky: commits refused because `max_unsaved_bytes` of changed sessions were
    /// already waiting for their backup (memcached unreachable for long).
    unsaved_limit_hits,
    /// `LockScope::Auto`: request patterns dropped from the learning cache for space.
    lock_patterns_evicted,
    /// Non-sticky `Concurrency::Lock`: commits refused because the request held its
    /// lock past the lock TTL and another request had taken it.
    locks_lost,
}

/// The histograms exported to the facade: name, unit, help.
const HISTOGRAMS: &[(&str, metrics::Unit, &str)] = &[
    (
        "tandem_remote_load_seconds",
        metrics::Unit::Seconds,
        "Remote reads of a session.",
    ),
    (
        "tandem_backup_write_seconds",
        metrics::Unit::Seconds,
        "Backup writes to the remote tier.",
    ),
    (
        "tandem_changed_commit_seconds",
        metrics::Unit::Seconds,
        "Commits that changed the session.",
    ),
    (
        "tandem_lock_wait_seconds",
        metrics::Unit::Seconds,
        "Waits for a session lock.",
    ),
    (
        "tandem_stored_bytes",
        metrics::Unit::Bytes,
        "Stored sizes of sessions written to the remote tier.",
    ),
];

/// The manager's histograms.
#[derive(Debug, Default)]
pub(crate) struct Histograms {
    remote_load: Histogram,
    backup_write: Histogram,
    changed_commit: Histogram,
    lock_wait: Histogram,
    stored_bytes: Histogram,
}

impl Histograms {
    pub(crate) fn remote_load(&self, elapsed: Duration) {
        self.remote_load.record_duration(elapsed);
        metrics::histogram!("tandem_remote_load_seconds").record(elapsed.as_secs_f64());
    }

    pub(crate) fn backup_write(&self, elapsed: Duration, bytes: usize) {
        self.backup_write.record_duration(elapsed);
        self.stored_bytes.record(bytes as u64);
        metrics::histogram!("tandem_backup_write_seconds").record(elapsed.as_secs_f64());
        metrics::histogram!("tandem_stored_bytes").record(bytes as f64);
    }

    pub(crate) fn changed_commit(&self, elapsed: Duration) {
        self.changed_commit.record_duration(elapsed);
        metrics::histogram!("tandem_changed_commit_seconds").record(elapsed.as_secs_f64());
    }

    pub(crate) fn lock_wait(&self, elapsed: Duration) {
        self.lock_wait.record_duration(elapsed);
        metrics::histogram!("tandem_lock_wait_seconds").record(elapsed.as_secs_f64());
    }
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Buckets by powers of two: bucket `i` counts values below `2^i` (bucket 0: zero).
const BUCKETS: usize = 40;

/// A lock-free histogram with power-of-two buckets: cheap to record into from any
/// thread, precise to a factor of two, which is what latency and size distributions
/// need for an operator's view.
#[derive(Debug)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    count: AtomicU64,
    sum: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    fn record(&self, value: u64) {
        let bucket = (u64::BITS - value.leading_zeros()) as usize;
        self.buckets[bucket.min(BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    fn record_duration(&self, elapsed: Duration) {
        self.record(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
    }

    fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            count: self.count.load(Ordering::Relaxed),
            sum: self.sum.load(Ordering::Relaxed),
            buckets: self
                .buckets
                .iter()
                .map(|bucket| bucket.load(Ordering::Relaxed))
                .collect(),
        }
    }
}

/// A snapshot of one histogram: how many values were recorded, their sum, and how
/// many fell in each power-of-two bucket.
///
/// ```
/// # use tandem_manager::HistogramSnapshot;
/// let empty = HistogramSnapshot::default();
/// assert_eq!(empty.quantile(0.99), None);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Values recorded.
    pub count: u64,
    /// Their sum.
    pub sum: u64,
    /// Per bucket `i`, how many values were below `2^i` and at least `2^(i-1)`
    /// (bucket 0: zero; the last bucket also takes everything larger).
    pub buckets: Vec<u64>,
}

impl HistogramSnapshot {
    /// The mean of the recorded values; `None` if there are none.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum as f64 / self.count as f64)
    }

    /// An upper bound of the `q` quantile (0.0 to 1.0): the upper edge of the bucket
    /// it falls in, so at most twice the true value. `None` if nothing was recorded.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (bucket, count) in self.buckets.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(if bucket == 0 { 0 } else { (1u64 << bucket) - 1 });
            }
        }
        Some(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_bucket_upper_bounds() {
        let histogram = Histogram::default();
        for value in [0, 1, 3, 100, 100, 100, 100, 100, 5000, 1_000_000] {
            histogram.record(value);
        }
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.count, 10);
        assert_eq!(snapshot.sum, 1_005_504);
        assert_eq!(snapshot.quantile(0.1), Some(0));
        assert_eq!(snapshot.quantile(0.5), Some(127)); // 100 is in [64, 128)
        assert_eq!(snapshot.quantile(1.0), Some((1 << 20) - 1));
        assert_eq!(snapshot.mean(), Some(100_550.4));
        histogram.record(u64::MAX);
        assert_eq!(histogram.snapshot().buckets[BUCKETS - 1], 1);
    }
}
