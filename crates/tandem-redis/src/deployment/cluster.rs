//! A Redis Cluster as one node: redis-rs's cluster connection discovers the
//! cluster from the URL's seeds, routes each command by its key's hash slot, and
//! follows `MOVED` and `ASK` redirections, resharding and failovers by itself; the
//! store only bounds each operation by its timeout.
//!
//! The cluster's epoch moves on with each failover: when a master the store saw
//! is failing or a replica (`CLUSTER NODES`) and the cluster's configuration
//! epoch (`cluster_current_epoch`, `CLUSTER INFO`, which an election raises) is
//! higher than when all of them were last seen masters. A resharding raises the configuration epoch too (the
//! importing master takes a new one), but demotes no master, so it does not move
//! the epoch: it loses no write. The highest configuration epoch seen counts, so
//! that nodes that have not yet heard of the latest one do not move it back and
//! forth; a master counts as demoted only once, so that views of nodes that lag
//! do not either.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{
    ConnectionAddr, ErrorKind, IntoConnectionInfo, ProtocolVersion, RedisError, RedisResult,
};
use tokio::sync::Semaphore;

use super::{Connection, DeploymentSettings, Epoch, Exclusive, Link};
use crate::spec::RedisUrl;

/// The least time a connection to one cluster node may take.
const MIN_CONNECTION_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(20);

/// A cluster: one shared cluster connection, opened on demand.
pub(crate) struct Cluster {
    client: ClusterClient,
    /// The shared connection and its generation (see [`discard`](Self::discard)).
    current: Mutex<Option<(u64, ClusterConnection)>>,
    dialing: tokio::sync::Mutex<()>,
    opened: AtomicU64,
    pub(super) epoch: Epoch,
    /// The highest `cluster_current_epoch` seen.
    highest_epoch: AtomicU64,
    /// The masters seen (by id) that were not demoted since, and the highest
    /// configuration epoch when all of them were last seen masters or the epoch
    /// last moved on.
    masters: Mutex<(HashSet<String>, u64)>,
    idle: Mutex<Vec<ClusterConnection>>,
    exclusive_slots: Arc<Semaphore>,
}

impl Cluster {
    pub(super) fn new(url: &RedisUrl, settings: &DeploymentSettings) -> RedisResult<Cluster> {
        let seeds = url
            .socket_addresses()
            .into_iter()
            .map(|(host, port)| {
                let address = if url.tls() {
                    ConnectionAddr::TcpTls {
                        host,
                        port,
                        insecure: false,
                        tls_params: None,
                    }
                } else {
                    ConnectionAddr::Tcp(host, port)
                };
                address.into_connection_info()
            })
            .collect::<RedisResult<Vec<_>>>()?;
        let timeout = settings.operation_timeout;
        // Retries are for redirections and a cluster that reshuffles; they wait a
        // few milliseconds, not the client's default of more than a second, since
        // the whole operation has one timeout.
        let mut builder = ClusterClientBuilder::new(seeds)
            .use_protocol(ProtocolVersion::RESP3)
            // A new cluster connection connects to every seed and waits for the
            // slowest: a hung one would cost the whole operation timeout, and a
            // new connection could never be opened within it (see `discard`).
            .connection_timeout((timeout / 3).max(MIN_CONNECTION_TIMEOUT))
            // `WAIT` answers after its own timeout: a write that waits for its
            // replicas must not be timed out (and sent again) by the client.
            .response_timeout(timeout + settings.wait_timeout.unwrap_or_default())
            .retries(8)
            .min_retry_wait(5)
            .max_retry_wait(timeout.as_millis().try_into().unwrap_or(u64::MAX).max(10));
        if let Some(username) = url.username() {
            builder = builder.username(username);
        }
        if let Some(password) = url.password() {
            builder = builder.password(password);
        }
        if url.tls() {
            builder = with_tls(builder, settings)?;
        }
        Ok(Cluster {
            client: builder.build()?,
            current: Mutex::new(None),
            dialing: tokio::sync::Mutex::new(()),
            opened: AtomicU64::new(0),
            epoch: Epoch::default(),
            highest_epoch: AtomicU64::new(0),
            masters: Mutex::new((HashSet::new(), 0)),
            idle: Mutex::new(Vec::new()),
            exclusive_slots: Arc::new(Semaphore::new(settings.exclusive_connections.max(1))),
        })
    }

