//! Per-node health: up or down, the last error, and counters.

use std::time::{Duration, SystemTime};

use tandem_core::{NodeHealthState, NodeId};

/// A snapshot of one node's health, from
/// [`RedisStore::health`](crate::RedisStore::health).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeHealth {
    /// The node id.
    pub id: NodeId,
    /// The node's URL, its password as `***`.
    pub address: String,
    /// Whether operations are sent to the node. A down node is probed in the
    /// background and comes back up when it answers.
    pub up: bool,
    /// Since when the node is down; `None` while it is up.
    pub down_since: Option<SystemTime>,
    /// The most recent failure of an operation or probe on this node, with its time.
    /// Kept after the node comes back up.
    pub last_error: Option<(String, SystemTime)>,
    /// Operations sent to the node (probes not included).
    pub operations: u64,
    /// Operations sent to the node that failed, whether or not the failure marked the
    /// node down.
    pub failures: u64,
    /// Operations refused without contacting the node because it was down.
    pub refused_while_down: u64,
    /// How often the node went from up to down.
    pub marked_down: u64,
    /// How often the node went from down to up.
    pub marked_up: u64,
    /// Mean latency of the operations the node answered; `None` before the first.
    pub mean_latency: Option<Duration>,
    /// Connections opened to the node (the first one included): one more after
    /// each reconnect, for example after a restart of the server.
    pub connections_opened: u64,
    /// The node's epoch: it changes when the node may have lost or rolled back
    /// writes it acknowledged (another master after a failover, a restarted server).
    pub epoch: u64,
    /// Writes that waited for replica acknowledgements (the durable setting,
    /// [`RedisConfig::with_wait_replicas`](crate::RedisConfig::with_wait_replicas)).
    pub waited_writes: u64,
    /// Of those, the ones that fewer replicas than asked acknowledged in time.
    pub unreplicated_writes: u64,
}

/// This store's health of `id` at `address`: the shared state's report, and the
/// store's own figures.
pub(crate) fn node_health(
    state: &NodeHealthState,
    id: &NodeId,
    address: &str,
    connections_opened: u64,
) -> NodeHealth {
    let report = state.report();
    NodeHealth {
        id: id.clone(),
        address: address.to_owned(),
        up: report.up,
        down_since: report.down_since,
        last_error: report.last_error,
        operations: report.operations,
        failures: report.failures,
        refused_while_down: report.refused_while_down,
        marked_down: report.marked_down,
        marked_up: report.marked_up,
        mean_latency: report.mean_latency,
        connections_opened,
        epoch: 0,
        waited_writes: 0,
        unreplicated_writes: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_and_the_stores_figures_are_reported() {
        let state = NodeHealthState::new();
        state.count_operation();
        assert!(state.mark_down());
        let health = node_health(
            &state,
            &NodeId::new("r1").unwrap(),
            "redis://127.0.0.1:6379",
            3,
        );
        assert_eq!(health.id.as_str(), "r1");
        assert_eq!(health.address, "redis://127.0.0.1:6379");
        assert!(!health.up && health.down_since.is_some());
        assert_eq!((health.operations, health.marked_down), (1, 1));
        assert_eq!(health.connections_opened, 3);
    }
}
