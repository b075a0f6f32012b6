//! The conformance cases: one `async fn` per rule of the [`RemoteStore`] contract,
//! generic over the [`StoreFixture`] that provides the store. Each starts its own
//! fixture; [`store_conformance_tests!`](crate::store_conformance_tests) turns every
//! one into a test, and [`run`](crate::run) runs one by hand.
//!
//! [`RemoteStore`]: tandem_core::RemoteStore
//! [`StoreFixture`]: crate::StoreFixture

mod basic;
mod batch;
mod cas;
mod nodes;
mod ttl;
mod values;

pub use basic::*;
pub use batch::*;
pub use cas::*;
pub use nodes::*;
pub use ttl::*;
pub use values::*;
