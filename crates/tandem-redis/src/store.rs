//! [`RedisStore`]: the [`RemoteStore`](tandem_core::RemoteStore) over Redis and
//! Valkey deployments. The trait's operations are in `store/operations.rs`.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use redis::RedisResult;
use tandem_core::{NodeId, StoreError};

use crate::config::RedisConfig;
use crate::deployment::{Connection, Deployment, DeploymentSettings, Link, TlsMaterial};
use crate::errors::{ConnectError, Failure, FirstContact, classify, first_contact, timed_out};
use crate::health::{NodeHealth, node_health};
use crate::scripts::Scripts;
use crate::spec::{RedisSpec, RedisUrl};
use tandem_core::NodeHealthState;

mod operations;
mod writes;

/// A [`RemoteStore`](tandem_core::RemoteStore) over Redis (6.2 or later) and Valkey
/// (7.2 or later) servers, each a node of its own with one multiplexed connection
/// and a health state.
///
/// Every operation goes to exactly the node it names and is bounded by one
/// [operation timeout](RedisConfig::with_operation_timeout), connecting included.
/// A node that fails an operation (no answer in time, a connection refused or
/// broken, an unparseable answer, or an answer that says it cannot serve:
/// `READONLY`, `MASTERDOWN`, `LOADING`, credentials no longer accepted) is marked
/// down: operations on it then fail at once with [`StoreError::NodeDown`] without
/// touching the network, while a background task probes it (`PING`, on a new
/// connection) every [probe interval](RedisConfig::with_probe_interval) and marks it
/// up as soon as it answers. A refusal of one operation by a working node (`OOM`
/// under `maxmemory-policy noeviction`, `WRONGTYPE` for foreign data under a key,
/// `NOPERM` from an ACL) is reported as [`StoreError::Server`] and leaves the node
/// up. [`health`](Self::health) reports all of it per node.
///
/// Items are stored as the value followed by an 8-byte CAS token that every write
/// renews, so reads, touches and plain writes are single commands (`GET`, `GETEX`,
/// `PEXPIRE`, `SET ... PX`), `add` is `SET ... NX`, and only `cas`, conditional
/// writes, `delete_if` and `append` run a short script. `set_many` and `write_many`
/// send all their items in one pipeline. TTLs are sent in milliseconds
/// ([`wire_ttl_millis`](crate::wire_ttl_millis)).
///
/// The background probes run on the Tokio runtime of the operation (or of
/// [`connect`](Self::connect)) that found the node down, and end when the store is
/// dropped.
///
/// ```no_run
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// use tandem_core::{NodeId, RemoteStore, StoreKey, Ttl};
/// use tandem_redis::{RedisConfig, RedisSpec, RedisStore};
///
/// let spec = RedisSpec::parse("r1=redis://127.0.0.1:6379,r2=redis://127.0.0.1:6380")?;
/// let store = RedisStore::connect(&spec, RedisConfig::default()).await?;
/// let (r1, key) = (NodeId::new("r1")?, StoreKey::new("session:abc")?);
///
/// store.set(&r1, &key, b"bytes", Ttl::Never).await?;
/// let item = store.get(&r1, &key).await?.expect("just written");
/// assert_eq!(item.value, b"bytes");
/// for node in store.health() {
///     println!("{} at {}: up={}", node.id, node.address, node.up);
/// }
/// # Ok(())
/// # }
/// ```
pub struct RedisStore {
    shared: Arc<Shared>,
}

/// What the store and its probe tasks share. The probes hold it weakly, so dropping
/// the store ends them.
struct Shared {
    nodes: Vec<Node>,
    config: RedisConfig,
    scripts: Scripts,
}

struct Node {
    id: NodeId,
    url: RedisUrl,
    deployment: Deployment,
    health: NodeHealthState,
    /// Writes that waited for replicas (the durable setting).
    waited_writes: AtomicU64,
    /// Of those, the ones fewer replicas acknowledged in time than asked.
    unreplicated_writes: AtomicU64,
}

