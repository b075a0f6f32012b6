//! Polling helpers for async tests: wait for background work to show, instead of
//! sleeping for a fixed time and hoping it was enough.
//!
//! Each takes a `limit` that bounds a failure, not a measurement: make it generous, so
//! that a machine busy with other builds does not fail the test (the helpers return as
//! soon as the condition holds, so a generous limit costs nothing when all is well).

use std::time::{Duration, Instant};

/// How often [`wait_until`] and [`wait_until_async`] check their condition.
pub const WAIT_POLL_INTERVAL: Duration = Duration::from_millis(10);

/// How long [`wait_until_quiet`] watches a counter for a change.
pub const QUIET_INTERVAL: Duration = Duration::from_millis(50);

/// Polls `condition` every [`WAIT_POLL_INTERVAL`] until it holds or `limit` has
/// passed; returns how long it took, or `None` if it never held.
///
/// The condition is checked at once and once more after `limit` has passed, so a
/// condition that holds at the limit is not missed. It runs on the calling task
/// between sleeps, so it must not block.
///
/// ```
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let done = AtomicBool::new(true);
/// let held = || done.load(Ordering::Relaxed);
/// let took = tandem_testkit::wait_until(Duration::from_secs(5), held).await;
/// assert!(took.is_some());
/// # }
/// ```
pub async fn wait_until(limit: Duration, mut condition: impl FnMut() -> bool) -> Option<Duration> {
    wait_until_async(limit, || std::future::ready(condition())).await
}

/// [`wait_until`] for a condition that has to await something itself (a request, a
/// read of the server): polls `condition().await` every [`WAIT_POLL_INTERVAL`] until
/// it holds or `limit` has passed; returns how long it took, or `None` if it never
/// held.
///
/// Each check runs to its end before the limit is looked at, so a check that is slow
/// itself can take the whole wait past `limit`.
///
/// ```
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let answered = tandem_testkit::wait_until_async(Duration::from_secs(5), || async {
///     tokio::task::yield_now().await; // a request, for example
///     true
/// });
/// assert!(answered.await.is_some());
/// # }
/// ```
pub async fn wait_until_async<F, Fut>(limit: Duration, mut condition: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if condition().await {
            return Some(started.elapsed());
        }
        if started.elapsed() >= limit {
            return None;
        }
        tokio::time::sleep(WAIT_POLL_INTERVAL).await;
    }
}

/// Waits until `idle` holds and `count` stays the same over one [`QUIET_INTERVAL`],
/// for at most `limit`; returns the count then, or `None` if it never went quiet.
///
/// For a test that counts what a request sends to a server: first wait until the
/// background work is done (`idle`, for example "no backup pending") and the server's
/// operation counter (`count`) stops moving, then count from there.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let operations = AtomicU64::new(7);
/// let quiet = tandem_testkit::wait_until_quiet(
///     Duration::from_secs(5),
///     || true,
///     || operations.load(Ordering::Relaxed),
/// );
/// assert_eq!(quiet.await, Some(7));
/// # }
/// ```
pub async fn wait_until_quiet(
    limit: Duration,
    mut idle: impl FnMut() -> bool,
    mut count: impl FnMut() -> u64,
) -> Option<u64> {
    let started = Instant::now();
    loop {
        let before = count();
        tokio::time::sleep(QUIET_INTERVAL).await;
        if idle() && count() == before {
            return Some(before);
        }
        if started.elapsed() >= limit {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[tokio::test]
    async fn wait_until_returns_once_the_condition_holds() {
        let checks = Cell::new(0);
        let took = wait_until(Duration::from_secs(5), || {
            checks.set(checks.get() + 1);
            checks.get() == 3
        })
        .await;
        assert!(took.is_some_and(|took| took >= 2 * WAIT_POLL_INTERVAL));
        assert_eq!(checks.get(), 3);
    }

    #[tokio::test]
    async fn wait_until_gives_up_after_the_limit_with_one_last_check() {
        let checks = Cell::new(0);
        let started = Instant::now();
        let took = wait_until(Duration::from_millis(50), || {
            checks.set(checks.get() + 1);
            false
        })
        .await;
        assert_eq!(took, None);
        assert!(started.elapsed() >= Duration::from_millis(50));
        // At once, and once more after the limit (how many in between depends on how
        // busy the machine is).
        assert!(checks.get() >= 2, "{} checks", checks.get());

        // A condition that holds only after the limit is seen by the last check.
        let started = Instant::now();
        let limit = Duration::from_millis(30);
        let took = wait_until(limit, || started.elapsed() >= limit).await;
        assert!(took.is_some());
    }

    #[tokio::test]
    async fn wait_until_async_awaits_each_check() {
        let checks = Cell::new(0);
        let took = wait_until_async(Duration::from_secs(5), || {
            checks.set(checks.get() + 1);
            let ready = checks.get() == 2;
            async move {
                tokio::task::yield_now().await;
                ready
            }
        })
        .await;
        assert!(took.is_some());
        assert_eq!(checks.get(), 2);
        assert_eq!(
            wait_until_async(Duration::ZERO, || async { false }).await,
            None
        );
    }

    #[tokio::test]
    async fn wait_until_quiet_waits_for_idle_and_a_still_count() {
        // The count climbs to 4 and stays there; the work is idle once the count has
        // been read six times.
        let looks = Cell::new(0u64);
        let quiet = wait_until_quiet(
            Duration::from_secs(5),
            || looks.get() >= 6,
            || {
                looks.set(looks.get() + 1);
                looks.get().min(4)
            },
        )
        .await;
        assert_eq!(quiet, Some(4));

        let never = wait_until_quiet(Duration::from_millis(100), || false, || 1).await;
        assert_eq!(never, None);
    }
}
