//! What the layer's test binaries share: the memcached store they run against.
//! Polling comes from `tandem-testkit`.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use tandem_core::NodeSpec;
use tandem_memcached::{MemcachedConfig, MemcachedStore};
use tandem_testkit::MemcachedCluster;

/// The operation timeout of the tests: short, to keep the suite fast.
pub const TIMEOUT: Duration = Duration::from_millis(200);
/// How often a down node is probed.
pub const PROBE: Duration = Duration::from_millis(100);

/// A store over every node of `cluster`, with the tests' timeout and probe interval.
pub async fn store(cluster: &MemcachedCluster) -> MemcachedStore {
    let config = MemcachedConfig::default()
        .with_operation_timeout(TIMEOUT)
        .with_probe_interval(PROBE);
    let spec = NodeSpec::parse(&cluster.node_spec()).unwrap();
    MemcachedStore::connect(&spec, config).await.unwrap()
}

/// [`store`], shared, as managers take it.
pub async fn connect(cluster: &MemcachedCluster) -> Arc<MemcachedStore> {
    Arc::new(store(cluster).await)
}

/// memcached operations sent so far, over every node.
pub fn operations(store: &MemcachedStore) -> u64 {
    store.health().iter().map(|node| node.operations).sum()
}
