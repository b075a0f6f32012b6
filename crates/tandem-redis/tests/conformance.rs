//! The `RemoteStore` conformance suite (`tandem-store-conformance`) against real
//! redis-server and valkey-server processes, with the fixture of `fixture/mod.rs`.
//!
//! Redis-specific behaviour (credentials, TLS, restarts, hung servers, redaction)
//! is tested in `tests/redis/`.

mod fixture;

/// Redis (`redis-server`).
mod redis {
    tandem_store_conformance::store_conformance_tests!(crate::fixture::RedisFixture);
}

/// Valkey (`valkey-server`).
mod valkey {
    tandem_store_conformance::store_conformance_tests!(crate::fixture::ValkeyFixture);
}

/// A Sentinel group per node, found through its sentinel.
mod sentinel {
    tandem_store_conformance::store_conformance_tests!(crate::fixture::SentinelFixture);
}

/// A three-master Redis Cluster per node.
mod cluster {
    tandem_store_conformance::store_conformance_tests!(crate::fixture::ClusterFixture);
}
