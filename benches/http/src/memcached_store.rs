//! A tower-sessions [`SessionStore`] over one memcached node, with the same client as
//! Tandem (the `memcache` crate's async meta-protocol client, configured like Tandem's
//! defaults) so that the comparison measures the session layers, not the clients.
//!
//! Records are MessagePack (`rmp-serde`), as in tower-sessions' own remote stores.
//! One operation per call: `load` is a get, `save` a set, `create` an add (retried
//! under a new id on a collision), `delete` a delete.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use memcache::exp::{AsyncMetaClient, MetaClientBuilder, MutationStatus};
use tower_sessions::SessionStore;
use tower_sessions::cookie::time::OffsetDateTime;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{Error, Result};

/// Key prefix, so that the store can share a memcached with Tandem's keys.
const PREFIX: &str = "tws:";
/// memcached reads expiry times above this many seconds as absolute Unix times.
const MAX_RELATIVE_TTL: i64 = 30 * 24 * 3600;
/// Tandem's default operation timeout, used for both connecting and each operation.
const OPERATION_TIMEOUT: Duration = Duration::from_millis(500);
/// Tandem's default pool size per node.
const MAX_IDLE_CONNECTIONS: usize = 64;

/// The memcached-backed store.
#[derive(Clone)]
pub struct MemcachedSessionStore {
    client: Arc<AsyncMetaClient>,
    address: String,
}

impl MemcachedSessionStore {
    /// A store on the memcached at `address` (`host:port`) keeping up to `max_idle`
    /// idle connections (`None`: Tandem's default); connections open on first use.
    pub async fn connect(
        address: &str,
        max_idle: Option<usize>,
    ) -> std::result::Result<MemcachedSessionStore, String> {
        let client = MetaClientBuilder::new()
            .connect_timeout(Some(OPERATION_TIMEOUT))
            .io_timeout(Some(OPERATION_TIMEOUT))
            .max_idle(max_idle.unwrap_or(MAX_IDLE_CONNECTIONS))
            .connect_async(address)
            .await
            .map_err(|error| format!("memcached at {address}: {error}"))?;
        Ok(MemcachedSessionStore {
            client: Arc::new(client),
            address: address.to_owned(),
        })
    }
}

impl fmt::Debug for MemcachedSessionStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemcachedSessionStore")
            .field("address", &self.address)
            .finish()
    }
}

fn key(id: &Id) -> String {
    format!("{PREFIX}{id}")
}

/// The wire expiry of a record: seconds from now, or a Unix time beyond 30 days.
fn expiry(record: &Record) -> u32 {
    let expires = record.expiry_date.unix_timestamp();
    let left = (expires - OffsetDateTime::now_utc().unix_timestamp()).max(1);
    let wire = if left > MAX_RELATIVE_TTL {
        expires
    } else {
        left
    };
    u32::try_from(wire).unwrap_or(u32::MAX)
}

fn backend(error: impl fmt::Display) -> Error {
    Error::Backend(error.to_string())
}

fn encode(record: &Record) -> Result<Vec<u8>> {
    rmp_serde::to_vec(record).map_err(|error| Error::Encode(error.to_string()))
}

#[async_trait]
impl SessionStore for MemcachedSessionStore {
    async fn create(&self, record: &mut Record) -> Result<()> {
        loop {
            let bytes = encode(record)?;
            let result = self
                .client
                .set(key(&record.id), &bytes)
                .ttl_raw(expiry(record))
                .add()
                .send()
                .await
                .map_err(backend)?;
            match result.status {
                MutationStatus::Applied => return Ok(()),
                MutationStatus::AlreadyExists => record.id = Id::default(),
                status => return Err(backend(format!("unexpected {status:?} answer to add"))),
            }
        }
    }

    async fn save(&self, record: &Record) -> Result<()> {
        let bytes = encode(record)?;
        let result = self
            .client
            .set(key(&record.id), &bytes)
            .ttl_raw(expiry(record))
            .send()
            .await
            .map_err(backend)?;
        match result.status {
            MutationStatus::Applied => Ok(()),
            status => Err(backend(format!("unexpected {status:?} answer to set"))),
        }
    }

    async fn load(&self, session_id: &Id) -> Result<Option<Record>> {
        let result = self
            .client
            .get(key(session_id))
            .send()
            .await
            .map_err(backend)?;
        if !result.hit() {
            return Ok(None);
        }
        let Some(bytes) = result.value else {
            return Err(backend("a hit without a value"));
        };
        rmp_serde::from_slice(&bytes)
            .map(Some)
            .map_err(|error| Error::Decode(error.to_string()))
    }

    async fn delete(&self, session_id: &Id) -> Result<()> {
        self.client
            .delete(key(session_id))
            .send()
            .await
            .map_err(backend)?;
        Ok(())
    }
}
