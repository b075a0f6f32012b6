//! The connection to one node, a Redis *deployment*: a standalone server, a
//! Sentinel group (a master found through its sentinels) or a Cluster.
//!
//! The store asks a [`Deployment`] for a [`Link`] (a shared, multiplexed
//! connection: concurrent commands go out pipelined), hands back the links that
//! failed, and, for writes that wait for replicas (`WAIT` blocks the connection it
//! is sent on), borrows an [`Exclusive`] connection that nothing else uses
//! meanwhile. Each deployment also keeps an *epoch*, a number that changes when the
//! deployment may have lost or rolled back acknowledged writes: another master
//! (a failover) or a restarted server.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

use crate::spec::{RedisUrl, Topology};

mod cluster;
mod redirect;
mod sentinel;
mod single;

pub(crate) use cluster::Cluster;
pub(crate) use sentinel::Notices;
pub(crate) use single::Single;

/// PEM bytes of the TLS trust and identity settings, read once at connect.
#[derive(Clone, Default)]
pub(crate) struct TlsMaterial {
    /// CA certificates to trust instead of the system's.
    pub(crate) root_cert: Option<Vec<u8>>,
    /// Client certificate chain and private key.
    pub(crate) client: Option<(Vec<u8>, Vec<u8>)>,
}

/// What a deployment needs to know of the store's settings.
#[derive(Clone)]
pub(crate) struct DeploymentSettings {
    pub(crate) tls: TlsMaterial,
    /// The store's operation timeout: bounds the cluster client's own waits.
    pub(crate) operation_timeout: Duration,
    /// Connections that writes waiting for replicas may use at the same time.
    pub(crate) exclusive_connections: usize,
    /// How long a write waits for its replicas (`WAIT`), with the durable
    /// setting: such writes are given that much more than the operation timeout.
    pub(crate) wait_timeout: Option<Duration>,
}

/// How the store reaches one node.
pub(crate) enum Deployment {
    /// A standalone server, or the master of a Sentinel group.
    Single(Box<Single>),
    /// A Redis Cluster.
    Cluster(Box<Cluster>),
}

impl Deployment {
    /// The deployment `url` names; nothing is dialed yet.
    pub(crate) fn new(url: &RedisUrl, settings: &DeploymentSettings) -> RedisResult<Deployment> {
        Ok(match url.topology() {
            Topology::Cluster => Deployment::Cluster(Box::new(Cluster::new(url, settings)?)),
            _ => Deployment::Single(Box::new(Single::new(url, settings)?)),
        })
    }

    /// A connection to the node: the current one, or a new one if there is none.
    pub(crate) async fn link(&self) -> RedisResult<Link> {
        match self {
            Deployment::Single(single) => single.link().await,
            Deployment::Cluster(cluster) => cluster.link().await,
        }
    }

    /// Forgets `link` after it failed, so that the next [`link`](Self::link) dials
    /// again (for a Sentinel group, asking the sentinels for the master again; for
    /// a cluster, reading its slots again). A link that was already replaced is
    /// left alone.
    pub(crate) fn discard(&self, link: &Link) {
        match self {
            Deployment::Single(single) => single.discard(link.generation),
            Deployment::Cluster(cluster) => cluster.discard(link.generation),
        }
    }

    /// A connection for this caller alone, for commands that block the connection
    /// (`WAIT`); hand it back with [`give_back`](Self::give_back) once it answered.
    pub(crate) async fn exclusive(&self) -> RedisResult<Exclusive> {
        match self {
            Deployment::Single(single) => single.exclusive().await,
            Deployment::Cluster(cluster) => cluster.exclusive().await,
        }
    }

    /// Returns a connection that served its command, for the next caller. One that
    /// failed is dropped instead (not handed back).
    pub(crate) fn give_back(&self, exclusive: Exclusive) {
        match self {
            Deployment::Single(single) => single.give_back(exclusive),
            Deployment::Cluster(cluster) => cluster.give_back(exclusive),
        }
    }

    /// Connections opened so far, exclusive ones included.
    pub(crate) fn connections_opened(&self) -> u64 {
        match self {
            Deployment::Single(single) => single.opened(),
            Deployment::Cluster(cluster) => cluster.opened(),
        }
    }

    /// See the module's documentation.
    pub(crate) fn epoch(&self) -> u64 {
        match self {
            Deployment::Single(single) => single.epoch.current(),
            Deployment::Cluster(cluster) => cluster.epoch.current(),
        }
    }

    /// Whether the deployment keeps copies of its items and fails over by itself.
    pub(crate) fn replicates(&self) -> bool {
        match self {
            Deployment::Single(single) => single.is_sentinel_group(),
            Deployment::Cluster(_) => true,
        }
    }

