//! Regression tests for the findings of the security and concurrency audit. Each test
//! asserts the behaviour the fixes promise, so on a tree with the bug it fails; its
//! doc comment names the finding. Real memcached processes throughout; a wrapper
//! store (`support::Faulty`) delays or drops single operations where a race has to
//! happen in one order.

mod cancellation;
#[path = "../common/mod.rs"]
mod common;
mod drops;
mod expiry;
mod fixation;
mod limits;
mod locks;
mod logout;
mod outliving;
mod secrets;
mod stale_copies;
mod support;
