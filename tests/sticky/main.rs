//! Sticky mode against real memcached processes. Managers with different routes stand
//! in for app servers.

#[path = "../common/mod.rs"]
mod common;
mod concurrency;
mod expiry;
mod failover;
mod lifecycle;
