//! Non-sticky mode against real memcached processes restarted empty. Managers stand
//! in for app servers behind a load balancer without stickiness. The manager's
//! behaviour over any store is `tandem-behaviour`'s suite, run against memcached in
//! `tandem-memcached`'s tests.

#[path = "../common/mod.rs"]
mod common;
mod failover;
