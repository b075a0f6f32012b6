//! A fixture that cannot inject faults: the failover cases stop at the fault (each
//! with a note on standard error) instead of failing, and the other cases still run.

use std::sync::Arc;
use std::time::Duration;

use tandem_behaviour::cases::{nonsticky, sticky};
use tandem_behaviour::{StoreFixture, run};
use tandem_core::{MemoryStore, NodeId, RemoteStore};

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

/// Each prints a `SKIPPED` note (run with `--nocapture` or look at the test output:
/// the note bypasses the capture).
#[test]
fn fault_cases_are_skipped_not_failed() {
    run(sticky::commits_while_a_backup_is_pending_coalesce_into_the_newest_state::<WithoutFaults>);
    run(
        sticky::sync_backup_writes_before_returning_and_a_hung_node_costs_one_timeout::<
            WithoutFaults,
        >,
    );
    run(sticky::a_session_whose_node_died_moves_to_a_live_node_losing_nothing::<WithoutFaults>);
    run(sticky::failover_nodes_take_sessions_only_when_every_regular_node_is_down::<WithoutFaults>);
    run(
        sticky::with_every_node_down_sessions_are_served_locally_and_backed_up_when_one_returns::<
            WithoutFaults,
        >,
    );
    run(nonsticky::losing_the_primary_mid_run_loses_no_session::<WithoutFaults>);
    run(
        nonsticky::an_unavailable_primary_costs_one_timeout_then_the_backup_serves::<WithoutFaults>,
    );
    run(nonsticky::with_every_node_down_requests_fail_with_a_clear_error::<WithoutFaults>);
    run(nonsticky::hung_primary_and_backup_cost_one_timeout_not_two::<WithoutFaults>);
}

/// A case without faults runs in full with such a fixture.
#[test]
fn other_cases_still_run() {
    run(sticky::graceful_shutdown_flushes_every_pending_backup::<WithoutFaults>);
}
