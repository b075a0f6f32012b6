//! Per-node health: up or down, the last error, and counters.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use tandem_core::NodeId;

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
}

/// The live health state of one node. Operations read `up` without locking; the
/// transitions take the lock so that each one is counted exactly once.
#[derive(Debug)]
pub(crate) struct HealthState {
    up: AtomicBool,
    operations: AtomicU64,
    failures: AtomicU64,
    refused_while_down: AtomicU64,
    /// Operations answered, and their total latency in microseconds.
    answered: AtomicU64,
    answered_micros: AtomicU64,
    detail: Mutex<Detail>,
}

#[derive(Debug, Default)]
struct Detail {
    down_since: Option<SystemTime>,
    last_error: Option<(String, SystemTime)>,
    marked_down: u64,
    marked_up: u64,
}

impl HealthState {
    /// A node that is up and has seen nothing yet.
    pub(crate) fn new() -> HealthState {
        HealthState {
            up: AtomicBool::new(true),
            operations: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            refused_while_down: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            answered_micros: AtomicU64::new(0),
            detail: Mutex::new(Detail::default()),
        }
    }

    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    pub(crate) fn count_operation(&self) {
        self.operations.fetch_add(1, Ordering::Relaxed);
    }

    /// Records the latency of an answered operation.
    pub(crate) fn record_latency(&self, latency: Duration) {
        self.answered.fetch_add(1, Ordering::Relaxed);
        self.answered_micros.fetch_add(
            u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    pub(crate) fn count_refused(&self) {
        self.refused_while_down.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a failed operation and remembers why it failed.
    pub(crate) fn count_failure(&self, message: String) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.remember_error(message);
    }

    /// Remembers why something (an operation or a probe) failed.
    pub(crate) fn remember_error(&self, message: String) {
        self.detail.lock().last_error = Some((message, SystemTime::now()));
    }

    /// Marks the node down; returns whether it was up until now.
    pub(crate) fn mark_down(&self) -> bool {
        let mut detail = self.detail.lock();
        let was_up = self.up.swap(false, Ordering::AcqRel);
        if was_up {
            detail.down_since = Some(SystemTime::now());
            detail.marked_down += 1;
        }
        was_up
    }

    /// Marks the node up; returns whether it was down until now.
    pub(crate) fn mark_up(&self) -> bool {
        let mut detail = self.detail.lock();
        let was_down = !self.up.swap(true, Ordering::AcqRel);
        if was_down {
            detail.down_since = None;
            detail.marked_up += 1;
        }
        was_down
    }

    pub(crate) fn snapshot(
        &self,
        id: &NodeId,
        address: &str,
        connections_opened: u64,
    ) -> NodeHealth {
        let detail = self.detail.lock();
        NodeHealth {
            id: id.clone(),
            address: address.to_owned(),
            up: self.is_up(),
            down_since: detail.down_since,
            last_error: detail.last_error.clone(),
            operations: self.operations.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            refused_while_down: self.refused_while_down.load(Ordering::Relaxed),
            marked_down: detail.marked_down,
            marked_up: detail.marked_up,
            mean_latency: match self.answered.load(Ordering::Relaxed) {
                0 => None,
                answered => Some(Duration::from_micros(
                    self.answered_micros.load(Ordering::Relaxed) / answered,
                )),
            },
            connections_opened,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(state: &HealthState) -> NodeHealth {
        state.snapshot(&NodeId::new("r1").unwrap(), "redis://127.0.0.1:6379", 3)
    }

    #[test]
    fn transitions_are_counted_once() {
        let state = HealthState::new();
        assert!(state.is_up());
        assert!(!state.mark_up(), "already up");
        assert!(state.mark_down());
        assert!(!state.mark_down(), "already down");
        assert!(!state.is_up());
        let down = snapshot(&state);
        assert!(!down.up);
        assert!(down.down_since.is_some());
        assert_eq!((down.marked_down, down.marked_up), (1, 0));

        assert!(state.mark_up());
        let up = snapshot(&state);
        assert!(up.up);
        assert_eq!(up.down_since, None);
        assert_eq!((up.marked_down, up.marked_up), (1, 1));
    }

    #[test]
    fn counters_and_last_error_are_reported() {
        let state = HealthState::new();
        state.count_operation();
        state.count_operation();
        state.count_failure("first".into());
        state.remember_error("probe".into());
        state.count_refused();
        state.record_latency(Duration::from_micros(100));
        state.record_latency(Duration::from_micros(300));
        let health = snapshot(&state);
        assert_eq!(health.mean_latency, Some(Duration::from_micros(200)));
        assert_eq!(health.id.as_str(), "r1");
        assert_eq!(health.address, "redis://127.0.0.1:6379");
        assert_eq!(
            (
                health.operations,
                health.failures,
                health.refused_while_down
            ),
            (2, 1, 1)
        );
        assert_eq!(health.last_error.unwrap().0, "probe");
        assert_eq!(health.connections_opened, 3);
    }
}
