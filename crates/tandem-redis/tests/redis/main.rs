//! Redis-specific behaviour of `RedisStore` against real redis-server processes:
//! credentials, TLS, servers that are down, hung or restarted, refusals, and
//! passwords kept out of every output, and what the session manager does with the
//! older copies a restart from a snapshot brings back; and the replicated
//! deployments as one node each: Sentinel groups and Clusters that fail over or
//! reshard under traffic, and the durable setting (`WAIT`). (The trait's contract
//! is the conformance suite's, in `tests/conformance.rs`.)

mod auth;
mod cluster;
mod common;
mod durable;
mod faults;
mod ha_tls;
mod refusals;
mod restore;
mod sentinel;
mod tls;
mod traffic;
