//! Sticky mode: the local copy is the primary, the store holds its backup. Managers
//! with different routes stand in for app servers behind a sticky load balancer.

mod concurrency;
mod expiry;
mod failover;
mod lifecycle;

pub use concurrency::*;
pub use expiry::*;
pub use failover::*;
pub use lifecycle::*;
