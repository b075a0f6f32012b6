//! A fixture that cannot inject faults: the fault cases are skipped (with a note on
//! standard error), not failed, and the other cases still run.

use std::sync::Arc;
use std::time::Duration;

use tandem_core::{MemoryStore, NodeId, RemoteStore};
use tandem_store_conformance::{StoreFixture, cases, run};

/// A [`MemoryStore`] whose fixture leaves the fault methods out.
struct WithoutFaults(Arc<MemoryStore>);

impl StoreFixture for WithoutFaults {
    async fn start(nodes: usize) -> WithoutFaults {
        let ids = (1..=nodes).map(|number| NodeId::new(&format!("n{number}")).unwrap());
        WithoutFaults(Arc::new(MemoryStore::new(ids)))
    }

    fn store(&self) -> Arc<dyn RemoteStore> {
        self.0.clone()
    }

    fn operation_timeout(&self) -> Duration {
        Duration::ZERO
    }
}

#[test]
fn the_default_fault_methods_say_they_are_unsupported() {
    run(|| async {
        let fixture = WithoutFaults::start(1).await;
        let node = fixture.store().nodes()[0].clone();
        let why = fixture.make_unavailable(&node).await.unwrap_err();
        assert!(!why.reason().is_empty());
        assert!(fixture.make_available(&node).await.is_err());
        assert!(fixture.store().is_available(&node));
    });
}

/// Each prints a `SKIPPED` note (run with `--nocapture` or look at the test
/// output: the note bypasses the capture).
#[test]
fn fault_cases_are_skipped_not_failed() {
    run(cases::an_unavailable_node_fails_every_operation_in_bounded_time::<WithoutFaults>);
    run(cases::other_nodes_keep_working_while_one_is_unavailable::<WithoutFaults>);
    run(cases::a_node_that_comes_back_is_served_again::<WithoutFaults>);
}
