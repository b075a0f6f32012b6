//! [`RedisConfig`]: timeouts, probing, item size and TLS files of a
//! [`RedisStore`](crate::RedisStore).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tandem_core::DEFAULT_MAX_ITEM_SIZE;

use crate::layout::TOKEN_LEN;

/// The largest item size the store accepts as a setting: Redis's own limit on one
/// string (`proto-max-bulk-len`, 512 MiB by default).
pub const MAX_ITEM_SIZE_LIMIT: usize = 512 * 1024 * 1024;

/// Settings of a [`RedisStore`](crate::RedisStore). Start from
/// [`RedisConfig::default()`] and change what differs:
///
/// ```
/// use std::time::Duration;
/// use tandem_redis::RedisConfig;
///
/// let config = RedisConfig::default()
///     .with_operation_timeout(Duration::from_millis(200))
///     .with_ca_file("/etc/tandem/redis-ca.pem");
/// assert_eq!(config.operation_timeout(), Duration::from_millis(200));
/// assert_eq!(config.max_item_size(), 1024 * 1024);
/// assert_eq!(config.max_value_size(), 1024 * 1024 - 8); // the CAS token takes 8 bytes
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    operation_timeout: Duration,
    probe_interval: Duration,
    max_item_size: usize,
    ca_file: Option<PathBuf>,
    client_cert: Option<(PathBuf, PathBuf)>,
    wait_replicas: Option<(u32, Duration)>,
    unreplicated: Unreplicated,
    wait_connections: usize,
}

/// The durable setting: every write waits until this many replicas acknowledged it
/// (`WAIT`), or the timeout passes. See [`RedisConfig::with_wait_replicas`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitReplicas {
    /// Replica acknowledgements each write waits for.
    pub replicas: u32,
    /// How long a write waits for them, on top of the operation timeout.
    pub timeout: Duration,
    /// What a write that was not acknowledged in time reports.
    pub on_shortfall: Unreplicated,
}

/// What a write reports when fewer replicas than asked acknowledged it in time
/// (the master has it; a failover before the replicas catch up may lose it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Unreplicated {
    /// The write fails with
    /// [`StoreError::Unreplicated`](tandem_core::StoreError::Unreplicated): a
    /// non-sticky commit answers 503 and a synchronous backup reports a failed
    /// backup, so that nothing is acknowledged that a failover may lose. The
    /// default.
    #[default]
    Fail,
    /// The write succeeds as without the setting; only the store's counter of
    /// unreplicated writes tells.
    Proceed,
}

impl Default for RedisConfig {
    /// A 500 ms operation timeout, a 1 s probe interval, items of up to 1 MiB (token
    /// included), the system's trusted certificates and no client certificate.
    fn default() -> RedisConfig {
        RedisConfig {
            operation_timeout: Duration::from_millis(500),
            probe_interval: Duration::from_secs(1),
            max_item_size: DEFAULT_MAX_ITEM_SIZE,
            ca_file: None,
            client_cert: None,
            wait_replicas: None,
            unreplicated: Unreplicated::Fail,
            wait_connections: 16,
        }
    }
}

impl RedisConfig {
    /// The longest one operation may take, everything included (connecting when the
    /// node has no connection, sending, the answer). A node that does not answer in
    /// time is marked down. Must not be zero. Also bounds each node's first
    /// connection in [`RedisStore::connect`](crate::RedisStore::connect).
    pub fn with_operation_timeout(mut self, timeout: Duration) -> RedisConfig {
        self.operation_timeout = timeout;
        self
    }

    /// How often a down node is probed (`PING`, on a new connection if need be)
    /// until it answers again. The first probe comes this long after the node was
    /// marked down. Must not be zero.
    pub fn with_probe_interval(mut self, interval: Duration) -> RedisConfig {
        self.probe_interval = interval;
        self
    }