impl RedisStore {
    /// Creates a store for the nodes of `spec` and contacts each node once, all at
    /// the same time, each within the operation timeout: a node that answers is
    /// up; one that is down, refuses connections or does not answer in time starts
    /// down and is probed in the background like a node that failed later. Settings
    /// that can never work fail here, naming the node: wrong credentials, a TLS
    /// handshake that fails (an untrusted certificate, say), a database the server
    /// does not have, unreadable certificate files.
    pub async fn connect(
        spec: &RedisSpec,
        config: RedisConfig,
    ) -> Result<RedisStore, ConnectError> {
        if let Some(reason) = config.problem() {
            return Err(ConnectError::InvalidConfig { reason });
        }
        let uses_tls = spec.nodes().iter().any(|node| node.url().tls());
        if !uses_tls && (config.ca_file().is_some() || config.client_cert().is_some()) {
            return Err(ConnectError::InvalidConfig {
                reason: "a CA file or client certificate is set, but no node uses TLS \
                         (`rediss://` or `valkeys://`)",
            });
        }
        let settings = DeploymentSettings {
            tls: tls_material(&config, uses_tls)?,
            operation_timeout: config.operation_timeout(),
            exclusive_connections: config.wait_connections(),
            wait_timeout: config.wait_replicas().map(|wait| wait.timeout),
        };
        let mut nodes = Vec::with_capacity(spec.nodes().len());
        for node in spec.nodes() {
            let (id, url) = (node.id().clone(), node.url().clone());
            if url.tls() && !cfg!(feature = "tls") {
                return Err(ConnectError::TlsUnsupported {
                    node: id,
                    url: url.to_string(),
                });
            }
            let deployment =
                Deployment::new(&url, &settings).map_err(|error| ConnectError::TlsFile {
                    what: "certificates",
                    path: config
                        .ca_file()
                        .or(config.client_cert().map(|(cert, _)| cert))
                        .map_or_else(String::new, |path| path.display().to_string()),
                    message: error.to_string(),
                })?;
            nodes.push(Node {
                id,
                url,
                deployment,
                health: NodeHealthState::new(),
                waited_writes: AtomicU64::new(0),
                unreplicated_writes: AtomicU64::new(0),
            });
        }
        let shared = Arc::new(Shared {
            nodes,
            config,
            scripts: Scripts::new(),
        });
        for (index, node) in shared.nodes.iter().enumerate() {
            if node.deployment.is_watched() {
                spawn_watch(&shared, index);
                spawn_notices(&shared, index);
            }
        }
        let contacts = shared.nodes.iter().map(|node| shared.first_contact(node));
        let outcomes = futures_util::future::join_all(contacts).await;
        for (index, outcome) in outcomes.into_iter().enumerate() {
            let node = &shared.nodes[index];
            let (id, url) = (node.id.clone(), node.url.to_string());
            match outcome {
                Ok(()) => {}
                Err(FirstContact::Down) => spawn_probe(&shared, index),
                Err(FirstContact::Authentication(message)) => {
                    return Err(ConnectError::Authentication {
                        node: id,
                        url,
                        message,
                    });
                }
                Err(FirstContact::Tls(message)) => {
                    return Err(ConnectError::Tls {
                        node: id,
                        url,
                        message,
                    });
                }
                Err(FirstContact::Rejected(message)) => {
                    return Err(ConnectError::Rejected {
                        node: id,
                        url,
                        message,
                    });
                }
            }
        }
        Ok(RedisStore { shared })
    }

    /// The health of every node, in configuration order.
    pub fn health(&self) -> Vec<NodeHealth> {
        self.shared.nodes.iter().map(Node::health).collect()
    }

    /// The health of one node; `None` if the store has no such node.
    pub fn node_health(&self, node: &NodeId) -> Option<NodeHealth> {
        self.shared.node(node).ok().map(|(_, node)| node.health())
    }

    /// Refuses a value that is over the item size limit, before anything is sent.
    fn check_size(&self, size: usize) -> Result<(), StoreError> {
        let limit = self.shared.config.max_value_size();
        if size > limit {
            return Err(StoreError::TooLarge { size, limit });
        }
        Ok(())
    }

    /// Runs `operation` on `node`'s shared connection within the operation timeout,
    /// and keeps the node's health: refused at once if the node is down (or the
    /// value over the limit), marked down (and probed) if it fails the operation.
    async fn call<T, F, Fut>(
        &self,
        node: &NodeId,
        value_size: Option<usize>,
        operation: F,
    ) -> Result<T, StoreError>
    where
        F: FnOnce(Connection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        if let Some(size) = value_size {
            self.check_size(size)?;
        }
        self.run(node, None, operation).await
    }

