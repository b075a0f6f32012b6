//! Finding a Sentinel group's master: all sentinels are asked at once
//! (`SENTINEL GET-MASTER-ADDR-BY-NAME`) and the first answer wins, so that a dead or
//! hung sentinel costs nothing while another answers. Each sentinel's connection is
//! kept for the next question and dropped when it fails.

use futures_util::future::select_ok;
use parking_lot::Mutex;
use redis::aio::MultiplexedConnection;
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

    /// The master's `(host, port)` as the first sentinel to answer names it.
    pub(super) async fn master_address(&self) -> RedisResult<(String, u16)> {
        let questions = self
            .sentinels
            .iter()
            .map(|sentinel| Box::pin(sentinel.master_address(&self.service)));
        match select_ok(questions).await {
            Ok((address, _others)) => Ok(address),
            Err(error) => Err(error),
        }
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
