//! [`Clock`]: the one place the manager, the web layer and the in-process store read
//! the time, so that tests can run them on paused or mocked time.

use std::fmt;
use std::time::{Duration, Instant, SystemTime};

/// A source of time: a monotonic instant for intervals (expiry, keep-alive, lock
/// renewal, backoff, latencies) and the wall clock for what is stored or sent (a
/// session's last access, cookie renewal periods).
///
/// [`SystemClock`] is the real one and the default everywhere. A test swaps in a
/// clock it controls (the manager crate has one that follows tokio's paused time)
/// and gives the same clock to every part it wants to agree on time: the managers
/// standing in for app servers and a [`MemoryStore`](crate::MemoryStore).
///
/// ```
/// use std::time::Duration;
/// use tandem_core::{Clock, SystemClock};
///
/// let clock = SystemClock;
/// let started = clock.now();
/// assert!(clock.since(started) < Duration::from_secs(3600));
/// ```
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current monotonic instant.
    fn now(&self) -> Instant;

    /// The current wall-clock time.
    fn wall(&self) -> SystemTime;

    /// How long ago `earlier` was by this clock (zero if it is in the future).
    fn since(&self, earlier: Instant) -> Duration {
        self.now().saturating_duration_since(earlier)
    }
}

/// The operating system's clocks: [`Instant::now`] and [`SystemTime::now`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[inline]
    fn now(&self) -> Instant {
        Instant::now()
    }

    #[inline]
    fn wall(&self) -> SystemTime {
        SystemTime::now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_clock_reads_the_operating_system() {
        let clock = SystemClock;
        let (before, wall_before) = (Instant::now(), SystemTime::now());
        let (now, wall) = (clock.now(), clock.wall());
        assert!(now >= before);
        assert!(wall >= wall_before);
        assert_eq!(clock.since(now + Duration::from_secs(5)), Duration::ZERO);
    }
}
