//! How long remote copies live.

use std::time::Duration;

use tandem_core::Ttl;

/// How much longer than its max inactive interval a remote copy lives: an eighth of
/// the interval, at least 1 s and at most 5 minutes.
///
/// The local copy's expiry restarts with every request, the remote copy's only when it
/// is written or touched. Giving the remote copy this slack lets an unchanged session
/// be touched only once per half-slack of use instead of on every request, while its
/// remote copy still never expires before the local one.
pub fn keepalive_slack(max_inactive: Duration) -> Duration {
    (max_inactive / 8).clamp(Duration::from_secs(1), Duration::from_secs(300))
}

/// The TTL of a remote copy of a session with this max inactive interval.
pub(crate) fn remote_ttl(max_inactive: Option<Duration>) -> Ttl {
    match max_inactive {
        // A store whose expiry clock is coarse (memcached's ticks once a second) pads
        // the lifetime itself: the manager asks for exactly what it needs.
        Some(interval) => Ttl::After(interval.saturating_add(keepalive_slack(interval))),
        None => Ttl::Never,
    }
}

/// The TTL of both remote copies of a non-sticky session: its interval. Every load
/// slides it (get-and-touch).
pub(crate) fn copy_ttl(max_inactive: Option<Duration>) -> Ttl {
    match max_inactive {
        Some(interval) => Ttl::After(interval),
        None => Ttl::Never,
    }
}
