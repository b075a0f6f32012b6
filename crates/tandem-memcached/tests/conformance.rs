//! The `RemoteStore` conformance suite (`tandem-store-conformance`) against real
//! memcached processes started by `tandem-testkit`: every case starts its own.
//!
//! An unavailable node is a paused process (`SIGSTOP`): a hung node, the case that
//! costs an operation timeout. memcached-specific behaviour (the 30-day TTL rule,
//! pipelining, connection limits, health counters) is tested in `tests/store/`.

use std::sync::Arc;
use std::time::Duration;

use tandem_core::{NodeId, NodeSpec, RemoteStore};
use tandem_memcached::{MemcachedConfig, MemcachedStore};
use tandem_store_conformance::{FaultsUnsupported, StoreFixture};
use tandem_testkit::MemcachedCluster;

/// The operation timeout. memcached answers on loopback in well under a
/// millisecond, so only a busy machine makes an operation slow; a second keeps
/// every case but the fault ones (each of which waits for it once) from failing
/// then: at 200 ms one failed on a 2-core machine under a load of 7.
const TIMEOUT: Duration = Duration::from_secs(1);
/// How often a down node is probed.
const PROBE_INTERVAL: Duration = Duration::from_millis(250);

/// A fresh memcached per node (`n1`, `n2`, ...) and a store over them.
struct MemcachedFixture {
    cluster: MemcachedCluster,
    store: Arc<MemcachedStore>,
}

impl StoreFixture for MemcachedFixture {
    async fn start(nodes: usize) -> MemcachedFixture {
        let cluster = MemcachedCluster::start(nodes);
        let spec = NodeSpec::parse(&cluster.node_spec()).unwrap();
        let config = MemcachedConfig::default()
            .with_operation_timeout(TIMEOUT)
            .with_probe_interval(PROBE_INTERVAL);
        let store = MemcachedStore::connect(&spec, config).await.unwrap();
        MemcachedFixture {
            cluster,
            store: Arc::new(store),
        }
    }

    fn store(&self) -> Arc<dyn RemoteStore> {
        self.store.clone()
    }

    fn operation_timeout(&self) -> Duration {
        TIMEOUT
    }

    /// The first probe comes one probe interval after the failure, and one that
    /// started just before the node came back may still time out, which costs
    /// another interval.
    fn recovery_time(&self) -> Duration {
        (PROBE_INTERVAL + TIMEOUT) * 2
    }

    async fn make_unavailable(&self, node: &NodeId) -> Result<(), FaultsUnsupported> {
        self.cluster.node(node.as_str()).pause();
        Ok(())
    }

    async fn make_available(&self, node: &NodeId) -> Result<(), FaultsUnsupported> {
        self.cluster.node(node.as_str()).resume();
        Ok(())
    }
}

tandem_store_conformance::store_conformance_tests!(MemcachedFixture);
