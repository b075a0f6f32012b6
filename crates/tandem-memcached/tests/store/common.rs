//! Helpers shared by the integration tests: each test starts its own memcached.
//! Polling (`wait_until`) and reading a key's TTL (`MemcachedProcess::remaining_ttl`)
//! come from `tandem-testkit`.

use std::time::{Duration, Instant};

use tandem_core::{NodeId, NodeSpec, StoreKey};
use tandem_memcached::{MemcachedConfig, MemcachedStore};
use tandem_testkit::MemcachedProcess;

/// The operation timeout of the tests: short, to keep the suite fast.
pub const TIMEOUT: Duration = Duration::from_millis(200);
/// The probe interval of the tests.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(250);
/// How long a node that answers again may take to be marked up: the first probe comes
/// one probe interval after the failure, and one that started just before the node
/// came back may still fail, which costs one more interval.
pub const COMEBACK: Duration = PROBE_INTERVAL
    .saturating_add(TIMEOUT)
    .saturating_mul(2)
    .saturating_add(Duration::from_millis(500));
/// What a call may take beyond what it waits by design (one operation timeout on a
/// paused node, nothing on a node known to be down): generous, as the machine running
/// the tests may be busy with other builds, so that only a call that waits several
/// timeouts more than it should (a retry loop, calls that wait for each other) fails
/// a test. Where a test must tell one timeout from two, it counts operations or
/// compares calls with each other instead of timing against this.
pub const MARGIN: Duration = Duration::from_secs(1);

pub fn config() -> MemcachedConfig {
    MemcachedConfig::default()
        .with_operation_timeout(TIMEOUT)
        .with_probe_interval(PROBE_INTERVAL)
}

pub fn node(id: &str) -> NodeId {
    NodeId::new(id).unwrap()
}

pub fn key(text: &str) -> StoreKey {
    StoreKey::new(text).unwrap()
}

pub async fn connect(spec: &str, config: MemcachedConfig) -> MemcachedStore {
    MemcachedStore::connect(&NodeSpec::parse(spec).unwrap(), config)
        .await
        .unwrap()
}

/// A store whose only node `n1` is `memcached`.
pub async fn single(memcached: &MemcachedProcess, config: MemcachedConfig) -> MemcachedStore {
    connect(&format!("n1:{}", memcached.address()), config).await
}

/// How much later than a timer of one operation timeout started beside it a call that
/// costs one timeout may return: its own work after the timeout fired (half a timeout,
/// far more than that work takes). A call that waits one timeout more than it should
/// (a retry, a second attempt on a new connection, calls that wait for each other)
/// returns a whole timeout later.
pub const LATE: Duration = Duration::from_millis(100);

/// How long [`beside_a_timeout`] lets a call run before it fails the test: a call
/// that never returns is a failure, not a hung test.
const HANG: Duration = Duration::from_secs(10);

/// What [`beside_a_timeout`] measured.
#[derive(Debug)]
pub struct Timed<T> {
    /// What the call returned.
    pub output: T,
    /// How long the call took.
    pub took: Duration,
    /// How long a timer of one operation timeout, started at the same moment, took to
    /// fire: [`TIMEOUT`], plus whatever delayed this process meanwhile.
    pub timer: Duration,
}

impl<T> Timed<T> {
    /// How much later than the timer the call returned (zero if it returned first).
    pub fn late(&self) -> Duration {
        self.took.saturating_sub(self.timer)
    }

    /// The timings, for failure messages.
    pub fn timings(&self) -> String {
        format!(
            "took {:?}, a timer of one operation timeout ({TIMEOUT:?}) beside it {:?}",
            self.took, self.timer
        )
    }
}

/// Runs `call` beside a plain timer of one operation timeout, both started at once on
/// this task, and measures both.
///
/// For the question "does this cost one timeout, or more?" on a machine that may be
/// busy with other builds: a busy machine delays the timer as much as the call, so the
/// difference ([`Timed::late`]) still tells one timeout from two where the time alone
/// does not.
///
/// # Panics
///
/// If the call has not returned after ten seconds.
pub async fn beside_a_timeout<T>(call: impl Future<Output = T>) -> Timed<T> {
    let started = Instant::now();
    let timer = async {
        tokio::time::sleep(TIMEOUT).await;
        started.elapsed()
    };
    let call = async {
        let output = call.await;
        (output, started.elapsed())
    };
    let both = async { tokio::join!(timer, call) };
    let (timer, (output, took)) = tokio::time::timeout(HANG, both)
        .await
        .unwrap_or_else(|_| panic!("the call did not return within {HANG:?}"));
    Timed {
        output,
        took,
        timer,
    }
}
