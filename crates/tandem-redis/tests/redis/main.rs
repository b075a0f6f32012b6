//! Redis-specific behaviour of `RedisStore` against real redis-server processes:
//! credentials, TLS, servers that are down, hung or restarted, refusals, and
//! passwords kept out of every output, and what the session manager does with the
//! older copies a restart from a snapshot brings back. (The trait's contract is the conformance
//! suite's, in `tests/conformance.rs`.)

mod auth;
mod common;
mod faults;
mod refusals;
mod restore;
mod tls;
