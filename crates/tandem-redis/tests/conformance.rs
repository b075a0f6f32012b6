//! The `RemoteStore` conformance suite (`tandem-store-conformance`) against real
//! redis-server processes, with the fixture of `fixture/mod.rs`.
//!
//! Redis-specific behaviour (credentials, TLS, restarts, hung servers, redaction)
//! is tested in `tests/redis/`.

mod fixture;

tandem_store_conformance::store_conformance_tests!(fixture::RedisFixture);