    /// The largest item the store writes, in bytes, its 8-byte CAS token included
    /// (so values may be [`max_value_size`](Self::max_value_size) long). Default
    /// 1 MiB, as memcached's: Redis takes strings of up to 512 MiB, but serves one
    /// command at a time, and a large value holds up every other client while it
    /// is copied. From 9 bytes to [`MAX_ITEM_SIZE_LIMIT`].
    pub fn with_max_item_size(mut self, bytes: usize) -> RedisConfig {
        self.max_item_size = bytes;
        self
    }

    /// Trusts only the certificate authorities in this PEM file for `rediss://`
    /// servers, instead of the system's trusted roots. The server's certificate must
    /// also name the host of its URL. Read at
    /// [`RedisStore::connect`](crate::RedisStore::connect).
    pub fn with_ca_file(mut self, path: impl Into<PathBuf>) -> RedisConfig {
        self.ca_file = Some(path.into());
        self
    }

    /// Presents this client certificate (PEM, with its chain) and private key (PEM)
    /// to `rediss://` servers that ask for one (`tls-auth-clients yes`).
    pub fn with_client_cert(
        mut self,
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> RedisConfig {
        self.client_cert = Some((cert.into(), key.into()));
        self
    }

    /// The durable setting: each write (`set`, `add`, `cas`, conditional writes,
    /// batches, deletes, appends; not touches) waits, after the master applied
    /// it, until `replicas` replicas acknowledged it (`WAIT`), for at most
    /// `timeout` (beyond the operation timeout). A write acknowledged by fewer in
    /// time is counted ([`NodeHealth::unreplicated_writes`](crate::NodeHealth)) and
    /// reported as [`with_unreplicated`](Self::with_unreplicated) says. With
    /// `replicas` 0 writes do not wait (the default).
    ///
    /// What it buys: a Sentinel group or Cluster promotes a replica when its master
    /// dies, and replication is asynchronous, so a write the master acknowledged may
    /// not have reached the replica that takes over. A write that `replicas`
    /// replicas acknowledged survives the failover if one of them is promoted:
    /// with `replicas` equal to the number of replicas of each master, always.
    /// `WAIT` blocks the connection it is sent on, so these writes use connections
    /// of their own ([`with_wait_connections`](Self::with_wait_connections)).
    pub fn with_wait_replicas(mut self, replicas: u32, timeout: Duration) -> RedisConfig {
        self.wait_replicas = (replicas > 0).then_some((replicas, timeout));
        self
    }

    /// What a write reports when fewer replicas than
    /// [`with_wait_replicas`](Self::with_wait_replicas) asks for acknowledged it in
    /// time. Default: [`Unreplicated::Fail`].
    pub fn with_unreplicated(mut self, outcome: Unreplicated) -> RedisConfig {
        self.unreplicated = outcome;
        self
    }

    /// Connections per node that writes waiting for replicas may use at the same
    /// time (each blocks its connection while it waits); further writes wait for
    /// one, within their timeout. Default 16; at least 1.
    pub fn with_wait_connections(mut self, connections: usize) -> RedisConfig {
        self.wait_connections = connections;
        self
    }

    /// See [`with_wait_replicas`](Self::with_wait_replicas); `None` when writes do
    /// not wait.
    pub fn wait_replicas(&self) -> Option<WaitReplicas> {
        self.wait_replicas.map(|(replicas, timeout)| WaitReplicas {
            replicas,
            timeout,
            on_shortfall: self.unreplicated,
        })
    }

    /// See [`with_wait_connections`](Self::with_wait_connections).
    pub fn wait_connections(&self) -> usize {
        self.wait_connections
    }

    /// See [`with_operation_timeout`](Self::with_operation_timeout).
    pub fn operation_timeout(&self) -> Duration {
        self.operation_timeout
    }

    /// See [`with_probe_interval`](Self::with_probe_interval).
    pub fn probe_interval(&self) -> Duration {
        self.probe_interval
    }

    /// See [`with_max_item_size`](Self::with_max_item_size).
    pub fn max_item_size(&self) -> usize {
        self.max_item_size
    }

    /// The largest value the store accepts: the item size less the CAS token.
    pub fn max_value_size(&self) -> usize {
        self.max_item_size.saturating_sub(TOKEN_LEN)
    }

    /// See [`with_ca_file`](Self::with_ca_file).
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
    }

