//! When an unchanged request slides the expiry of its session's backup copy.
//!
//! Every read slides the primary copy's expiry (get-and-touch, one operation). The
//! backup copy's expiry used to slide on every unchanged request too, a second
//! operation per read. Under [`BackupRefresh::Throttled`] each server slides it at
//! most once per [`refresh_period`] of the session's interval instead, remembering
//! here when it last did (or wrote the copy).
//!
//! Why that is safe: a touch gives the backup copy the session's whole interval from
//! the read it follows, the same TTL the primary got from that read. So the copy never
//! outlives its primary: it expires with the primary if no read came since, and
//! earlier otherwise. A primary that expired therefore never leaves a backup copy able
//! to bring the session back; the restore rule of [`read`](super::read) (a copy must
//! have more than a margin left) holds as before. While the session is in use (read at
//! least once per period), the copy is slid before it can expire. What it costs: a
//! session idle for longer than its interval minus one period has no backup copy any
//! more for the rest of its life (at most one period), and is lost if its primary
//! node dies in that window.
//!
//! The table keeps one small entry (a hash of the id and a time) per session this
//! server refreshed within the last period; the manager's sweep drops older ones,
//! one shard per sweep, so it stays bounded by the sessions in recent use.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tandem_core::SessionId;

use crate::config::BackupRefresh;

/// Shards of the table: requests of different sessions rarely wait for each other.
const SHARDS: usize = 64;

/// The longest period between two refreshes of one backup copy by one server.
const LONGEST_PERIOD: Duration = Duration::from_secs(300);

/// A server's period between two refreshes of the backup copy of a session with this
/// interval: an eighth of it (at most 5 minutes, as the sticky keep-alive's slack).
/// `None` for a session that never expires: its copy has no expiry to slide, and a
/// touch only notices a missing copy, which is then repaired; that is checked once
/// per the longest period.
pub(crate) fn refresh_period(refresh: BackupRefresh, interval: Option<Duration>) -> Duration {
    match (refresh, interval) {
        (BackupRefresh::EveryRead, _) => Duration::ZERO,
        (BackupRefresh::Throttled, Some(interval)) => (interval / 8).min(LONGEST_PERIOD),
        (BackupRefresh::Throttled, None) => LONGEST_PERIOD,
    }
}

/// When this server last slid (or wrote) the backup copy of each session it refreshed
/// within the last period.
pub(crate) struct BackupRefreshes {
    /// Milliseconds after `since` of the last refresh, per hash of the session's
    /// storage id. Two ids with the same 64-bit hash would share an entry, which can
    /// only skip a refresh (a copy that then expires earlier), never extend a copy.
    shards: Box<[parking_lot::Mutex<HashMap<u64, u64>>]>,
    hasher: foldhash::fast::RandomState,
    since: Instant,
    /// Counts sweeps: the shard the next one looks at, modulo the shards.
    sweeps: AtomicUsize,
}

impl BackupRefreshes {
    pub(crate) fn new(now: Instant) -> BackupRefreshes {
        BackupRefreshes {
            shards: (0..SHARDS).map(|_| Default::default()).collect(),
            hasher: foldhash::fast::RandomState::default(),
            since: now,
            sweeps: AtomicUsize::new(0),
        }
    }

    fn slot(&self, id: &SessionId) -> (&parking_lot::Mutex<HashMap<u64, u64>>, u64) {
        let hash = self.hasher.hash_one(id.storage_id());
        // The low bits pick the shard; the map hashes the whole value again.
        (&self.shards[hash as usize % SHARDS], hash)
    }

    fn millis(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.since).as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether the backup copy of `id` is due for a refresh at `now`, given `period`;
    /// if so, the refresh is claimed (recorded as done now), so that concurrent
    /// requests of the session send one touch, not one each.
    pub(crate) fn claim(&self, id: &SessionId, period: Duration, now: Instant) -> bool {
        if period.is_zero() {
            return true;
        }
        let (shard, hash) = self.slot(id);
        let now = self.millis(now);
        let period = u64::try_from(period.as_millis()).unwrap_or(u64::MAX);
        let mut shard = shard.lock();
        match shard.get_mut(&hash) {
            Some(last) if now.saturating_sub(*last) < period => false,
            Some(last) => {
                *last = now;
                true
            }
            None => {
                shard.insert(hash, now);
                true
            }
        }
    }

