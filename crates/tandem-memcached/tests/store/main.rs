//! The memcached store against real memcached processes started by `tandem-testkit`.
//! Every test starts its own servers, so the tests run in parallel.
//!
//! Run with `--nocapture` to see the measured timings.

mod common;
mod conditional;
mod connection_limit;
mod node_health;
mod operations;
mod pipelined_reads;
