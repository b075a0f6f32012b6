//! The session manager's behaviour suite (`tandem-behaviour`) against real
//! redis-server and valkey-server processes, with the fixture the conformance suite
//! uses (`fixture/mod.rs`): an unavailable node is a paused (hung) process.

mod fixture;

/// Redis (`redis-server`).
mod redis {
    tandem_behaviour::behaviour_tests!(crate::fixture::RedisFixture);
}

/// Valkey (`valkey-server`).
mod valkey {
    tandem_behaviour::behaviour_tests!(crate::fixture::ValkeyFixture);
}

/// A Sentinel group per node, found through its sentinel.
mod sentinel {
    tandem_behaviour::behaviour_tests!(crate::fixture::SentinelFixture);
}

/// A three-master Redis Cluster per node.
mod cluster {
    tandem_behaviour::behaviour_tests!(crate::fixture::ClusterFixture);
}
