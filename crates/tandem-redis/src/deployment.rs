//! The connection to one node, a Redis *deployment*.
//!
//! Today a deployment is one standalone server, reached over one
//! [`MultiplexedConnection`]: concurrent commands share it and go out pipelined,
//! which is the Redis counterpart of the memcached store's coalesced reads. The
//! store only asks a [`Deployment`] for a [`Link`] and hands back the links that
//! failed, so a Sentinel group (resolve the master, then the same multiplexed
//! connection) or a Cluster (a cluster connection that routes by slot) can slot in
//! as further variants without touching the store.
//!
//! redis-rs's multiplexed connection does not reconnect by itself. So:
//! - the connection is opened on demand, by one caller at a time, and shared;
//! - it uses RESP3, whose push channel tells when the connection's reader saw it
//!   end (a restarted or killed server closes it): the next caller then opens a new
//!   one instead of failing on the dead one;
//! - a link the store saw fail (an I/O error, a timeout) is discarded, so that the
//!   next operation, or the store's probe, dials afresh. A timed-out command does not
//!   disturb the others on the connection meanwhile: the connection still reads its
//!   answer, in order, and drops it.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;
use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, IntoConnectionInfo, ProtocolVersion, PushInfo,
    PushKind, RedisConnectionInfo, RedisResult,
};

use crate::spec::RedisUrl;

/// PEM bytes of the TLS trust and identity settings, read once at connect.
#[derive(Clone, Default)]
pub(crate) struct TlsMaterial {
    /// CA certificates to trust instead of the system's.
    pub(crate) root_cert: Option<Vec<u8>>,
    /// Client certificate chain and private key.
    pub(crate) client: Option<(Vec<u8>, Vec<u8>)>,
}

/// How the store reaches one node.
pub(crate) enum Deployment {
    /// One standalone server.
    Standalone(Standalone),
}

impl Deployment {
    /// A standalone server at `url`; nothing is dialed yet.
    pub(crate) fn standalone(url: &RedisUrl, tls: &TlsMaterial) -> RedisResult<Deployment> {
        Ok(Deployment::Standalone(Standalone::new(url, tls)?))
    }

    /// A connection to the node: the current one, or a new one if there is none.
    pub(crate) async fn link(&self) -> RedisResult<Link> {
        match self {
            Deployment::Standalone(standalone) => standalone.link().await,
        }
    }

    /// Forgets `link` after it failed, so that the next [`link`](Self::link) dials
    /// again. A link that was already replaced is left alone.
    pub(crate) fn discard(&self, link: &Link) {
        match self {
            Deployment::Standalone(standalone) => standalone.discard(link.generation),
        }
    }

    /// Connections opened so far.
    pub(crate) fn connections_opened(&self) -> u64 {
        match self {
            Deployment::Standalone(standalone) => standalone.opened.load(Ordering::Relaxed),
        }
    }
}

/// A connection handed out for one operation. Cheap to clone; commands sent on
/// clones share the connection.
#[derive(Clone)]
pub(crate) struct Link {
    generation: u64,
    pub(crate) connection: MultiplexedConnection,
}

/// A standalone server: one multiplexed connection, opened on demand.
pub(crate) struct Standalone {
    client: Client,
    current: Mutex<Option<Current>>,
    /// Held while dialing, so that concurrent callers wait for one dial instead of
    /// opening a connection each. Dropping a dialing caller (its timeout) releases
    /// it.
    dialing: tokio::sync::Mutex<()>,
    opened: AtomicU64,
}

struct Current {
    link: Link,
    /// Cleared by the connection when its reader sees it end.
    alive: Arc<AtomicBool>,
}

impl Standalone {
    fn new(url: &RedisUrl, tls: &TlsMaterial) -> RedisResult<Standalone> {
        let host = url.bare_host().to_owned();
        let address = if url.tls() {
            ConnectionAddr::TcpTls {
                host,
                port: url.port(),
                insecure: false,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(host, url.port())
        };
        let mut settings = RedisConnectionInfo::default()
            .set_db(i64::from(url.db()))
            .set_protocol(ProtocolVersion::RESP3);
        if let Some(username) = url.username() {
            settings = settings.set_username(username);
        }
        if let Some(password) = url.password() {
            settings = settings.set_password(password);
        }
        let info = address.into_connection_info()?.set_redis_settings(settings);
        let client = if url.tls() {
            tls_client(info, tls)?
        } else {
            Client::open(info)?
        };
        Ok(Standalone {
            client,
            current: Mutex::new(None),
            dialing: tokio::sync::Mutex::new(()),
            opened: AtomicU64::new(0),
        })
    }

    async fn link(&self) -> RedisResult<Link> {
        if let Some(link) = self.live() {
            return Ok(link);
        }
        let _dialing = self.dialing.lock().await;
        if let Some(link) = self.live() {
            return Ok(link);
        }
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
        let connection = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let generation = self.opened.fetch_add(1, Ordering::Relaxed) + 1;
        let link = Link {
            generation,
            connection,
        };
        *self.current.lock() = Some(Current {
            link: link.clone(),
            alive,
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

    fn discard(&self, generation: u64) {
        let mut current = self.current.lock();
        if current
            .as_ref()
            .is_some_and(|open| open.link.generation == generation)
        {
            *current = None;
        }
    }
}

#[cfg(feature = "tls")]
fn tls_client(info: redis::ConnectionInfo, tls: &TlsMaterial) -> RedisResult<Client> {
    if tls.root_cert.is_none() && tls.client.is_none() {
        return Client::open(info);
    }
    let certificates = redis::TlsCertificates {
        client_tls: tls
            .client
            .as_ref()
            .map(|(cert, key)| redis::ClientTlsConfig {
                client_cert: cert.clone(),
                client_key: key.clone(),
            }),
        root_cert: tls.root_cert.clone(),
    };
    Client::build_with_tls(info, certificates)
}

#[cfg(not(feature = "tls"))]
fn tls_client(_info: redis::ConnectionInfo, _tls: &TlsMaterial) -> RedisResult<Client> {
    Err(redis::RedisError::from((
        redis::ErrorKind::InvalidClientConfig,
        "TLS (`rediss://`, `valkeys://`) needs tandem-redis's `tls` feature",
    )))
}
