//! [`MemcachedConfig`]: timeouts, probing, item size and pooling of a
//! [`MemcachedStore`](crate::MemcachedStore).

use std::time::Duration;

use tandem_core::{DEFAULT_MAX_ITEM_SIZE, MAX_KEY_LEN};

/// Bytes memcached spends on an item besides its key and value. Measured as 59 on
/// memcached 1.6 (64-bit, CAS enabled: item header, CAS, key terminator, the value's
/// CRLF); rounded up so that other builds fit too.
pub const ITEM_OVERHEAD: usize = 128;

/// Read exchanges per node by default; see
/// [`MemcachedConfig::with_max_read_exchanges`].
pub const DEFAULT_MAX_READ_EXCHANGES: usize = 4;

/// Connections per node by default; see [`MemcachedConfig::with_max_connections`].
///
/// 128: twice the default idle pool (64), so that ordinary bursts never wait; far
/// more than a node needs for throughput (an exchange takes well under a millisecond,
/// so 128 connections carry over 100 000 operations a second, more than one
/// memcached serves); and an eighth of memcached's default connection limit
/// (`-c 1024`), so that eight app servers at their limit still leave a default
/// memcached room for its other clients.
pub const DEFAULT_MAX_CONNECTIONS: usize = 128;

/// The smallest item size memcached accepts for `-I`.
const MIN_ITEM_SIZE_MAX: usize = 1024;

/// Settings of a [`MemcachedStore`](crate::MemcachedStore). Start from
/// [`MemcachedConfig::default()`] and change what differs:
///
/// ```
/// use std::time::Duration;
/// use tandem_memcached::MemcachedConfig;
///
/// let config = MemcachedConfig::default()
///     .with_operation_timeout(Duration::from_millis(200))
///     .with_probe_interval(Duration::from_millis(500));
/// assert_eq!(config.operation_timeout(), Duration::from_millis(200));
/// assert_eq!(config.item_size_max(), 1024 * 1024); // memcached's default `-I 1m`
/// assert!(config.max_value_size() < config.item_size_max());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemcachedConfig {
    operation_timeout: Duration,
    probe_interval: Duration,
    item_size_max: usize,
    max_idle_connections: usize,
    max_read_exchanges: usize,
    max_connections: usize,
}