    /// As [`call`](Self::call), on a connection of the operation's own (for
    /// commands that block it, as `WAIT`), given `wait` more than the operation
    /// timeout.
    async fn call_exclusive<T, F, Fut>(
        &self,
        node: &NodeId,
        wait: Duration,
        operation: F,
    ) -> Result<T, StoreError>
    where
        F: FnOnce(Connection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        self.run(node, Some(wait), operation).await
    }

    async fn run<T, F, Fut>(
        &self,
        node: &NodeId,
        exclusive: Option<Duration>,
        operation: F,
    ) -> Result<T, StoreError>
    where
        F: FnOnce(Connection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let shared = &self.shared;
        let (index, node) = shared.node(node)?;
        if !node.health.is_up() {
            node.health.count_refused();
            return Err(StoreError::NodeDown {
                node: node.id.clone(),
            });
        }
        node.health.count_operation();
        let timeout = shared.config.operation_timeout() + exclusive.unwrap_or_default();
        let started = Instant::now();
        let mut used: Option<Link> = None;
        let attempt = async {
            match exclusive {
                None => {
                    let link = node.deployment.link().await?;
                    let connection = link.connection.clone();
                    used = Some(link);
                    operation(connection).await
                }
                Some(_) => {
                    let borrowed = node.deployment.exclusive().await?;
                    used = Some(borrowed.link());
                    let answer = operation(borrowed.connection.clone()).await;
                    if answer.is_ok() {
                        node.deployment.give_back(borrowed);
                    }
                    answer
                }
            }
        };
        let failure = match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(value)) => {
                node.health.record_latency(started.elapsed());
                return Ok(value);
            }
            Ok(Err(error)) => classify(&node.id, &error, timeout),
            Err(_elapsed) => timed_out(&node.id, timeout),
        };
        self.shared.fail(index, used.as_ref(), failure)
    }

    /// The epoch of `node` (see
    /// [`RemoteStore::node_epoch`](tandem_core::RemoteStore)): it changes when the
    /// node may have lost or rolled back writes it acknowledged, a failover to
    /// another master or a restarted server. `None` for an unknown node.
    pub fn epoch(&self, node: &NodeId) -> Option<u64> {
        self.shared
            .node(node)
            .ok()
            .map(|(_, node)| node.deployment.epoch())
    }
}

impl Shared {
    fn node(&self, id: &NodeId) -> Result<(usize, &Node), StoreError> {
        self.nodes
            .iter()
            .enumerate()
            .find(|(_, node)| node.id == *id)
            .ok_or_else(|| StoreError::UnknownNode {
                node: id.to_string(),
            })
    }

    /// Records a failed operation on node `index`; a node failure discards the
    /// link it used and marks the node down (starting its probe).
    fn fail<T>(
        self: &Arc<Self>,
        index: usize,
        link: Option<&Link>,
        failure: Failure,
    ) -> Result<T, StoreError> {
        let node = &self.nodes[index];
        if failure.node_failed {
            if let Some(link) = link {
                node.deployment.discard(link);
            }
            if node.health.mark_down() {
                tracing::warn!(node = %node.id, url = %node.url, error = %failure.detail, "Redis node marked down");
                spawn_probe(self, index);
            }
        }
        node.health.count_failure(failure.detail);
        Err(failure.error)
    }

    /// Connects to `node` and pings it, within the operation timeout. On failure
    /// the node is marked down (for any failure worth waiting for) and the failure
    /// sorted.
    async fn first_contact(&self, node: &Node) -> Result<(), FirstContact> {
        let timeout = self.config.operation_timeout();
        let outcome = tokio::time::timeout(timeout, ping(&node.deployment)).await;
        let detail = match outcome {
            Ok(Ok(())) => {
                // A server too old for the commands the store sends is a setting
                // that can never work: refused now, not at the first session read.
                return match tokio::time::timeout(timeout, too_old(&node.deployment)).await {
                    Ok(Some(message)) => Err(FirstContact::Rejected(message)),
                    Ok(None) | Err(_) => Ok(()),
                };
            }
            Ok(Err(error)) => match first_contact(&error, node.url.tls()) {
                FirstContact::Down => crate::errors::describe(&error),
                fatal => return Err(fatal),
            },
            Err(_elapsed) => timed_out(&node.id, timeout).detail,
        };
        node.health.mark_down();
        node.health
            .remember_error(format!("first connection failed: {detail}"));
        tracing::warn!(node = %node.id, url = %node.url, error = %detail, "Redis node is down at startup; probing it");
        Err(FirstContact::Down)
    }

