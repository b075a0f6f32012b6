//! The `RemoteStore` conformance suite (`tandem-store-conformance`) against real
//! memcached processes, with the fixture of `fixture/mod.rs`.
//!
//! memcached-specific behaviour (the 30-day TTL rule, pipelining, connection limits,
//! health counters) is tested in `tests/store/`.

mod fixture;

tandem_store_conformance::store_conformance_tests!(fixture::MemcachedFixture);