impl Default for MemcachedConfig {
    /// A 500 ms operation timeout, a 1 s probe interval, memcached's default 1 MiB item
    /// size, up to 64 idle and [128](DEFAULT_MAX_CONNECTIONS) connections in all per
    /// node, and 4 read exchanges per node.
    fn default() -> MemcachedConfig {
        MemcachedConfig {
            operation_timeout: Duration::from_millis(500),
            probe_interval: Duration::from_secs(1),
            item_size_max: DEFAULT_MAX_ITEM_SIZE,
            max_idle_connections: 64,
            max_read_exchanges: DEFAULT_MAX_READ_EXCHANGES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

impl MemcachedConfig {
    /// The longest one operation may take, everything included (waiting for a
    /// connection, dialing, sending, receiving). A node that does not answer in time is
    /// marked down. Must not be zero.
    pub fn with_operation_timeout(mut self, timeout: Duration) -> MemcachedConfig {
        self.operation_timeout = timeout;
        self
    }

    /// How often a down node is probed (a no-op round trip) until it answers again.
    /// The first probe comes this long after the node was marked down. Must not be
    /// zero.
    pub fn with_probe_interval(mut self, interval: Duration) -> MemcachedConfig {
        self.probe_interval = interval;
        self
    }

    /// The nodes' item size limit, memcached's `-I` (at least 1024 bytes). Set it to
    /// what the servers run with: values that would not fit are refused before they
    /// are sent, because memcached drops the stored copy of a key when it refuses a
    /// new value for it.
    pub fn with_item_size_max(mut self, bytes: usize) -> MemcachedConfig {
        self.item_size_max = bytes;
        self
    }

    /// How many idle connections each node's pool keeps for reuse. More concurrent
    /// operations open extra connections, closed after use.
    pub fn with_max_idle_connections(mut self, connections: usize) -> MemcachedConfig {
        self.max_idle_connections = connections;
        self
    }

    /// How many read exchanges (gets, get-and-touches, touches) each node runs at
    /// once; at least 1. A read that finds them all busy waits for the next one to
    /// end and goes out with the other reads that waited, pipelined on one
    /// connection in one exchange. Under load this saves most of a read's system
    /// calls in the app and in memcached; at low load every read still goes out at
    /// once. Writes are not affected.
    pub fn with_max_read_exchanges(mut self, exchanges: usize) -> MemcachedConfig {
        self.max_read_exchanges = exchanges;
        self
    }

    /// How many connections each node may have at once (default
    /// [`DEFAULT_MAX_CONNECTIONS`], which explains the number): at most this many
    /// operations on a node hold a connection at a time, a pipelined read exchange
    /// counting as one. Without a bound, a burst of operations beyond the idle pool
    /// (or a slow node, which makes them pile up) dials one connection each, until
    /// memcached's connection limit (`-c`, shared by all its clients) or the app's
    /// ephemeral ports run out, and the node fails for everyone.
    ///
    /// An operation that finds every connection taken waits for one, within its
    /// operation timeout, and is counted in
    /// [`NodeHealth::connection_waits`](crate::NodeHealth::connection_waits). If none
    /// frees up in time it fails with a timeout like an operation the node does not
    /// answer, and the node is marked down: all its connections were busy for a whole
    /// timeout.
    ///
    /// Must be more than [`max_read_exchanges`](Self::with_max_read_exchanges): an
    /// exchange passes its connection on to the reads queued behind it, so under a
    /// steady read load the read exchanges can hold their connections indefinitely,
    /// and the rest must be left for writes.
    pub fn with_max_connections(mut self, connections: usize) -> MemcachedConfig {
        self.max_connections = connections;
        self
    }

    /// See [`with_max_read_exchanges`](Self::with_max_read_exchanges).
    pub fn max_read_exchanges(&self) -> usize {
        self.max_read_exchanges
    }

    /// See [`with_max_connections`](Self::with_max_connections).
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// See [`with_operation_timeout`](Self::with_operation_timeout).
    pub fn operation_timeout(&self) -> Duration {
        self.operation_timeout
    }

    /// See [`with_probe_interval`](Self::with_probe_interval).
    pub fn probe_interval(&self) -> Duration {
        self.probe_interval
    }

    /// See [`with_item_size_max`](Self::with_item_size_max).
    pub fn item_size_max(&self) -> usize {
        self.item_size_max
    }

    /// See [`with_max_idle_connections`](Self::with_max_idle_connections).
    pub fn max_idle_connections(&self) -> usize {
        self.max_idle_connections
    }

    /// The largest value the store sends: the item size limit less the longest key
    /// and memcached's per-item overhead ([`ITEM_OVERHEAD`]), so that every accepted
    /// value fits under any key.
    pub fn max_value_size(&self) -> usize {
        self.item_size_max
            .saturating_sub(MAX_KEY_LEN + ITEM_OVERHEAD)
    }

    /// Why this configuration cannot be used, if it cannot.
    pub(crate) fn problem(&self) -> Option<&'static str> {
        if self.operation_timeout.is_zero() {
            Some("the operation timeout must not be zero")
        } else if self.probe_interval.is_zero() {
            Some("the probe interval must not be zero")
        } else if self.max_read_exchanges == 0 {
            Some("at least one read exchange per node is needed")
        } else if self.max_connections == 0 {
            Some("at least one connection per node is needed")
        } else if self.max_connections <= self.max_read_exchanges {
            Some(
                "the connections per node must be more than the read exchanges, \
                 so that reads cannot hold every connection",
            )
        } else if self.item_size_max < MIN_ITEM_SIZE_MAX {
            Some("the item size limit must be at least 1024 bytes, as for memcached's -I")
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_suit_a_default_memcached() {
        let config = MemcachedConfig::default();
        assert!(config.operation_timeout() >= Duration::from_millis(100));
        assert!(config.operation_timeout() <= Duration::from_secs(1));
        assert_eq!(config.item_size_max(), DEFAULT_MAX_ITEM_SIZE);
        assert_eq!(config.max_connections(), DEFAULT_MAX_CONNECTIONS);
        assert!(config.max_connections() > config.max_read_exchanges());
        assert!(config.max_connections() >= config.max_idle_connections());
        // memcached 1.6 with -I 1m stores values up to 1048267 bytes under a 250-byte key.
        assert!(config.max_value_size() <= 1_048_267);
        assert!(config.max_value_size() > 1_048_000);
        assert_eq!(config.problem(), None);
    }

    #[test]
    fn unusable_settings_are_named() {
        let zero = Duration::ZERO;
        let cases = [
            (
                MemcachedConfig::default().with_operation_timeout(zero),
                "timeout",
            ),
            (
                MemcachedConfig::default().with_probe_interval(zero),
                "probe",
            ),
            (MemcachedConfig::default().with_item_size_max(1023), "1024"),
            (
                MemcachedConfig::default().with_max_read_exchanges(0),
                "read exchange",
            ),
            (
                MemcachedConfig::default().with_max_connections(0),
                "one connection",
            ),
            (
                MemcachedConfig::default()
                    .with_max_read_exchanges(4)
                    .with_max_connections(4),
                "more than the read exchanges",
            ),
        ];
        for (config, expected) in cases {
            let problem = config.problem().unwrap();
            assert!(problem.contains(expected), "{problem}");
        }
        let smallest = MemcachedConfig::default().with_item_size_max(1024);
        assert_eq!(smallest.problem(), None);
        let fewest_connections = MemcachedConfig::default()
            .with_max_read_exchanges(1)
            .with_max_connections(2);
        assert_eq!(fewest_connections.problem(), None);
        assert!(smallest.max_value_size() > 0);
    }
}
