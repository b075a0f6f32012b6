//! Non-sticky mode: the store is the source of truth, a primary and a backup copy on
//! two nodes. Managers stand in for app servers behind a load balancer without
//! stickiness.

mod concurrency;
mod failover;

pub use concurrency::*;
pub use failover::*;
