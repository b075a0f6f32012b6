//! The behaviour suite against [`MemoryStore`](tandem_core::MemoryStore), with the
//! conformance suite's in-process fixture: an unavailable node is switched off and
//! fails every operation at once.

tandem_behaviour::behaviour_tests!(tandem_store_conformance::MemoryFixture);