    pub(super) fn opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    pub(super) async fn link(&self) -> RedisResult<Link> {
        if let Some((generation, connection)) = self.current.lock().clone() {
            return Ok(link(generation, connection));
        }
        let _dialing = self.dialing.lock().await;
        if let Some((generation, connection)) = self.current.lock().clone() {
            return Ok(link(generation, connection));
        }
        let mut connection = self.client.get_async_connection().await?;
        let generation = self.opened.fetch_add(1, Ordering::Relaxed) + 1;
        // The baseline, before the first operation.
        let _ = self.look(&mut connection).await;
        *self.current.lock() = Some((generation, connection.clone()));
        Ok(link(generation, connection))
    }

    /// Forgets the shared connection after an operation on it failed the node, so
    /// that the next one (the probe's) opens a new one, which reads the slots
    /// afresh. The cluster client follows redirections and reconnects to a node
    /// that closed its connection by itself, but a master that hangs keeps its
    /// slots in the client's map until something answers `MOVED`: after a failover
    /// nothing does, as every operation on those slots goes to the hung master and
    /// times out.
    pub(super) fn discard(&self, generation: u64) {
        let mut current = self.current.lock();
        if current
            .as_ref()
            .is_some_and(|(open, _)| *open == generation)
        {
            *current = None;
        }
    }

    pub(super) async fn exclusive(&self) -> RedisResult<Exclusive> {
        let permit = Arc::clone(&self.exclusive_slots)
            .acquire_owned()
            .await
            .map_err(|_| RedisError::from((ErrorKind::Io, "the store is closing")))?;
        let idle = self.idle.lock().pop();
        let connection = match idle {
            Some(connection) => connection,
            None => {
                let connection = self.client.get_async_connection().await?;
                self.opened.fetch_add(1, Ordering::Relaxed);
                connection
            }
        };
        Ok(Exclusive {
            generation: 0,
            connection: Connection::Cluster(connection),
            _permit: permit,
        })
    }

    pub(super) fn give_back(&self, exclusive: Exclusive) {
        let Connection::Cluster(connection) = exclusive.connection else {
            return;
        };
        let mut idle = self.idle.lock();
        // Every one of them was opened under a permit: never more than
        // `with_wait_connections` are kept, and all are, so that a busy store does
        // not open a connection per durable write.
        idle.push(connection);
    }

    /// Looks at the cluster's masters and configuration epoch (see the module's
    /// documentation).
    pub(super) async fn watch(&self) -> RedisResult<()> {
        let Link { connection, .. } = self.link().await?;
        let Connection::Cluster(mut connection) = connection else {
            return Ok(());
        };
        self.look(&mut connection).await
    }

    async fn look(&self, connection: &mut ClusterConnection) -> RedisResult<()> {
        let epoch = current_epoch(connection).await?;
        let highest = self
            .highest_epoch
            .fetch_max(epoch, Ordering::AcqRel)
            .max(epoch);
        let nodes = cluster_nodes(connection).await?;
        self.observe(highest, &nodes);
        Ok(())
    }

    /// Records a view of the cluster's nodes (see [`master_roles`]) with the
    /// highest configuration epoch seen.
    fn observe(&self, highest: u64, nodes: &[(String, bool)]) {
        let mut masters = self.masters.lock();
        let (known, moved_at) = &mut *masters;
        let demoted: Vec<&String> = nodes
            .iter()
            .filter(|(id, master)| !master && known.contains(id))
            .map(|(id, _)| id)
            .collect();
        if demoted.is_empty() {
            // Every master seen is still one: a higher configuration epoch is a
            // resharding (or the first look).
            *moved_at = highest;
        } else if highest > *moved_at {
            tracing::info!(masters = ?demoted, epoch = highest, "a cluster master failed over");
            for id in demoted {
                known.remove(id);
            }
            *moved_at = highest;
            self.epoch.bump();
        }
        known.extend(
            nodes
                .iter()
                .filter(|(_, master)| *master)
                .map(|(id, _)| id.clone()),
        );
    }
}

fn link(generation: u64, connection: ClusterConnection) -> Link {
    Link {
        generation,
        connection: Connection::Cluster(connection),
    }
}

/// `CLUSTER NODES` of any node: each node's id and whether it is a master that
/// is not failing.
async fn cluster_nodes(connection: &mut ClusterConnection) -> RedisResult<Vec<(String, bool)>> {
    let answer = connection
        .route_command(
            redis::cmd("CLUSTER").arg("NODES").clone(),
            RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
        )
        .await?;
    let nodes: String = redis::from_redis_value(answer)?;
    Ok(master_roles(&nodes))
}

