//! The conformance suite against [`MemoryStore`](tandem_core::MemoryStore), whose
//! nodes are switched off and on with `MemoryStore::set_node_up`: the crate's
//! [`MemoryFixture`](tandem_store_conformance::MemoryFixture).

tandem_store_conformance::store_conformance_tests!(tandem_store_conformance::MemoryFixture);
