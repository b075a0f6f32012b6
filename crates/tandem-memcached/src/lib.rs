//! Tandem's memcached remote store.
//!
//! [`MemcachedStore`] implements [`tandem_core::RemoteStore`] over real memcached
//! servers with the meta protocol (the async client of the `memcache` crate). It is
//! built for Tandem's remote tier:
//!
//! - **One connection pool per node.** The caller names the node of every operation
//!   (session ids carry their node), and the operation goes to exactly that node;
//!   nothing is hashed or rerouted.
//! - **Bounded time.** Every operation is bounded by one operation timeout (default
//!   500 ms), everything included, so a hung node costs a request at most that.
//! - **Node health.** A node that fails an operation is marked down; operations on it
//!   then fail at once with [`StoreError::NodeDown`](tandem_core::StoreError::NodeDown)
//!   while a background probe checks it every probe interval, and it comes back by
//!   itself. [`MemcachedStore::health`] reports state, last error and counters per
//!   node.
//! - **Pipelined reads under load.** A node runs at most a few read exchanges at once
//!   ([`MemcachedConfig::with_max_read_exchanges`]); reads that find them all busy go
//!   out together in the next one, pipelined on one connection, which saves most of
//!   their system calls on both sides. At low load every read goes out at once.
//! - **Bounded connections.** A node has at most 128 connections by default
//!   ([`MemcachedConfig::with_max_connections`]); operations beyond that wait for one
//!   within their timeout (counted in [`NodeHealth::connection_waits`]) instead of
//!   dialing more, so that a burst or a slow node cannot exhaust memcached's
//!   connection limit or the app's ports.
//! - **Conditional operations.** Writes conditional on absence or on a CAS token
//!   return the new token (`ms` with `c`), so that writes can be chained without a
//!   read in between, also pipelined (`write_many`); deletes conditional on a token
//!   remove only the caller's own item; appends create a missing item with a TTL; and
//!   reads can report how long an item has left.
//! - **memcached's rules.** TTLs beyond 30 days are sent as absolute times
//!   ([`wire_ttl`]), and values that would not fit memcached's item size limit are
//!   refused before they are sent, because memcached drops the stored copy of a key
//!   when it refuses a new value for it.
//!
//! It is not a general memcached client (no multi-get, no counters, no key hashing
//! across nodes) and it does not choose nodes, relocate sessions or retry: that is the
//! session manager's job, using [`RemoteStore::is_available`](tandem_core::RemoteStore::is_available)
//! and the errors this store returns.

mod config;
mod connections;
mod health;
mod pipeline;
mod store;
mod ttl;

pub use config::{DEFAULT_MAX_CONNECTIONS, ITEM_OVERHEAD, MemcachedConfig};
pub use health::NodeHealth;
pub use store::{ConnectError, MemcachedStore};
pub use ttl::{EXPIRY_CLOCK_SLACK, MAX_RELATIVE_TTL_SECS, wire_ttl};
