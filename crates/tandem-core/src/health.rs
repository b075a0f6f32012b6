//! [`NodeHealthState`]: what a remote store keeps per node to decide where it sends
//! operations, and what it reports about them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;

/// The live health of one node of a network store: up or down, counters, the last
/// error. Operations read [`is_up`](Self::is_up) without a lock; transitions take one,
/// so that each is counted exactly once. Shared by the memcached and Redis stores, and
/// meant for any store whose nodes can fail and come back.
///
/// ```
/// use tandem_core::NodeHealthState;
///
/// let state = NodeHealthState::new();
/// state.count_operation();
/// state.count_failure("connection refused".into());
/// assert!(state.mark_down());
/// assert!(!state.mark_down(), "a transition is counted once");
/// let report = state.report();
/// assert!(!report.up);
/// assert_eq!((report.operations, report.failures, report.marked_down), (1, 1, 1));
/// ```
#[derive(Debug)]
pub struct NodeHealthState {
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

/// A snapshot of a [`NodeHealthState`]; each store adds its own figures to it in the
/// health it reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeHealthReport {
    /// Whether operations are sent to the node.
    pub up: bool,
    /// Since when the node is down; `None` while it is up.
    pub down_since: Option<SystemTime>,
    /// The most recent failure of an operation or probe, with its time; kept after
    /// the node comes back up.
    pub last_error: Option<(String, SystemTime)>,
    /// Operations sent to the node.
    pub operations: u64,
    /// Operations that failed.
    pub failures: u64,
    /// Operations refused without contacting the node because it was down.
    pub refused_while_down: u64,
    /// How often the node went from up to down.
    pub marked_down: u64,
    /// How often the node went from down to up.
    pub marked_up: u64,
    /// Mean latency of the operations the node answered; `None` before the first.
    pub mean_latency: Option<Duration>,
}

impl Default for NodeHealthState {
    fn default() -> NodeHealthState {
        NodeHealthState::new()
    }
}

impl NodeHealthState {
    /// A node that is up and has seen nothing yet.
    pub fn new() -> NodeHealthState {
        NodeHealthState {
            up: AtomicBool::new(true),
            operations: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            refused_while_down: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            answered_micros: AtomicU64::new(0),
            detail: Mutex::new(Detail::default()),
        }
    }

    /// Whether operations are sent to the node.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Counts an operation sent to the node.
    pub fn count_operation(&self) {
        self.operations.fetch_add(1, Ordering::Relaxed);
    }

    /// Records the latency of an answered operation.
    pub fn record_latency(&self, latency: Duration) {
        self.answered.fetch_add(1, Ordering::Relaxed);
        self.answered_micros.fetch_add(
            u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Counts an operation refused because the node is down.
    pub fn count_refused(&self) {
        self.refused_while_down.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a failed operation and remembers why it failed.
    pub fn count_failure(&self, message: String) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.remember_error(message);
    }

    /// Remembers why something (an operation or a probe) failed.
    pub fn remember_error(&self, message: String) {
        self.detail.lock().last_error = Some((message, SystemTime::now()));
    }

    /// Marks the node down; returns whether it was up until now.
    pub fn mark_down(&self) -> bool {
        let mut detail = self.detail.lock();
        let was_up = self.up.swap(false, Ordering::AcqRel);
        if was_up {
            detail.down_since = Some(SystemTime::now());
            detail.marked_down += 1;
        }
        was_up
    }

    /// Marks the node up; returns whether it was down until now.
    pub fn mark_up(&self) -> bool {
        let mut detail = self.detail.lock();
        let was_down = !self.up.swap(true, Ordering::AcqRel);
        if was_down {
            detail.down_since = None;
            detail.marked_up += 1;
        }
        was_down
    }

    /// The state now.
    pub fn report(&self) -> NodeHealthReport {
        let detail = self.detail.lock();
        NodeHealthReport {
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_are_counted_once() {
        let state = NodeHealthState::new();
        assert!(state.is_up());
        assert!(!state.mark_up(), "already up");
        assert!(state.mark_down());
        assert!(!state.mark_down(), "already down");
        assert!(!state.is_up());
        let down = state.report();
        assert!(!down.up);
        assert!(down.down_since.is_some());
        assert_eq!((down.marked_down, down.marked_up), (1, 0));

        assert!(state.mark_up());
        let up = state.report();
        assert!(up.up);
        assert_eq!(up.down_since, None);
        assert_eq!((up.marked_down, up.marked_up), (1, 1));
    }

    #[test]
    fn counters_and_last_error_are_reported() {
        let state = NodeHealthState::new();
        state.count_operation();
        state.count_operation();
        state.count_failure("first".into());
        state.remember_error("probe".into());
        state.count_refused();
        state.record_latency(Duration::from_micros(100));
        state.record_latency(Duration::from_micros(300));
        let report = state.report();
        assert_eq!(report.mean_latency, Some(Duration::from_micros(200)));
        assert_eq!(
            (
                report.operations,
                report.failures,
                report.refused_while_down
            ),
            (2, 1, 1)
        );
        assert_eq!(report.last_error.unwrap().0, "probe");
    }
}
