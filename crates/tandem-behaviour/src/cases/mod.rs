//! The behaviour cases: one `async fn` per behaviour of the session manager, generic
//! over the [`StoreFixture`] that provides the store, in a module per mode. Each
//! starts its own fixture and its own managers (app servers);
//! [`behaviour_tests!`](crate::behaviour_tests) turns every one into a test, and
//! [`run`](crate::run) runs one by hand.
//!
//! [`StoreFixture`]: crate::StoreFixture

pub mod nonsticky;
pub mod sticky;