/// See [`cluster_nodes`]: `<id> <address> <flags> ...` per line.
fn master_roles(nodes: &str) -> Vec<(String, bool)> {
    nodes
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let id = fields.next()?;
            let flags: Vec<&str> = fields.nth(1)?.split(',').collect();
            let master = flags.contains(&"master") && !flags.contains(&"fail");
            Some((id.to_owned(), master))
        })
        .collect()
}

/// `cluster_current_epoch` from `CLUSTER INFO` of any node.
async fn current_epoch(connection: &mut ClusterConnection) -> RedisResult<u64> {
    let answer = connection
        .route_command(
            redis::cmd("CLUSTER").arg("INFO").clone(),
            RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
        )
        .await?;
    let info: String = redis::from_redis_value(answer)?;
    info.lines()
        .find_map(|line| line.trim().strip_prefix("cluster_current_epoch:"))
        .and_then(|epoch| epoch.parse().ok())
        .ok_or_else(|| {
            RedisError::from((
                ErrorKind::UnexpectedReturnType,
                "CLUSTER INFO without cluster_current_epoch",
            ))
        })
}

#[cfg(feature = "tls")]
fn with_tls(
    builder: ClusterClientBuilder,
    settings: &DeploymentSettings,
) -> RedisResult<ClusterClientBuilder> {
    let builder = builder.tls(redis::TlsMode::Secure);
    Ok(match super::certificates(&settings.tls) {
        Some(certificates) => builder.certs(certificates),
        None => builder,
    })
}

#[cfg(not(feature = "tls"))]
fn with_tls(
    _builder: ClusterClientBuilder,
    _settings: &DeploymentSettings,
) -> RedisResult<ClusterClientBuilder> {
    Err(RedisError::from((
        ErrorKind::InvalidClientConfig,
        "TLS (`rediss+cluster://`) needs tandem-redis's `tls` feature",
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> Cluster {
        let url: RedisUrl = "redis+cluster://127.0.0.1:7000".parse().unwrap();
        let settings = DeploymentSettings {
            tls: Default::default(),
            operation_timeout: std::time::Duration::from_millis(500),
            exclusive_connections: 1,
            wait_timeout: None,
        };
        Cluster::new(&url, &settings).unwrap()
    }

    fn view(nodes: &[(&str, bool)]) -> Vec<(String, bool)> {
        nodes
            .iter()
            .map(|(id, master)| ((*id).to_owned(), *master))
            .collect()
    }

    #[test]
    fn the_master_roles_come_from_the_flags() {
        let nodes = "a 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460\n\
                     b 127.0.0.1:7001@17001 master,fail - 0 0 2 disconnected\n\
                     c 127.0.0.1:7002@17002 slave a 0 0 1 connected\n";
        assert_eq!(
            master_roles(nodes),
            view(&[("a", true), ("b", false), ("c", false)])
        );
    }

    #[test]
    fn only_a_failover_moves_the_epoch() {
        let cluster = cluster();
        cluster.observe(3, &view(&[("a", true), ("b", true), ("c", false)]));
        assert_eq!(cluster.epoch.current(), 0, "the baseline");
        // A resharding: a higher configuration epoch, the same masters.
        cluster.observe(4, &view(&[("a", true), ("b", true), ("c", false)]));
        assert_eq!(cluster.epoch.current(), 0);
        // b fails; its replica c is elected (epoch 5).
        cluster.observe(4, &view(&[("a", true), ("b", false), ("c", false)]));
        assert_eq!(cluster.epoch.current(), 0, "failing, not yet replaced");
        cluster.observe(5, &view(&[("a", true), ("b", false), ("c", true)]));
        assert_eq!(cluster.epoch.current(), 1);
        // A node that lags still shows b as a master, then as failing.
        cluster.observe(5, &view(&[("a", true), ("b", true), ("c", false)]));
        cluster.observe(5, &view(&[("a", true), ("b", false), ("c", true)]));
        assert_eq!(cluster.epoch.current(), 1);
        // c fails over back to b.
        cluster.observe(6, &view(&[("a", true), ("b", true), ("c", false)]));
        assert_eq!(cluster.epoch.current(), 2);
    }
}