    /// One probe of a down node: a `PING` (on a new connection if it has none)
    /// within the operation timeout. Returns whether the node answered (and is
    /// marked up).
    async fn probe(&self, index: usize) -> bool {
        let node = &self.nodes[index];
        let timeout = self.config.operation_timeout();
        let detail = match tokio::time::timeout(timeout, ping(&node.deployment)).await {
            Ok(Ok(())) => {
                if node.health.mark_up() {
                    tracing::info!(node = %node.id, url = %node.url, "Redis node answers again; marked up");
                }
                return true;
            }
            Ok(Err(error)) => classify(&node.id, &error, timeout).detail,
            Err(_elapsed) => timed_out(&node.id, timeout).detail,
        };
        node.health
            .remember_error(format!("probe failed: {detail}"));
        false
    }
}

/// The oldest Redis version the store works with: `GETEX` (non-sticky reads that
/// slide the expiry) came with 6.2. Valkey reports a compatible `redis_version`.
const OLDEST_VERSION: (u32, u32) = (6, 2);

/// Why the server is too old for the store, if it is: from `INFO server`. A server
/// that does not answer it (an ACL user without `INFO`) is not checked.
async fn too_old(deployment: &Deployment) -> Option<String> {
    let link = deployment.link().await.ok()?;
    let mut connection = link.connection.clone();
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut connection)
        .await
        .ok()?;
    let version = server_version(&info)?;
    (version < OLDEST_VERSION).then(|| {
        format!(
            "Redis {}.{} or later is needed (GETEX); this server is {}.{}",
            OLDEST_VERSION.0, OLDEST_VERSION.1, version.0, version.1
        )
    })
}

/// The major and minor version in an `INFO server` answer (`redis_version:7.0.15`).
fn server_version(info: &str) -> Option<(u32, u32)> {
    let version = info
        .lines()
        .find_map(|line| line.trim().strip_prefix("redis_version:"))?;
    let mut parts = version.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// A `PING` on the deployment's connection; a failed connection is discarded, so
/// that the next attempt dials afresh.
async fn ping(deployment: &Deployment) -> RedisResult<()> {
    let link = deployment.link().await?;
    let mut connection = link.connection.clone();
    let answer = redis::cmd("PING").query_async::<()>(&mut connection).await;
    if answer.is_err() {
        deployment.discard(&link);
    }
    answer
}

impl Node {
    fn health(&self) -> NodeHealth {
        let mut health = node_health(
            &self.health,
            &self.id,
            &self.url.to_string(),
            self.deployment.connections_opened(),
        );
        health.epoch = self.deployment.epoch();
        health.waited_writes = self.waited_writes.load(Ordering::Relaxed);
        health.unreplicated_writes = self.unreplicated_writes.load(Ordering::Relaxed);
        health
    }

    /// Counts a write that waited for replicas, and whether too few acknowledged it.
    fn count_waited(&self, unreplicated: bool) {
        self.waited_writes.fetch_add(1, Ordering::Relaxed);
        if unreplicated {
            self.unreplicated_writes.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(node = %self.id, "a write was not acknowledged by enough replicas in time");
        }
    }
}

/// Looks at node `index`'s topology every probe interval (see
/// [`Deployment::watch`]) until the store is gone.
fn spawn_watch(shared: &Arc<Shared>, index: usize) {
    let store: Weak<Shared> = Arc::downgrade(shared);
    let interval = shared.config.probe_interval();
    let timeout = shared.config.operation_timeout();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(interval).await;
            let Some(shared) = store.upgrade() else {
                return;
            };
            let node = &shared.nodes[index];
            match tokio::time::timeout(timeout, node.deployment.watch()).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::debug!(node = %node.id, error = %crate::errors::describe(&error), "watch failed");
                }
                Err(_elapsed) => tracing::debug!(node = %node.id, "watch timed out"),
            }
        }
    });
}