    /// The backup copy of `id` was written (or slid) with its whole interval at `now`.
    pub(crate) fn record(&self, id: &SessionId, now: Instant) {
        let (shard, hash) = self.slot(id);
        let now = self.millis(now);
        shard.lock().insert(hash, now);
    }

    /// The last refresh of `id` may not have landed: the next request tries again.
    pub(crate) fn forget(&self, id: &SessionId) {
        let (shard, hash) = self.slot(id);
        shard.lock().remove(&hash);
    }

    /// Drops the entries of one shard (the next in turn) older than the longest period
    /// any session can have: those are due for a refresh anyway.
    pub(crate) fn sweep(&self, now: Instant) {
        let index = self.sweeps.fetch_add(1, Ordering::Relaxed) % SHARDS;
        let now = self.millis(now);
        let longest = u64::try_from(LONGEST_PERIOD.as_millis()).unwrap_or(u64::MAX);
        let mut shard = self.shards[index].lock();
        shard.retain(|_, last| now.saturating_sub(*last) < longest);
        if shard.capacity() > 4 * shard.len().max(64) {
            shard.shrink_to_fit();
        }
    }

    /// How many sessions have an entry (for tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|shard| shard.lock().len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_core::NodeId;

    fn id(n: u8) -> SessionId {
        SessionId::generate(&NodeId::new(&format!("n{n}")).unwrap(), None)
    }

    #[test]
    fn a_refresh_is_due_once_per_period() {
        let start = Instant::now();
        let table = BackupRefreshes::new(start);
        let (x, y) = (id(1), id(1));
        let period = Duration::from_secs(10);
        assert!(table.claim(&x, period, start));
        assert!(!table.claim(&x, period, start + Duration::from_secs(9)));
        assert!(table.claim(&y, period, start + Duration::from_secs(9)));
        assert!(table.claim(&x, period, start + Duration::from_secs(10)));
        assert!(!table.claim(&x, period, start + Duration::from_secs(19)));
        table.forget(&x);
        assert!(table.claim(&x, period, start + Duration::from_secs(19)));
        table.record(&y, start + Duration::from_secs(30));
        assert!(!table.claim(&y, period, start + Duration::from_secs(39)));
        assert!(table.claim(&y, Duration::ZERO, start + Duration::from_secs(39)));
    }

    #[test]
    fn the_sweep_drops_entries_older_than_the_longest_period() {
        let start = Instant::now();
        let table = BackupRefreshes::new(start);
        let old: Vec<_> = (0..200).map(|_| id(1)).collect();
        for x in &old {
            table.record(x, start);
        }
        let recent = id(1);
        let later = start + LONGEST_PERIOD;
        table.record(&recent, later);
        for _ in 0..SHARDS {
            table.sweep(later);
        }
        assert_eq!(table.len(), 1);
        assert!(!table.claim(&recent, LONGEST_PERIOD, later));
    }

    #[test]
    fn the_period_is_an_eighth_of_the_interval_up_to_five_minutes() {
        let throttled = BackupRefresh::Throttled;
        assert_eq!(
            refresh_period(throttled, Some(Duration::from_secs(16))),
            Duration::from_secs(2)
        );
        assert_eq!(
            refresh_period(throttled, Some(Duration::from_secs(30 * 60))),
            Duration::from_secs(225)
        );
        assert_eq!(
            refresh_period(throttled, Some(Duration::from_secs(24 * 3600))),
            LONGEST_PERIOD
        );
        assert_eq!(refresh_period(throttled, None), LONGEST_PERIOD);
        assert_eq!(
            refresh_period(BackupRefresh::EveryRead, Some(Duration::from_secs(60))),
            Duration::ZERO
        );
    }
}
