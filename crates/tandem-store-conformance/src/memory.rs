//! The fixture of the in-process [`MemoryStore`], shared by the suites that run
//! against it.

use std::sync::Arc;
use std::time::Duration;

use tandem_core::{MemoryStore, NodeId, RemoteStore};

use crate::{FaultsUnsupported, StoreFixture};

/// A fresh [`MemoryStore`] with nodes `n1`, `n2`, ... and memcached's default item
/// size limit; its nodes are switched off and on with [`MemoryStore::set_node_up`]
/// (an unavailable node fails every operation at once).
///
/// The fixture this crate's own tests run the suite with, and the one
/// `tandem-behaviour` runs the manager's behaviour suite with over the in-process
/// store.
pub struct MemoryFixture {
    store: Arc<MemoryStore>,
}

impl StoreFixture for MemoryFixture {
    async fn start(nodes: usize) -> MemoryFixture {
        let ids = (1..=nodes).map(|number| NodeId::new(&format!("n{number}")).unwrap());
        MemoryFixture {
            store: Arc::new(MemoryStore::new(ids)),
        }
    }

    fn store(&self) -> Arc<dyn RemoteStore> {
        self.store.clone()
    }

    /// A switched-off node fails at once.
    fn operation_timeout(&self) -> Duration {
        Duration::ZERO
    }

    async fn make_unavailable(&self, node: &NodeId) -> Result<(), FaultsUnsupported> {
        assert!(self.store.set_node_up(node, false), "no node {node}");
        Ok(())
    }

    async fn make_available(&self, node: &NodeId) -> Result<(), FaultsUnsupported> {
        assert!(self.store.set_node_up(node, true), "no node {node}");
        Ok(())
    }
}