    /// Whether the deployment needs a watch (see [`watch`](Self::watch)).
    pub(crate) fn is_watched(&self) -> bool {
        self.replicates()
    }

    /// One look at the deployment's topology, for a node that can change under the
    /// store: a Sentinel group's master as the sentinels name it (a link to another
    /// server is discarded), a cluster's configuration epoch.
    pub(crate) async fn watch(&self) -> RedisResult<()> {
        match self {
            Deployment::Single(single) => single.watch().await,
            Deployment::Cluster(cluster) => cluster.watch().await,
        }
    }

    /// A subscription to the deployment's announcements of a new master (a
    /// Sentinel group's `+switch-master`); `None` if it makes none.
    pub(crate) async fn subscribe(&self) -> Option<RedisResult<Notices>> {
        match self {
            Deployment::Single(single) => single.subscribe().await,
            Deployment::Cluster(_) => None,
        }
    }

    /// Follows one announcement of a subscription (see
    /// [`subscribe`](Self::subscribe)): a link to a former master is discarded.
    /// Returns whether the announcement named a new master of this deployment.
    pub(crate) fn follow(&self, message: &redis::Msg) -> bool {
        match self {
            Deployment::Single(single) => single.follow(message),
            Deployment::Cluster(_) => false,
        }
    }

    /// Whether the deployment is a cluster (keys of several slots cannot share a
    /// pipeline).
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Deployment::Cluster(_))
    }
}

/// A connection handed out for one operation. Cheap to clone; commands sent on
/// clones share the connection.
#[derive(Clone)]
pub(crate) struct Link {
    generation: u64,
    pub(crate) connection: Connection,
}

/// A connection nobody else sends on until it is handed back.
pub(crate) struct Exclusive {
    /// The link generation it belongs to (a Sentinel group's connections to a
    /// former master are not reused).
    generation: u64,
    pub(crate) connection: Connection,
    /// Holds one of the deployment's exclusive connection slots.
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Exclusive {
    /// The connection as a link, to discard after a failure.
    pub(crate) fn link(&self) -> Link {
        Link {
            generation: self.generation,
            connection: self.connection.clone(),
        }
    }
}

/// A connection to a server or to a cluster.
#[derive(Clone)]
pub(crate) enum Connection {
    /// To one server.
    Server(MultiplexedConnection),
    /// To a cluster: routes each command by its key's slot.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Server(connection) => connection.req_packed_command(cmd),
            Connection::Cluster(connection) => Box::pin(redirect::command(connection, cmd)),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Server(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
            Connection::Cluster(connection) => {
                Box::pin(redirect::pipeline(connection, pipeline, offset, count))
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Server(connection) => connection.get_db(),
            Connection::Cluster(connection) => connection.get_db(),
        }
    }
}

/// A deployment's epoch: bumped when what it identifies its data by changes (a
/// server's run id, a cluster's configuration epoch).
#[derive(Default)]
pub(crate) struct Epoch {
    value: AtomicU64,
    /// What the last observation saw; `None` before the first.
    seen: parking_lot::Mutex<Option<String>>,
}

impl Epoch {
    pub(crate) fn current(&self) -> u64 {
        self.value.load(Ordering::Acquire)
    }

    /// Moves the epoch on, for a change seen otherwise than by an identity.
    pub(crate) fn bump(&self) {
        self.value.fetch_add(1, Ordering::AcqRel);
    }

    /// Records an observation of the deployment's identity; a different one than
    /// the last bumps the epoch. Returns whether it did.
    pub(crate) fn observe(&self, identity: String) -> bool {
        let mut seen = self.seen.lock();
        let changed = seen.as_ref().is_some_and(|previous| *previous != identity);
        if changed {
            self.value.fetch_add(1, Ordering::AcqRel);
        }
        *seen = Some(identity);
        changed
    }
}

#[cfg(feature = "tls")]
pub(crate) fn certificates(tls: &TlsMaterial) -> Option<redis::TlsCertificates> {
    if tls.root_cert.is_none() && tls.client.is_none() {
        return None;
    }
    Some(redis::TlsCertificates {
        client_tls: tls
            .client
            .as_ref()
            .map(|(cert, key)| redis::ClientTlsConfig {
                client_cert: cert.clone(),
                client_key: key.clone(),
            }),
        root_cert: tls.root_cert.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_epoch_changes_with_the_identity() {
        let epoch = Epoch::default();
        assert!(
            !epoch.observe("run-a".into()),
            "the first sighting is the baseline"
        );
        assert!(!epoch.observe("run-a".into()));
        assert_eq!(epoch.current(), 0);
        assert!(epoch.observe("run-b".into()));
        assert!(epoch.observe("run-a".into()));
        assert_eq!(epoch.current(), 2);
    }
}
