//! Sticky mode against real memcached processes, where it is about memcached itself:
//! the operations it is sent, the items a restarted process holds. Managers with
//! different routes stand in for app servers. The manager's behaviour over any store
//! is `tandem-behaviour`'s suite, run against memcached in `tandem-memcached`'s tests.

#[path = "../common/mod.rs"]
mod common;
mod failover;
mod lifecycle;
