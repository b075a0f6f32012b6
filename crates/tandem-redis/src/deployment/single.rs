//! One server at a time: a standalone server, or the master of a Sentinel group.
//!
//! redis-rs's multiplexed connection does not reconnect by itself. So:
//! - the connection is opened on demand, by one caller at a time, and shared;
//! - it uses RESP3, whose push channel tells when the connection's reader saw it
//!   end (a restarted or killed server closes it): the next caller then opens a new
//!   one instead of failing on the dead one;
//! - a link the store saw fail (an I/O error, a timeout, a `READONLY` from a demoted
//!   master) is discarded, so that the next operation, or the store's probe, dials
//!   afresh. A timed-out command does not disturb the others on the connection
//!   meanwhile: the connection still reads its answer, in order, and drops it.
//!
//! For a Sentinel group each dial first asks the sentinels for the master's address
//! and then checks that the server there says it is a master (`ROLE`): a demoted
//! master is never written to, as a replica refuses writes (`READONLY`) and the
//! store's watch discards a link to a server the sentinels no longer name.
//!
//! Each dial also reads the server's run id (`INFO server`): another one than
//! before (a restarted server, another master) bumps the epoch.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;
use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo,
    ProtocolVersion, PushInfo, PushKind, RedisConnectionInfo, RedisError, RedisResult,
};
use tokio::sync::Semaphore;

use super::sentinel::{Notices, Sentinels};
use super::{Connection, DeploymentSettings, Epoch, Exclusive, Link, TlsMaterial};
use crate::spec::{RedisUrl, Topology};

/// Dials of one [`Single::link`] when the sentinels name another master during a
/// dial.
const DIAL_ATTEMPTS: usize = 3;

/// Why a dial failed.
enum Dial {
    /// The sentinels named another master by the time the server answered.
    Superseded(RedisError),
    /// Anything else.
    Failed(RedisError),
}

impl From<RedisError> for Dial {
    fn from(error: RedisError) -> Dial {
        Dial::Failed(error)
    }
}

/// A standalone server or a Sentinel group's master: one multiplexed connection,
/// opened on demand.
pub(crate) struct Single {
    source: Source,
    data_nodes: DataNodes,
    current: Mutex<Option<Current>>,
    /// Held while dialing, so that concurrent callers wait for one dial instead of
    /// opening a connection each. Dropping a dialing caller (its timeout) releases
    /// it.
    dialing: tokio::sync::Mutex<()>,
    opened: AtomicU64,
    pub(super) epoch: Epoch,
    /// Idle exclusive connections, with the link generation they belong to.
    idle: Mutex<Vec<(u64, MultiplexedConnection)>>,
    exclusive_slots: Arc<Semaphore>,
    /// The sentinels' announcements of a new master so far, and the last one's
    /// address (see [`follow`](Self::follow)).
    announced: Mutex<(u64, Option<(String, u16)>)>,
}

/// Where the server is.
enum Source {
    /// At a fixed address.
    Fixed(Client),
    /// Wherever the sentinels say the master is.
    Sentinel(Sentinels),
}

struct Current {
    link: Link,
    /// Cleared by the connection when its reader sees it end.
    alive: Arc<AtomicBool>,
    /// The server's client, for exclusive connections to the same server.
    client: Client,
    /// `host:port` the link goes to.
    address: (String, u16),
}

/// How to reach a data node (a server, a master): credentials, database, protocol
/// and TLS of every connection.
struct DataNodes {
    settings: RedisConnectionInfo,
    tls: bool,
    tls_material: TlsMaterial,
}

impl DataNodes {
    /// A client for the data node at `host:port`.
    fn client_for(&self, host: &str, port: u16) -> RedisResult<Client> {
        let host = host.to_owned();
        let address = if self.tls {
            ConnectionAddr::TcpTls {
                host,
                port,
                insecure: false,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(host, port)
        };
        let info = address
            .into_connection_info()?
            .set_redis_settings(self.settings.clone());
        if self.tls {
            tls_client(info, &self.tls_material)
        } else {
            Client::open(info)
        }
    }
}

impl Single {
    pub(super) fn new(url: &RedisUrl, settings: &DeploymentSettings) -> RedisResult<Single> {
        let mut connection = RedisConnectionInfo::default()
            .set_db(i64::from(url.db()))
            .set_protocol(ProtocolVersion::RESP3);
        if let Some(username) = url.username() {
            connection = connection.set_username(username);
        }
        if let Some(password) = url.password() {
            connection = connection.set_password(password);
        }
        let data_nodes = DataNodes {
            settings: connection,
            tls: url.tls(),
            tls_material: settings.tls.clone(),
        };
        let source = match url.topology() {
            Topology::Sentinel { service } => Source::Sentinel(Sentinels::new(
                url.socket_addresses(),
                service.clone(),
                url.tls(),
                &settings.tls,
            )?),
            _ => Source::Fixed(data_nodes.client_for(url.bare_host(), url.port())?),
        };
        Ok(Single {
            source,
            data_nodes,
            current: Mutex::new(None),
            dialing: tokio::sync::Mutex::new(()),
            opened: AtomicU64::new(0),
            epoch: Epoch::default(),
            idle: Mutex::new(Vec::new()),
            exclusive_slots: Arc::new(Semaphore::new(settings.exclusive_connections.max(1))),
            announced: Mutex::new((0, None)),
        })
    }