/// Follows node `index`'s announcements of a new master (a Sentinel group's
/// `+switch-master`, see [`Deployment::subscribe`]) until the store is gone: a link
/// to the former master is discarded at once, and a node that is down is probed at
/// once, rather than at the next probe interval. The subscription is checked with a
/// `PING` every [`NOTICE_CHECK`] (or probe interval, if shorter), and made again on
/// another sentinel when it fails; meanwhile the watch's polling still follows
/// failovers. Ends at once for a deployment that announces nothing.
fn spawn_notices(shared: &Arc<Shared>, index: usize) {
    use futures_util::StreamExt;
    let store: Weak<Shared> = Arc::downgrade(shared);
    let check = shared.config.probe_interval().min(NOTICE_CHECK);
    let timeout = shared.config.operation_timeout();
    tokio::spawn(async move {
        loop {
            let subscribed = {
                let Some(shared) = store.upgrade() else {
                    return;
                };
                let subscribe = shared.nodes[index].deployment.subscribe();
                tokio::time::timeout(timeout, subscribe).await
            };
            let mut notices = match subscribed {
                Ok(None) => return,
                Ok(Some(Ok(notices))) => notices,
                Ok(Some(Err(_))) | Err(_) => {
                    tokio::time::sleep(check).await;
                    continue;
                }
            };
            loop {
                let next = tokio::time::timeout(check, notices.messages.next()).await;
                let Some(shared) = store.upgrade() else {
                    return;
                };
                let node = &shared.nodes[index];
                match next {
                    Ok(Some(message)) => {
                        if node.deployment.follow(&message) && !node.health.is_up() {
                            shared.probe(index).await;
                        }
                    }
                    // The sentinel closed the connection.
                    Ok(None) => break,
                    // Quiet: still there?
                    Err(_elapsed) => {
                        let ping = tokio::time::timeout(timeout, notices.ping());
                        if !matches!(ping.await, Ok(Ok(_))) {
                            break;
                        }
                    }
                }
            }
        }
    });
}

/// How often a quiet subscription to a deployment's announcements is checked at
/// most (see [`spawn_notices`]).
const NOTICE_CHECK: Duration = Duration::from_secs(1);

/// Probes node `index` every probe interval until it answers or the store is gone.
/// Started once per down transition, so a node has at most one probe task.
fn spawn_probe(shared: &Arc<Shared>, index: usize) {
    let store: Weak<Shared> = Arc::downgrade(shared);
    let interval = shared.config.probe_interval();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(interval).await;
            let Some(shared) = store.upgrade() else {
                return;
            };
            if shared.probe(index).await {
                return;
            }
        }
    });
}

/// Reads the CA and client certificate files, if TLS is used and they are set.
fn tls_material(config: &RedisConfig, uses_tls: bool) -> Result<TlsMaterial, ConnectError> {
    if !uses_tls {
        return Ok(TlsMaterial::default());
    }
    #[cfg(feature = "tls")]
    install_crypto_provider();
    let read = |what: &'static str, path: &std::path::Path| {
        std::fs::read(path).map_err(|error| ConnectError::TlsFile {
            what,
            path: path.display().to_string(),
            message: error.to_string(),
        })
    };
    let root_cert = config
        .ca_file()
        .map(|path| read("CA file", path))
        .transpose()?;
    let client = match config.client_cert() {
        Some((cert, key)) => Some((read("client certificate", cert)?, read("client key", key)?)),
        None => None,
    };
    Ok(TlsMaterial { root_cert, client })
}

/// rustls needs a process-wide crypto provider; unless the application chose one,
/// this crate's (ring) is installed. rustls 0.23.48 deprecates ring's provider for
/// its lack of post-quantum key exchange; ring is kept because it builds without
/// cmake or a long C build (aws-lc-rs needs both). An application that wants
/// aws-lc-rs installs its provider before connecting, and it is used instead.
#[cfg(feature = "tls")]
#[allow(deprecated)]
fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race with another installer is fine: a provider is installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("nodes", &self.health())
            .field("config", &self.shared.config)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_version_comes_from_info() {
        let info = "# Server\r\nredis_version:7.0.15\r\nredis_git_sha1:00000000\r\n";
        assert_eq!(server_version(info), Some((7, 0)));
        let valkey = "# Server\r\nredis_version:7.2.4\r\nvalkey_version:8.0.1\r\n";
        assert_eq!(server_version(valkey), Some((7, 2)));
        assert_eq!(server_version("redis_version:6.0.16\r\n"), Some((6, 0)));
        assert!(server_version("redis_version:6.0.16\r\n").unwrap() < OLDEST_VERSION);
        assert_eq!(OLDEST_VERSION, (6, 2), "GETEX came with Redis 6.2");
        assert_eq!(server_version("no version here"), None);
        assert_eq!(server_version("redis_version:x.y"), None);
    }
}
