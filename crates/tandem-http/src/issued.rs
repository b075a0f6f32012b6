//! When this process last issued each session's cookie, for non-sticky renewals of
//! [`MaxAge::FollowSession`](crate::MaxAge::FollowSession) cookies.
//!
//! Every non-sticky request that uses its session asks this record, so it must be
//! cheap: a lookup is one hash of the session id and one probe of a table of
//! integers under a short lock, and a remembered cookie costs about 20 bytes. (A
//! general-purpose cache kept about 300 bytes and ~1,000 instructions per lookup on
//! its own bookkeeping, for what needs neither exact expiry nor eviction order.)
//!
//! Cookies are kept in two generations: new records go to the current one, and every
//! [`RETENTION`] (or when the current one is full) the previous generation is dropped
//! and the current one becomes the previous. A record is therefore remembered for at
//! least one retention period and at most two. A forgotten cookie only costs an early
//! renewal (the caller then falls back to the session's age), so neither the period nor
//! the capacity needs to be exact.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tandem_core::Clock;

/// The shortest time a record is remembered: at least the longest renewal window (an
/// eighth of the max inactive interval, at most 5 minutes).
pub(crate) const RETENTION: Duration = Duration::from_secs(5 * 60);

/// Records per generation: a full current generation is rotated early, which bounds
/// memory at two generations (about 4 MB) whatever the rate of new sessions.
const GENERATION_CAPACITY: usize = 100_000;

/// The issue times of recently issued cookies, by a keyed 64-bit hash of the session
/// id.
///
/// Two ids with the same hash would share a record; with a per-process random key
/// that is as unlikely as a guessed key, and costs at most one renewal too many or
/// too few.
pub(crate) struct IssuedCookies {
    hasher: foldhash::fast::RandomState,
    /// The manager's clock, which the stored times are read from.
    clock: Arc<dyn Clock>,
    /// The reference point of the stored times (milliseconds since it).
    epoch: Instant,
    generations: Mutex<Generations>,
}

struct Generations {
    current: HashMap<u64, u64, foldhash::fast::RandomState>,
    previous: HashMap<u64, u64, foldhash::fast::RandomState>,
    /// When `current` became current, in milliseconds since the epoch.
    current_since_ms: u64,
}

impl IssuedCookies {
    pub(crate) fn new(clock: Arc<dyn Clock>) -> IssuedCookies {
        IssuedCookies {
            hasher: foldhash::fast::RandomState::default(),
            epoch: clock.now(),
            clock,
            generations: Mutex::new(Generations {
                current: HashMap::default(),
                previous: HashMap::default(),
                current_since_ms: 0,
            }),
        }
    }

    /// Records that the cookie of session `id` was issued now.
    pub(crate) fn issued(&self, id: &str) {
        self.issued_at(id, self.now_ms());
    }

    /// How long ago the cookie of session `id` was last issued, if that is still
    /// remembered.
    pub(crate) fn age(&self, id: &str) -> Option<Duration> {
        self.age_at(id, self.now_ms())
    }

    fn issued_at(&self, id: &str, now_ms: u64) {
        let key = self.hasher.hash_one(id);
        let mut generations = self.lock();
        generations.rotate_if_due(now_ms);
        if generations.current.len() >= GENERATION_CAPACITY {
            generations.rotate(now_ms);
        }
        generations.current.insert(key, now_ms);
    }

    fn age_at(&self, id: &str, now_ms: u64) -> Option<Duration> {
        let key = self.hasher.hash_one(id);
        let mut generations = self.lock();
        generations.rotate_if_due(now_ms);
        let issued_ms = generations
            .current
            .get(&key)
            .or_else(|| generations.previous.get(&key))?;
        Some(Duration::from_millis(now_ms.saturating_sub(*issued_ms)))
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.clock.since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generations> {
        // The maps hold plain integers: a panic elsewhere cannot leave them torn.
        self.generations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Generations {
    fn rotate_if_due(&mut self, now_ms: u64) {
        let retention_ms = RETENTION.as_millis() as u64;
        if now_ms.saturating_sub(self.current_since_ms) >= retention_ms {
            // Two periods without a rotation: the previous generation is older still.
            if now_ms.saturating_sub(self.current_since_ms) >= 2 * retention_ms {
                self.current.clear();
            }
            self.rotate(now_ms);
        }
    }

    fn rotate(&mut self, now_ms: u64) {
        self.previous = std::mem::take(&mut self.current);
        self.current_since_ms = now_ms;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RETENTION_MS: u64 = RETENTION.as_millis() as u64;

    #[test]
    fn a_cookie_is_remembered_for_at_least_one_period() {
        let issued = IssuedCookies::new(Arc::new(tandem_core::SystemClock));
        issued.issued_at("a", 1_000);
        assert_eq!(issued.age_at("a", 1_500), Some(Duration::from_millis(500)));
        assert_eq!(issued.age_at("b", 1_500), None);
        // Just before the period ends, and after one rotation: still remembered.
        let later = 1_000 + RETENTION_MS;
        assert_eq!(
            issued.age_at("a", later - 1),
            Some(Duration::from_millis(RETENTION_MS - 1))
        );
        assert_eq!(
            issued.age_at("a", later + 1),
            Some(Duration::from_millis(RETENTION_MS + 1))
        );
        // After a second rotation (one period after the first) it is gone.
        assert_eq!(issued.age_at("a", later + 999 + RETENTION_MS), None);
    }

    #[test]
    fn reissuing_restarts_the_age() {
        let issued = IssuedCookies::new(Arc::new(tandem_core::SystemClock));
        issued.issued_at("a", 0);
        issued.issued_at("a", RETENTION_MS + 10);
        assert_eq!(
            issued.age_at("a", RETENTION_MS + 20),
            Some(Duration::from_millis(10))
        );
        // The newer record survives the rotation that drops the older one.
        assert_eq!(
            issued.age_at("a", 2 * RETENTION_MS + 20),
            Some(Duration::from_millis(RETENTION_MS + 10))
        );
    }

    #[test]
    fn a_long_quiet_time_forgets_everything() {
        let issued = IssuedCookies::new(Arc::new(tandem_core::SystemClock));
        issued.issued_at("a", 10);
        // No call for more than two periods: nothing is older than two periods.
        assert_eq!(issued.age_at("a", 3 * RETENTION_MS), None);
    }

    #[test]
    fn a_full_generation_rotates_early_and_memory_stays_bounded() {
        let issued = IssuedCookies::new(Arc::new(tandem_core::SystemClock));
        for i in 0..(2 * GENERATION_CAPACITY + 10) {
            issued.issued_at(&format!("cookie-{i}"), 5);
        }
        let generations = issued.lock();
        assert!(generations.current.len() <= GENERATION_CAPACITY);
        assert!(generations.previous.len() <= GENERATION_CAPACITY);
        drop(generations);
        // The newest are remembered, the oldest were dropped with their generation.
        let newest = format!("cookie-{}", 2 * GENERATION_CAPACITY + 9);
        assert_eq!(issued.age_at(&newest, 5), Some(Duration::ZERO));
        assert_eq!(issued.age_at("cookie-0", 5), None);
    }
}