    pub(super) fn is_sentinel_group(&self) -> bool {
        matches!(self.source, Source::Sentinel(_))
    }

    pub(super) fn opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    pub(super) async fn link(&self) -> RedisResult<Link> {
        if let Some(link) = self.live() {
            return Ok(link);
        }
        let _dialing = self.dialing.lock().await;
        if let Some(link) = self.live() {
            return Ok(link);
        }
        // A dial to a Sentinel group's master can take long (a hung master accepts
        // the connection and answers nothing), long enough for a failover to
        // happen meanwhile: then the dial is made again, to the new master.
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.dial().await {
                Ok(link) => return Ok(link),
                Err(Dial::Superseded(error)) if attempts < DIAL_ATTEMPTS => {
                    tracing::info!(error = %error, "the sentinels named another master during the dial; dialing again");
                }
                Err(Dial::Superseded(error) | Dial::Failed(error)) => return Err(error),
            }
        }
    }

    /// Opens a connection to the server (for a Sentinel group: to the master the
    /// sentinels name, once it says it is a master and the sentinels still name
    /// it) and makes it the current link.
    async fn dial(&self) -> Result<Link, Dial> {
        let announcements = self.announced.lock().0;
        let (client, address) = match &self.source {
            Source::Fixed(client) => {
                let (host, port) = match client.get_connection_info().addr() {
                    ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
                        (host.clone(), *port)
                    }
                    _ => (String::new(), 0),
                };
                (client.clone(), (host, port))
            }
            Source::Sentinel(sentinels) => {
                let (host, port) = sentinels.master_address().await?;
                (self.data_nodes.client_for(&host, port)?, (host, port))
            }
        };
        let alive = Arc::new(AtomicBool::new(true));
        let flag = Arc::clone(&alive);
        // Timeouts are the store's (around the whole operation), not the client's.
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(None)
            .set_response_timeout(None)
            .set_push_sender(move |push: PushInfo| {
                if push.kind == PushKind::Disconnection {
                    flag.store(false, Ordering::Release);
                }
                Ok::<(), Infallible>(())
            });
        let mut connection = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        self.opened.fetch_add(1, Ordering::Relaxed);
        if let Source::Sentinel(sentinels) = &self.source {
            ensure_master(&mut connection).await?;
            // A former master that was hung (or cut off) during a failover still
            // says it is a master when it comes back, until the sentinels demote
            // it: only the sentinels' word tells. So they are asked again now that
            // the server answered; a dial that took long may have been overtaken.
            let mut now = sentinels.master_address().await?;
            // A sentinel that has not heard of a failover yet may answer first:
            // an announcement made during the dial counts too.
            if let (count, Some(announced)) = &*self.announced.lock()
                && *count != announcements
            {
                now = announced.clone();
            }
            if now != address {
                return Err(Dial::Superseded(redis::make_extension_error(
                    "READONLY".to_owned(),
                    Some(format!(
                        "the sentinels named {}:{} as the master while the store dialed {}:{}",
                        now.0, now.1, address.0, address.1
                    )),
                )));
            }
        }
        if let Some(run_id) = run_id(&mut connection).await {
            self.epoch.observe(run_id);
        }
        let generation = self.opened.load(Ordering::Relaxed);
        let link = Link {
            generation,
            connection: Connection::Server(connection),
        };
        *self.current.lock() = Some(Current {
            link: link.clone(),
            alive,
            client,
            address,
        });
        Ok(link)
    }

    /// The current link, if it is still open.
    fn live(&self) -> Option<Link> {
        let mut current = self.current.lock();
        match &*current {
            Some(open) if open.alive.load(Ordering::Acquire) => Some(open.link.clone()),
            Some(_) => {
                *current = None;
                None
            }
            None => None,
        }
    }

    pub(super) fn discard(&self, generation: u64) {
        let mut current = self.current.lock();
        if current
            .as_ref()
            .is_some_and(|open| open.link.generation == generation)
        {
            *current = None;
        }
    }

    pub(super) async fn exclusive(&self) -> RedisResult<Exclusive> {
        let permit = Arc::clone(&self.exclusive_slots)
            .acquire_owned()
            .await
            .map_err(|_| RedisError::from((ErrorKind::Io, "the store is closing")))?;
        let link = self.link().await?;
        let client = {
            let mut idle = self.idle.lock();
            idle.retain(|(generation, _)| *generation == link.generation);
            if let Some((generation, connection)) = idle.pop() {
                return Ok(Exclusive {
                    generation,
                    connection: Connection::Server(connection),
                    _permit: permit,
                });
            }
            let current = self.current.lock();
            match &*current {
                Some(open) if open.link.generation == link.generation => open.client.clone(),
                _ => {
                    return Err(RedisError::from((
                        ErrorKind::Io,
                        "the connection was replaced",
                    )));
                }
            }
        };
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(None)
            .set_response_timeout(None);
        let mut connection = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        self.opened.fetch_add(1, Ordering::Relaxed);
        if self.is_sentinel_group() {
            ensure_master(&mut connection).await?;
        }
        Ok(Exclusive {
            generation: link.generation,
            connection: Connection::Server(connection),
            _permit: permit,
        })
    }

    pub(super) fn give_back(&self, exclusive: Exclusive) {
        let Connection::Server(connection) = exclusive.connection else {
            return;
        };
        let mut idle = self.idle.lock();
        // Every one of them was opened under a permit: never more than
        // `with_wait_connections` are kept, and all are, so that a busy store does
        // not open a connection per durable write.
        idle.push((exclusive.generation, connection));
    }

    /// For a Sentinel group: a subscription to the sentinels' announcements of a
    /// new master; `None` for a standalone server.
    pub(super) async fn subscribe(&self) -> Option<RedisResult<Notices>> {
        match &self.source {
            Source::Sentinel(sentinels) => Some(sentinels.subscribe().await),
            Source::Fixed(_) => None,
        }
    }

    /// Follows an announcement of the sentinels: if it names a new master of the
    /// group, a link that goes elsewhere is discarded at once (the next operation
    /// dials the new master). Returns whether it named one.
    pub(super) fn follow(&self, message: &redis::Msg) -> bool {
        let Source::Sentinel(sentinels) = &self.source else {
            return false;
        };
        let Some(master) = sentinels.switched_to(message) else {
            return false;
        };
        {
            let mut announced = self.announced.lock();
            announced.0 += 1;
            announced.1 = Some(master.clone());
        }
        let mut current = self.current.lock();
        if current.as_ref().is_some_and(|open| open.address != master) {
            tracing::info!(address = %format!("{}:{}", master.0, master.1), "the sentinels announce another master; reconnecting");
            *current = None;
        }
        true
    }

    /// For a Sentinel group: asks the sentinels where the master is, and discards
    /// the current link if it goes elsewhere (a failover the store has not noticed
    /// through a failed operation, as a graceful one).
    pub(super) async fn watch(&self) -> RedisResult<()> {
        let Source::Sentinel(sentinels) = &self.source else {
            return Ok(());
        };
        let master = sentinels.master_address().await?;
        let mut current = self.current.lock();
        if current.as_ref().is_some_and(|open| open.address != master) {
            tracing::info!(address = %format!("{}:{}", master.0, master.1), "the sentinels name another master; reconnecting");
            *current = None;
        }
        Ok(())
    }
}

