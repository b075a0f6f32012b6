//! A Redis Cluster as one node: redis-rs's cluster connection discovers the
//! cluster from the URL's seeds, routes each command by its key's hash slot, and
//! follows `MOVED` and `ASK` redirections, resharding and failovers by itself; the
//! store only bounds each operation by its timeout.
//!
//! The cluster's epoch follows `cluster_current_epoch` (`CLUSTER INFO`), which every
//! failover raises: the highest value seen so far, so that nodes that have not yet
//! heard of the latest one do not move it back and forth.

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

/// Idle exclusive cluster connections kept for the next caller (each holds a
/// connection to every master).
const IDLE_EXCLUSIVE: usize = 4;

/// A cluster: one shared cluster connection, opened on demand.
pub(crate) struct Cluster {
    client: ClusterClient,
    current: Mutex<Option<ClusterConnection>>,
    dialing: tokio::sync::Mutex<()>,
    opened: AtomicU64,
    pub(super) epoch: Epoch,
    /// The highest `cluster_current_epoch` seen.
    highest_epoch: AtomicU64,
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
            .connection_timeout(timeout)
            .response_timeout(timeout)
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
            idle: Mutex::new(Vec::new()),
            exclusive_slots: Arc::new(Semaphore::new(settings.exclusive_connections.max(1))),
        })
    }

    pub(super) fn opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    pub(super) async fn link(&self) -> RedisResult<Link> {
        if let Some(connection) = self.current.lock().clone() {
            return Ok(link(connection));
        }
        let _dialing = self.dialing.lock().await;
        if let Some(connection) = self.current.lock().clone() {
            return Ok(link(connection));
        }
        let mut connection = self.client.get_async_connection().await?;
        self.opened.fetch_add(1, Ordering::Relaxed);
        // The baseline epoch, before the first operation.
        if let Ok(epoch) = current_epoch(&mut connection).await {
            self.observe(epoch);
        }
        *self.current.lock() = Some(connection.clone());
        Ok(link(connection))
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
        if idle.len() < IDLE_EXCLUSIVE {
            idle.push(connection);
        }
    }

    /// Reads the cluster's current epoch from one of its nodes.
    pub(super) async fn watch(&self) -> RedisResult<()> {
        let Link { connection, .. } = self.link().await?;
        let Connection::Cluster(mut connection) = connection else {
            return Ok(());
        };
        let epoch = current_epoch(&mut connection).await?;
        self.observe(epoch);
        Ok(())
    }

    fn observe(&self, epoch: u64) {
        let previous = self.highest_epoch.fetch_max(epoch, Ordering::AcqRel);
        if epoch > previous {
            self.epoch.observe(epoch.to_string());
        }
    }
}

fn link(connection: ClusterConnection) -> Link {
    Link {
        generation: 0,
        connection: Connection::Cluster(connection),
    }
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
