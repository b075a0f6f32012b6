//! memcached's expiry rule: relative seconds up to 30 days, absolute Unix time beyond.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tandem_core::Ttl;

/// The longest expiry memcached reads as relative seconds (30 days); a larger number
/// is read as an absolute Unix time.
pub const MAX_RELATIVE_TTL_SECS: u32 = 30 * 24 * 60 * 60;

/// The latest absolute expiry memcached takes: `i32::MAX` (January 2038). It reads the
/// expiry as a signed 32-bit number, and stores an item with a larger one as already
/// expired.
const MAX_ABSOLUTE_EXPIRY: u32 = i32::MAX as u32;

/// How much earlier than its TTL memcached may expire an item: it counts expiry on a
/// clock that ticks once a second. Every lifetime the store sends is this much longer,
/// so that no item ends before the lifetime the caller asked for.
pub const EXPIRY_CLOCK_SLACK: Duration = Duration::from_secs(1);

/// The expiry the store sends for `ttl` at `now`: the lifetime plus
/// [`EXPIRY_CLOCK_SLACK`], in memcached's terms ([`wire_ttl`]).
pub(crate) fn expiry(ttl: Ttl, now: SystemTime) -> u32 {
    let padded = match ttl {
        Ttl::Never => Ttl::Never,
        Ttl::After(lifetime) => Ttl::After(lifetime.saturating_add(EXPIRY_CLOCK_SLACK)),
    };
    wire_ttl(padded, now)
}

/// The expiry to send to memcached for `ttl`, at wall-clock time `now`.
///
/// [`Ttl::Never`] is `0` (never expires). A lifetime of up to
/// [`MAX_RELATIVE_TTL_SECS`] is sent as relative seconds (rounded up, at least 1). A
/// longer one is sent as the absolute Unix time `now + lifetime`, because memcached
/// would read a relative number that large as a time in 1970 and expire the item at
/// once. The absolute time is capped at `i32::MAX` (January 2038), the latest memcached
/// reads: it takes a larger number for a time long past and expires the item at once,
/// so a lifetime beyond that ends in 2038 instead.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use tandem_core::Ttl;
/// use tandem_memcached::wire_ttl;
///
/// let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
/// assert_eq!(wire_ttl(Ttl::Never, now), 0);
/// assert_eq!(wire_ttl(Ttl::After(Duration::from_millis(1500)), now), 2);
/// let forty_days = Duration::from_secs(40 * 24 * 3600);
/// assert_eq!(wire_ttl(Ttl::After(forty_days), now), 1_700_000_000 + 40 * 24 * 3600);
/// let a_century = Duration::from_secs(100 * 365 * 24 * 3600);
/// assert_eq!(wire_ttl(Ttl::After(a_century), now), i32::MAX as u32);
/// ```
pub fn wire_ttl(ttl: Ttl, now: SystemTime) -> u32 {
    let Some(seconds) = ttl.whole_seconds() else {
        return 0;
    };
    if seconds <= MAX_RELATIVE_TTL_SECS {
        return seconds;
    }
    let now = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since_epoch| since_epoch.as_secs());
    u32::try_from(now.saturating_add(u64::from(seconds)))
        .unwrap_or(u32::MAX)
        .min(MAX_ABSOLUTE_EXPIRY)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_750_000_000;

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    fn after(seconds: u64) -> Ttl {
        Ttl::After(Duration::from_secs(seconds))
    }

    #[test]
    fn the_store_adds_a_second_for_memcacheds_clock() {
        assert_eq!(expiry(Ttl::Never, at(NOW)), 0);
        assert_eq!(expiry(Ttl::After(Duration::from_millis(1)), at(NOW)), 2);
        assert_eq!(expiry(after(1800), at(NOW)), 1801);
        // The slack counts toward the 30-day rule.
        assert_eq!(
            expiry(after(u64::from(MAX_RELATIVE_TTL_SECS)), at(NOW)),
            u32::try_from(NOW).unwrap() + MAX_RELATIVE_TTL_SECS + 1
        );
    }

    #[test]
    fn never_is_zero() {
        assert_eq!(wire_ttl(Ttl::Never, at(NOW)), 0);
    }

    #[test]
    fn up_to_thirty_days_is_relative() {
        assert_eq!(wire_ttl(Ttl::After(Duration::from_millis(1)), at(NOW)), 1);
        assert_eq!(wire_ttl(after(1), at(NOW)), 1);
        assert_eq!(wire_ttl(after(1800), at(NOW)), 1800);
        assert_eq!(
            wire_ttl(after(2_592_000), at(NOW)),
            2_592_000,
            "exactly 30 days is still relative"
        );
    }

    #[test]
    fn beyond_thirty_days_is_absolute() {
        let expected = u32::try_from(NOW + 2_592_001).unwrap();
        assert_eq!(wire_ttl(after(2_592_001), at(NOW)), expected);
        // A fraction of a second beyond 30 days rounds up into the absolute range too.
        let just_over = Ttl::After(Duration::from_secs(2_592_000) + Duration::from_nanos(1));
        assert_eq!(wire_ttl(just_over, at(NOW)), expected);
        let year = 365 * 24 * 3600;
        assert_eq!(
            wire_ttl(after(year), at(NOW)),
            u32::try_from(NOW + year).unwrap()
        );
    }

    #[test]
    fn absolute_times_are_capped_at_the_latest_memcached_reads() {
        let latest = u64::from(MAX_ABSOLUTE_EXPIRY);
        assert_eq!(latest, 2_147_483_647);
        assert_eq!(
            wire_ttl(after(latest - NOW), at(NOW)),
            MAX_ABSOLUTE_EXPIRY,
            "exactly the latest"
        );
        assert_eq!(
            wire_ttl(after(latest - NOW + 1), at(NOW)),
            MAX_ABSOLUTE_EXPIRY
        );
        assert_eq!(wire_ttl(after(u64::MAX), at(NOW)), MAX_ABSOLUTE_EXPIRY);
        assert_eq!(
            wire_ttl(Ttl::After(Duration::MAX), at(NOW)),
            MAX_ABSOLUTE_EXPIRY
        );
        assert_eq!(
            wire_ttl(after(3_000_000), at(u64::from(u32::MAX))),
            MAX_ABSOLUTE_EXPIRY
        );
    }

    #[test]
    fn a_clock_before_the_epoch_still_gives_an_absolute_time() {
        let before_epoch = UNIX_EPOCH - Duration::from_secs(10);
        assert_eq!(wire_ttl(after(2_592_001), before_epoch), 2_592_001);
    }
}
