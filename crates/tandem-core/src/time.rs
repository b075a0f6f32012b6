//! Conversions between `SystemTime` and the Unix milliseconds stored in envelopes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch; times before the epoch count as the epoch.
pub(crate) fn unix_millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The time `millis` after the Unix epoch, saturating at the largest representable
/// time (stored bytes are untrusted, so no value may panic).
pub(crate) fn from_unix_millis(millis: u64) -> SystemTime {
    let since = Duration::from_millis(millis);
    UNIX_EPOCH
        .checked_add(since)
        .unwrap_or_else(|| UNIX_EPOCH + Duration::from_secs(i64::MAX as u64 / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_at_millisecond_precision() {
        let time = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(from_unix_millis(unix_millis(time)), time);
        assert_eq!(unix_millis(UNIX_EPOCH - Duration::from_secs(1)), 0);
        // Extreme stored values do not panic.
        let _ = from_unix_millis(u64::MAX);
    }
}
