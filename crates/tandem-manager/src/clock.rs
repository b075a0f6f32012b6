//! [`TokioClock`]: the manager's time on tokio's clock, for tests on paused time.

use std::time::{Instant, SystemTime};

use tandem_core::Clock;

/// A [`Clock`] that reads tokio's time: the system clock in production, and tokio's
/// paused clock in a test that pauses it (`#[tokio::test(start_paused = true)]`, or
/// `tokio::time::pause`, with tokio's `test-util` feature). On paused time, every
/// sleep, timeout and interval of the manager and every time it reads move together,
/// so a test can let a session expire after 30 minutes, or a lock's renewal come
/// due, in no time and deterministically.
///
/// The wall clock is the system's wall clock when the clock was made, plus the time
/// tokio's clock has moved since.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use std::time::Duration;
/// use tandem_core::Clock;
/// use tandem_manager::TokioClock;
///
/// let clock = Arc::new(TokioClock::new());
/// let (started, wall) = (clock.now(), clock.wall());
/// tokio::time::sleep(Duration::from_secs(1800)).await; // no real wait: time is paused
/// assert_eq!(clock.since(started), Duration::from_secs(1800));
/// assert_eq!(clock.wall().duration_since(wall).unwrap(), Duration::from_secs(1800));
/// # });
/// ```
#[derive(Debug)]
pub struct TokioClock {
    origin: tokio::time::Instant,
    wall_origin: SystemTime,
}

impl TokioClock {
    /// A clock that starts at tokio's and the system's current time.
    pub fn new() -> TokioClock {
        TokioClock {
            origin: tokio::time::Instant::now(),
            wall_origin: SystemTime::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> TokioClock {
        TokioClock::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }

    fn wall(&self) -> SystemTime {
        self.wall_origin + tokio::time::Instant::now().saturating_duration_since(self.origin)
    }
}
