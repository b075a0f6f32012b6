//! Finding a Sentinel group's master: all sentinels are asked at once
//! (`SENTINEL GET-MASTER-ADDR-BY-NAME`) and the first answer wins, so that a dead or
//! hung sentinel costs nothing while another answers. Each sentinel's connection is
//! kept for the next question and dropped when it fails.
//!
//! The sentinels also announce each failover on their `+switch-master` channel
//! (`<service> <old host> <old port> <new host> <new port>`): the store subscribes
//! to it on one sentinel, the first that accepts, and follows a failover as soon as
//! it is announced.

use futures_util::StreamExt;
use futures_util::future::select_ok;
use futures_util::stream::FuturesUnordered;
use parking_lot::Mutex;
use redis::aio::MultiplexedConnection;
use redis::aio::{PubSubSink, PubSubStream};
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, ErrorKind, IntoConnectionInfo, RedisError,
    RedisResult,
};

use super::TlsMaterial;

/// The sentinels of one group.
pub(super) struct Sentinels {
    service: String,
    sentinels: Vec<Sentinel>,
}

struct Sentinel {
    client: Client,
    connection: Mutex<Option<MultiplexedConnection>>,
}

impl Sentinels {
    pub(super) fn new(
        addresses: Vec<(String, u16)>,
        service: String,
        tls: bool,
        material: &TlsMaterial,
    ) -> RedisResult<Sentinels> {
        let sentinels = addresses
            .into_iter()
            .map(|(host, port)| {
                let address = if tls {
                    ConnectionAddr::TcpTls {
                        host,
                        port,
                        insecure: false,
                        tls_params: None,
                    }
                } else {
                    ConnectionAddr::Tcp(host, port)
                };
                let info = address.into_connection_info()?;
                let client = if tls {
                    sentinel_tls_client(info, material)?
                } else {
                    Client::open(info)?
                };
                Ok(Sentinel {
                    client,
                    connection: Mutex::new(None),
                })
            })
            .collect::<RedisResult<Vec<Sentinel>>>()?;
        Ok(Sentinels { service, sentinels })
    }

    /// The master's `(host, port)` as the first sentinel to answer names it. If
    /// none does, and one answered that it does not know the service, that is the
    /// error (a setting that can never work), rather than the refused connection of
    /// a sentinel that is down.
    pub(super) async fn master_address(&self) -> RedisResult<(String, u16)> {
        let mut questions: FuturesUnordered<_> = self
            .sentinels
            .iter()
            .map(|sentinel| sentinel.master_address(&self.service))
            .collect();
        let mut failure: Option<RedisError> = None;
        while let Some(answer) = questions.next().await {
            match answer {
                Ok(address) => return Ok(address),
                Err(error) => {
                    let unknown =
                        |error: &RedisError| error.kind() == ErrorKind::InvalidClientConfig;
                    if !failure.as_ref().is_some_and(unknown) {
                        failure = Some(error);
                    }
                }
            }
        }
        Err(failure.unwrap_or_else(|| {
            RedisError::from((ErrorKind::InvalidClientConfig, "no sentinel to ask"))
        }))
    }
}

/// The channel on which sentinels announce a new master.
pub(super) const SWITCH_MASTER: &str = "+switch-master";

/// A subscription to one sentinel's [`SWITCH_MASTER`] channel: the announcements,
/// and the way to check that the sentinel still answers (a hung sentinel says
/// nothing, just as a quiet one).
pub(crate) struct Notices {
    /// The messages of the channel.
    pub(crate) messages: PubSubStream,
    /// The connection's sending side, for `PING`s.
    pub(crate) sink: PubSubSink,
}

impl Notices {
    /// Whether the sentinel still answers (a `PING` on the subscribed connection).
    pub(crate) async fn ping(&mut self) -> RedisResult<()> {
        self.sink.ping::<redis::Value>().await.map(|_| ())
    }
}

impl Sentinels {
    /// Subscribes to [`SWITCH_MASTER`] on the first sentinel that accepts; the
    /// others are left alone.
    pub(super) async fn subscribe(&self) -> RedisResult<Notices> {
        let attempts = self.sentinels.iter().map(|sentinel| {
            Box::pin(async move {
                let (mut sink, messages) = sentinel.client.get_async_pubsub().await?.split();
                sink.subscribe(SWITCH_MASTER).await?;
                Ok::<Notices, RedisError>(Notices { messages, sink })
            })
        });
        select_ok(attempts).await.map(|(notices, _others)| notices)
    }

    /// The new master's `(host, port)` if `message` announces a failover of this
    /// group's service.
    pub(super) fn switched_to(&self, message: &redis::Msg) -> Option<(String, u16)> {
        if message.get_channel_name() != SWITCH_MASTER {
            return None;
        }
        let payload: String = message.get_payload().ok()?;
        parse_switch(&payload, &self.service)
    }
}

/// `<service> <old host> <old port> <new host> <new port>`: the new address, if
/// the service is `service`.
fn parse_switch(payload: &str, service: &str) -> Option<(String, u16)> {
    let fields: Vec<&str> = payload.split_whitespace().collect();
    match fields[..] {
        [name, _, _, host, port] if name == service => Some((host.to_owned(), port.parse().ok()?)),
        _ => None,
    }
}

impl Sentinel {
    async fn master_address(&self, service: &str) -> RedisResult<(String, u16)> {
        let cached = self.connection.lock().clone();
        let mut connection = match cached {
            Some(connection) => connection,
            None => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(None)
                    .set_response_timeout(None);
                let connection = self
                    .client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                *self.connection.lock() = Some(connection.clone());
                connection
            }
        };
        let answer: RedisResult<Option<(String, String)>> = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(service)
            .query_async(&mut connection)
            .await;
        let answer = match answer {
            Ok(answer) => answer,
            Err(error) => {
                *self.connection.lock() = None;
                return Err(error);
            }
        };
        let Some((host, port)) = answer else {
            return Err(RedisError::from((
                ErrorKind::InvalidClientConfig,
                "the sentinels do not know this service",
                format!("no master named {service:?}"),
            )));
        };
        let port = port.parse::<u16>().map_err(|_| {
            RedisError::from((
                ErrorKind::UnexpectedReturnType,
                "a sentinel named a master with a bad port",
                port,
            ))
        })?;
        Ok((host, port))
    }
}

#[cfg(feature = "tls")]
fn sentinel_tls_client(info: redis::ConnectionInfo, material: &TlsMaterial) -> RedisResult<Client> {
    match super::certificates(material) {
        None => Client::open(info),
        Some(certificates) => Client::build_with_tls(info, certificates),
    }
}

#[cfg(not(feature = "tls"))]
fn sentinel_tls_client(
    _info: redis::ConnectionInfo,
    _material: &TlsMaterial,
) -> RedisResult<Client> {
    Err(RedisError::from((
        ErrorKind::InvalidClientConfig,
        "TLS (`rediss+sentinel://`) needs tandem-redis's `tls` feature",
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switch_notices_name_the_new_master_of_the_service() {
        assert_eq!(
            parse_switch("tandem 127.0.0.1 7001 127.0.0.1 7002", "tandem"),
            Some(("127.0.0.1".to_owned(), 7002))
        );
        assert_eq!(
            parse_switch("other 127.0.0.1 7001 127.0.0.1 7002", "tandem"),
            None
        );
        assert_eq!(parse_switch("tandem 127.0.0.1 7001", "tandem"), None);
        assert_eq!(
            parse_switch("tandem 127.0.0.1 7001 127.0.0.1 port", "tandem"),
            None
        );
    }
}