    /// See [`with_client_cert`](Self::with_client_cert): certificate and key files.
    pub fn client_cert(&self) -> Option<(&Path, &Path)> {
        self.client_cert
            .as_ref()
            .map(|(cert, key)| (cert.as_path(), key.as_path()))
    }

    /// Why this configuration cannot be used, if it cannot.
    pub(crate) fn problem(&self) -> Option<&'static str> {
        if self.operation_timeout.is_zero() {
            Some("the operation timeout must not be zero")
        } else if self.probe_interval.is_zero() {
            Some("the probe interval must not be zero")
        } else if self.max_item_size <= TOKEN_LEN {
            Some("the item size limit must be more than the 8-byte CAS token")
        } else if self.max_item_size > MAX_ITEM_SIZE_LIMIT {
            Some("the item size limit must be at most 512 MiB, Redis's limit on a string")
        } else if self
            .wait_replicas
            .is_some_and(|(_, timeout)| timeout.as_millis() == 0)
        {
            Some("the replica wait timeout must be at least 1 ms (`WAIT` with 0 waits forever)")
        } else if self.wait_connections == 0 {
            Some("writes that wait for replicas need at least one connection")
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_usable() {
        let config = RedisConfig::default();
        assert_eq!(config.operation_timeout(), Duration::from_millis(500));
        assert_eq!(config.max_value_size(), DEFAULT_MAX_ITEM_SIZE - 8);
        assert_eq!(config.ca_file(), None);
        assert_eq!(config.client_cert(), None);
        assert_eq!(config.problem(), None);
        assert_eq!(config.wait_replicas(), None);
    }

    #[test]
    fn the_durable_setting_keeps_its_outcome() {
        let wait = RedisConfig::default()
            .with_unreplicated(Unreplicated::Proceed)
            .with_wait_replicas(2, Duration::from_millis(50))
            .with_wait_replicas(1, Duration::from_millis(80));
        assert_eq!(
            wait.wait_replicas(),
            Some(WaitReplicas {
                replicas: 1,
                timeout: Duration::from_millis(80),
                on_shortfall: Unreplicated::Proceed,
            })
        );
        let off = wait.with_wait_replicas(0, Duration::from_millis(80));
        assert_eq!(off.wait_replicas(), None);
        let default = RedisConfig::default().with_wait_replicas(2, Duration::from_millis(50));
        assert_eq!(
            default.wait_replicas().unwrap().on_shortfall,
            Unreplicated::Fail
        );
    }

    #[test]
    fn unusable_settings_are_named() {
        let cases = [
            (
                RedisConfig::default().with_operation_timeout(Duration::ZERO),
                "timeout",
            ),
            (
                RedisConfig::default().with_probe_interval(Duration::ZERO),
                "probe",
            ),
            (RedisConfig::default().with_max_item_size(8), "token"),
            (
                RedisConfig::default().with_max_item_size(MAX_ITEM_SIZE_LIMIT + 1),
                "512 MiB",
            ),
        ];
        for (config, expected) in cases {
            let problem = config.problem().unwrap();
            assert!(problem.contains(expected), "{problem}");
        }
        let smallest = RedisConfig::default().with_max_item_size(9);
        assert_eq!((smallest.problem(), smallest.max_value_size()), (None, 1));
        let zero_wait = RedisConfig::default().with_wait_replicas(1, Duration::from_micros(10));
        assert!(zero_wait.problem().unwrap().contains("WAIT"));
        assert!(
            RedisConfig::default()
                .with_wait_connections(0)
                .problem()
                .unwrap()
                .contains("connection")
        );
        let with_files = RedisConfig::default().with_client_cert("c.pem", "k.pem");
        assert_eq!(
            with_files.client_cert(),
            Some((Path::new("c.pem"), Path::new("k.pem")))
        );
    }
}