/// Fails unless the server says it is a master: right after a failover the
/// sentinels may still name a server that was demoted, or one not yet promoted.
async fn ensure_master(connection: &mut MultiplexedConnection) -> RedisResult<()> {
    let role: redis::Value = redis::cmd("ROLE").query_async(connection).await?;
    let is_master = match &role {
        redis::Value::Array(parts) => {
            matches!(
                parts.first(),
                Some(redis::Value::BulkString(role)) if role == b"master"
            ) || matches!(parts.first(), Some(redis::Value::SimpleString(role)) if role == "master")
        }
        _ => false,
    };
    if is_master {
        Ok(())
    } else {
        Err(redis::make_extension_error(
            "READONLY".to_owned(),
            Some("the server the sentinels name is not a master (yet)".to_owned()),
        ))
    }
}

/// The server's run id, from `INFO server`; `None` if it does not say (an ACL user
/// without `INFO`).
async fn run_id(connection: &mut MultiplexedConnection) -> Option<String> {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(connection)
        .await
        .ok()?;
    info.lines()
        .find_map(|line| line.trim().strip_prefix("run_id:"))
        .map(str::to_owned)
}

#[cfg(feature = "tls")]
fn tls_client(info: ConnectionInfo, tls: &TlsMaterial) -> RedisResult<Client> {
    match super::certificates(tls) {
        None => Client::open(info),
        Some(certificates) => Client::build_with_tls(info, certificates),
    }
}

#[cfg(not(feature = "tls"))]
fn tls_client(_info: ConnectionInfo, _tls: &TlsMaterial) -> RedisResult<Client> {
    Err(RedisError::from((
        ErrorKind::InvalidClientConfig,
        "TLS (`rediss://`, `valkeys://`) needs tandem-redis's `tls` feature",
    )))
}
