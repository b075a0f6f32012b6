//! Non-sticky mode against real memcached processes. Two managers stand in for two
//! app servers behind a load balancer without stickiness.

#[path = "../common/mod.rs"]
mod common;
mod concurrency;
mod failover;
