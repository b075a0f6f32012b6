//! A stream of operations on one node while a test breaks its deployment: every
//! operation is recorded with its start, its end and its outcome, so that a test
//! can measure the window in which operations failed, the slowest one, and check
//! that what the store acknowledged is where it should be.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tandem_core::{CasOutcome, RemoteStore, StoreError, Ttl};
use tandem_redis::RedisStore;

use crate::common::{key, node};

/// One operation of the stream.
#[derive(Debug, Clone)]
pub struct Op {
    pub started: Instant,
    pub ended: Instant,
    /// The key and the value written, for a write.
    pub write: Option<(String, String)>,
    pub outcome: Result<(), StoreError>,
}

impl Op {
    pub fn took(&self) -> Duration {
        self.ended - self.started
    }
}

/// Writers that each `set` fresh keys (`{prefix}{writer}:{n}`) one after the
/// other, with a short pause between operations, on node `r1`.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    ops: Arc<Mutex<Vec<Op>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Pause between two operations of one writer: keeps a 2-core machine breathing.
const PAUSE: Duration = Duration::from_millis(5);

impl Traffic {
    pub fn start(store: &Arc<RedisStore>, writers: usize, prefix: &str) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let ops = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..writers)
            .map(|writer| {
                let (store, stop, ops) = (Arc::clone(store), Arc::clone(&stop), Arc::clone(&ops));
                let prefix = format!("{prefix}{writer}:");
                tokio::spawn(async move {
                    let r1 = node("r1");
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let (k, value) = (format!("{prefix}{n}"), format!("value {n}"));
                        let started = Instant::now();
                        let outcome = store.set(&r1, &key(&k), value.as_bytes(), Ttl::Never).await;
                        ops.lock().push(Op {
                            started,
                            ended: Instant::now(),
                            write: Some((k, value)),
                            outcome,
                        });
                        tokio::time::sleep(PAUSE).await;
                    }
                })
            })
            .collect();
        Traffic { stop, ops, tasks }
    }

    /// Stops the writers and returns every operation, in the order they ended.
    pub async fn stop(self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
        let mut ops = self.ops.lock().clone();
        ops.sort_by_key(|op| op.ended);
        Report { ops }
    }

    /// Waits until `count` more operations than now succeeded that started after
    /// this call; returns how long it took, or `None` after `limit`.
    pub async fn wait_for_successes(&self, count: usize, limit: Duration) -> Option<Duration> {
        let since = Instant::now();
        tandem_testkit::wait_until(limit, || {
            self.ops
                .lock()
                .iter()
                .filter(|op| op.started >= since && op.outcome.is_ok())
                .count()
                >= count
        })
        .await
    }
}

/// What a [`Traffic`] did.
pub struct Report {
    pub ops: Vec<Op>,
}

impl Report {
    pub fn failures(&self) -> Vec<&Op> {
        self.ops.iter().filter(|op| op.outcome.is_err()).collect()
    }

    /// From the start of the first failed operation to the end of the last one;
    /// zero without failures.
    pub fn failure_window(&self) -> Duration {
        let failures = self.failures();
        match (
            failures.iter().map(|op| op.started).min(),
            failures.iter().map(|op| op.ended).max(),
        ) {
            (Some(first), Some(last)) => last - first,
            _ => Duration::ZERO,
        }
    }

    pub fn slowest(&self) -> Duration {
        self.ops.iter().map(Op::took).max().unwrap_or_default()
    }

    /// Writes acknowledged that started after `since`.
    pub fn acknowledged_since(&self, since: Instant) -> Vec<(String, String)> {
        self.ops
            .iter()
            .filter(|op| op.started >= since && op.outcome.is_ok())
            .filter_map(|op| op.write.clone())
            .collect()
    }

    /// One line for the test's output.
    pub fn summary(&self) -> String {
        let failures = self.failures();
        let kinds: std::collections::BTreeMap<String, usize> =
            failures.iter().fold(Default::default(), |mut kinds, op| {
                let error = op.outcome.as_ref().unwrap_err();
                let kind = format!("{error:?}");
                let kind = kind.split([' ', '{', '(']).next().unwrap_or("").to_owned();
                *kinds.entry(kind).or_default() += 1;
                kinds
            });
        // One of each failure that does not say the node failed: unexpected.
        for op in &failures {
            let error = op.outcome.as_ref().unwrap_err();
            if !error.is_node_failure() {
                println!("  not a node failure: {error}");
            }
        }
        format!(
            "{} operations, {} failed {kinds:?} within {:?}, slowest {:?}",
            self.ops.len(),
            failures.len(),
            self.failure_window(),
            self.slowest()
        )
    }
}

/// Reads `key` through the store and compares it with `value`.
pub async fn holds(store: &RedisStore, k: &str, value: &str) -> bool {
    matches!(store.get(&node("r1"), &key(k)).await, Ok(Some(item)) if item.value == value.as_bytes())
}

/// A read-modify-write of `k` by `cas`, retried on a conflict; what it wrote.
pub async fn cas_increment(store: &RedisStore, k: &str) -> Result<u64, StoreError> {
    let r1 = node("r1");
    loop {
        let item = store.get(&r1, &key(k)).await?;
        let (current, token) = match item {
            Some(item) => (
                String::from_utf8(item.value)
                    .unwrap()
                    .parse::<u64>()
                    .unwrap(),
                Some(item.cas),
            ),
            None => (0, None),
        };
        let next = current + 1;
        let stored = match token {
            Some(token) => {
                store
                    .cas(&r1, &key(k), next.to_string().as_bytes(), Ttl::Never, token)
                    .await?
            }
            None => {
                match store
                    .add(&r1, &key(k), next.to_string().as_bytes(), Ttl::Never)
                    .await?
                {
                    tandem_core::AddOutcome::Stored => CasOutcome::Stored,
                    tandem_core::AddOutcome::Exists => CasOutcome::Conflict,
                }
            }
        };
        if stored == CasOutcome::Stored {
            return Ok(next);
        }
    }
}
