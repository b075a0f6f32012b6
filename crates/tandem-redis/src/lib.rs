//! Tandem's Redis and Valkey remote store.
//!
//! [`RedisStore`] implements [`tandem_core::RemoteStore`] over Redis (6.2 or later)
//! and Valkey (7.2 or later) with the `redis` crate, for Tandem's remote tier:
//!
//! - **A node is a deployment.** Each entry of a [`RedisSpec`]
//!   (`r1=redis://10.0.0.5:6379,r2=redis+sentinel://s1,s2,s3/sessions,r3=redis+cluster://c1:7000,c2:7000`)
//!   is one node: a standalone server, a Sentinel group (the master the sentinels
//!   name, followed through failovers) or a Redis Cluster (routed by hash slot,
//!   following redirections, resharding and failovers). The caller names the node
//!   of every operation (session ids carry it): nothing is hashed or rerouted across
//!   nodes.
//! - **Durability you can choose.** With
//!   [`RedisConfig::with_wait_replicas`] every write waits for replica
//!   acknowledgements (`WAIT`), so that a failover cannot lose what was
//!   acknowledged; writes that are not acknowledged in time are counted and, by
//!   default, fail with [`StoreError::Unreplicated`](tandem_core::StoreError).
//! - **Epochs.** Each node's epoch changes when it may have lost or rolled back
//!   acknowledged writes (another master, a restarted server), for the manager's
//!   checks of older copies ([`RedisStore::epoch`]).
//! - **One multiplexed connection per node** (per cluster node for a cluster).
//!   Concurrent operations share it and go out pipelined. It is opened at [`RedisStore::connect`], and again on demand
//!   after the server closed it (a restart) or an operation on it failed.
//! - **Bounded time.** Every operation is bounded by one operation timeout (default
//!   500 ms), connecting included, so a hung server costs a request at most that.
//! - **Node health.** A node that fails an operation is marked down; operations on
//!   it then fail at once with
//!   [`StoreError::NodeDown`](tandem_core::StoreError::NodeDown) while a background
//!   probe pings it every probe interval, and it comes back by itself.
//!   [`RedisStore::health`] reports state, last error and counters per node.
//! - **Credentials and TLS.** Passwords and ACL users come from the URL; `rediss://`
//!   verifies the server's certificate (against [`RedisConfig::with_ca_file`] or
//!   the system's roots) and can present a client certificate
//!   ([`RedisConfig::with_client_cert`]). Wrong credentials or a failed handshake
//!   stop [`RedisStore::connect`] with a [`ConnectError`] that names the node.
//!   Passwords never appear in `Display` or `Debug` output, errors, logs or
//!   [`node_status`](tandem_core::RemoteStore::node_status).
//! - **CAS without server support.** Each value is stored with an 8-byte random
//!   token after it, new on every write: reads, touches and plain writes stay
//!   single commands, and the conditional operations run short scripts.
//!
//! It is not a general Redis client (no other data types, no key hashing across
//! Tandem nodes, no reads from replicas), it does not replicate between nodes (Redis
//! does that within a deployment, the session manager across nodes), and it does not choose
//! nodes, relocate sessions or retry: that is the session manager's job, using
//! [`RemoteStore::is_available`](tandem_core::RemoteStore::is_available) and the
//! errors this store returns.
//!
//! # Example
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//!
//! use tandem_core::{NodeId, RemoteStore, StoreKey, Ttl};
//! use tandem_redis::{RedisConfig, RedisSpec, RedisStore};
//!
//! let spec: RedisSpec = "r1=rediss://app:s3cret@redis.internal:6380".parse()?;
//! let config = RedisConfig::default()
//!     .with_operation_timeout(Duration::from_millis(300))
//!     .with_ca_file("/etc/tandem/redis-ca.pem");
//! let store = RedisStore::connect(&spec, config).await?;
//!
//! let (r1, key) = (NodeId::new("r1")?, StoreKey::new("session:abc")?);
//! store.set(&r1, &key, b"bytes", Ttl::After(Duration::from_secs(1800))).await?;
//! assert_eq!(store.get(&r1, &key).await?.map(|item| item.value), Some(b"bytes".to_vec()));
//! // The password is never printed:
//! assert!(!format!("{spec} {store:?}").contains("s3cret"));
//! # Ok(())
//! # }
//! ```

mod config;
mod deployment;
mod errors;
mod health;
mod layout;
mod scripts;
mod spec;
mod store;

pub use config::{MAX_ITEM_SIZE_LIMIT, RedisConfig, Unreplicated, WaitReplicas};
pub use errors::ConnectError;
pub use health::NodeHealth;
pub use layout::{MAX_TTL_MILLIS, TOKEN_LEN, wire_ttl_millis};
pub use spec::{
    DEFAULT_PORT, DEFAULT_SENTINEL_PORT, RedisNode, RedisSpec, RedisSpecError, RedisUrl, Topology,
};
pub use store::RedisStore;
