//! The bound on connections per node against a real memcached: operations beyond it
//! wait for a connection instead of dialing more, the wait counts against the
//! operation timeout, and reads and writes share the connections without deadlock.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tandem_core::{Precondition, RemoteStore, StoreError, Ttl, WriteOutcome};
use tandem_memcached::{MemcachedConfig, MemcachedStore};
use tandem_testkit::{MemcachedProcess, wait_until};

use crate::common::{MARGIN, TIMEOUT, config, key, node, single};

/// The connection limit of the tests.
const MAX_CONNECTIONS: usize = 2;
/// How many operations a burst runs at once.
const BURST: usize = 50;

fn limited() -> MemcachedConfig {
    config()
        .with_max_read_exchanges(1)
        .with_max_connections(MAX_CONNECTIONS)
}

/// memcached's `stats` over one connection kept open, so that the test adds exactly
/// one connection to the counts it reads.
struct Stats {
    connection: BufReader<TcpStream>,
}

impl Stats {
    fn connect(memcached: &MemcachedProcess) -> Stats {
        let stream = TcpStream::connect(memcached.addr()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Stats {
            connection: BufReader::new(stream),
        }
    }

    fn read(&mut self) -> HashMap<String, String> {
        self.connection.get_mut().write_all(b"stats\r\n").unwrap();
        let mut stats = HashMap::new();
        let mut line = String::new();
        loop {
            line.clear();
            assert!(self.connection.read_line(&mut line).unwrap() > 0, "closed");
            let mut parts = line.trim_end().splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("END"), None, None) => return stats,
                (Some("STAT"), Some(name), Some(value)) => {
                    stats.insert(name.to_owned(), value.to_owned());
                }
                _ => panic!("unexpected stats line {line:?}"),
            }
        }
    }

    fn count(&mut self, name: &str) -> u64 {
        self.read()[name].parse().unwrap()
    }
}

/// Runs operation `index` of burst `round`: writes and reads of every kind, so that
/// reads queue behind a read exchange and wait for connections the writes hold.
/// Returns what went wrong, if anything.
async fn burst_operation(store: &MemcachedStore, round: usize, index: usize) -> Result<(), String> {
    let (n1, ttl) = (node("n1"), Ttl::After(Duration::from_secs(60)));
    let own = key(&format!("burst{round}:{index}"));
    let outcome = match index % 5 {
        0 => store.set(&n1, &own, b"set", ttl).await.map(|()| true),
        1 => store
            .write(&n1, &own, b"added", ttl, Precondition::Absent)
            .await
            .map(|outcome| matches!(outcome, WriteOutcome::Stored(Some(_)))),
        2 => store
            .append(&n1, &key("feed"), format!("{index:08}").as_bytes(), ttl)
            .await
            .map(|()| true),
        3 => store
            .get(&n1, &key("stored"))
            .await
            .map(|item| item.is_some_and(|item| item.value == b"stored")),
        _ => store
            .get_with_ttl(&n1, &key("stored"))
            .await
            .map(|item| item.is_some()),
    };
    match outcome {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!("operation {index}: a wrong answer")),
        Err(error) => Err(format!("operation {index}: {error}")),
    }
}

/// Starts burst `round` of [`BURST`] operations on `store` at once.
fn start_burst(
    store: &Arc<MemcachedStore>,
    round: usize,
) -> tokio::task::JoinSet<Result<(), String>> {
    let mut operations = tokio::task::JoinSet::new();
    for index in 0..BURST {
        let store = Arc::clone(store);
        operations.spawn(async move { burst_operation(&store, round, index).await });
    }
    operations
}

async fn assert_all_succeed(mut operations: tokio::task::JoinSet<Result<(), String>>) {
    while let Some(joined) = operations.join_next().await {
        joined.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_waits_for_the_limited_connections_instead_of_dialing_more() {
    let memcached = MemcachedProcess::start();
    // Long enough that no operation of the burst times out on a busy machine.
    let config = limited().with_operation_timeout(Duration::from_secs(5));
    let store = Arc::new(single(&memcached, config).await);
    let n1 = node("n1");
    store
        .set(&n1, &key("stored"), b"stored", Ttl::Never)
        .await
        .unwrap();
    let mut stats = Stats::connect(&memcached);
    let dialed_before = stats.count("total_connections");

    // While memcached is stopped, the first operations hold both connections and all
    // the others are in flight at once, waiting.
    memcached.pause();
    let burst = start_burst(&store, 0);
    let waited = wait_until(Duration::from_secs(2), || {
        store.node_health(&n1).unwrap().connection_waits > 0
    })
    .await;
    assert!(waited.is_some(), "no operation waited for a connection");
    memcached.resume();
    assert_all_succeed(burst).await;

    let health = store.node_health(&n1).unwrap();
    assert!(health.up && health.failures == 0, "{health:?}");
    let status = store.node_status().pop().unwrap();
    assert_eq!(status.connection_waits, health.connection_waits);
    println!(
        "{BURST} operations through {MAX_CONNECTIONS} connections: {} waited",
        health.connection_waits
    );
    let feed = store.get(&n1, &key("feed")).await.unwrap().unwrap().value;
    assert_eq!(feed.len(), 8 * BURST / 5, "every append landed");

    // Running bursts, with memcached counting the open connections all along: the
    // store's two and the one `stats` is read over.
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = std::thread::spawn({
        let sampling = Arc::clone(&sampling);
        move || {
            let mut most = 0;
            while sampling.load(Ordering::Relaxed) {
                most = most.max(stats.count("curr_connections"));
            }
            (most, stats)
        }
    });
    for round in 1..=3 {
        assert_all_succeed(start_burst(&store, round)).await;
    }
    sampling.store(false, Ordering::Relaxed);
    let (most_open, mut stats) = sampler.join().unwrap();
    println!("at most {most_open} connections open, the stats connection included");
    assert!(
        most_open <= MAX_CONNECTIONS as u64 + 1,
        "{most_open} connections open"
    );
    let dialed = stats.count("total_connections") - dialed_before;
    assert!(
        dialed <= MAX_CONNECTIONS as u64,
        "the store dialed {dialed} connections during the bursts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_a_connection_counts_against_the_operation_timeout() {
    let memcached = MemcachedProcess::start();
    let store = Arc::new(single(&memcached, limited()).await);
    let n1 = node("n1");
    store
        .set(&n1, &key("stored"), b"stored", Ttl::Never)
        .await
        .unwrap();

    // Two writes take both connections and hang; the reads after them find no read
    // exchange running and no connection, and the writes after them no connection.
    memcached.pause();
    let started = Instant::now();
    let mut operations = tokio::task::JoinSet::new();
    for index in 0..12 {
        let store = Arc::clone(&store);
        operations.spawn(async move {
            let (n1, k) = (node("n1"), key(&format!("k{index}")));
            let result = if index < 2 || index % 2 == 0 {
                store.set(&n1, &k, b"v", Ttl::Never).await
            } else {
                store.get(&n1, &key("stored")).await.map(|_| ())
            };
            (index, result, started.elapsed())
        });
        if index == 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    while let Some(joined) = operations.join_next().await {
        let (index, result, elapsed) = joined.unwrap();
        assert!(
            matches!(
                result,
                Err(StoreError::Timeout { .. } | StoreError::NodeDown { .. })
            ),
            "operation {index}: {result:?}"
        );
        assert!(
            elapsed < TIMEOUT + MARGIN,
            "operation {index} failed after {elapsed:?}"
        );
    }
    println!(
        "12 operations on a hung node with {MAX_CONNECTIONS} connections all failed within {:?}",
        started.elapsed()
    );
    let health = store.node_health(&n1).unwrap();
    assert!(health.connection_waits >= 1, "{health:?}");
    assert!(!health.up);

    // Nothing still holds a connection or a read exchange: once the node answers
    // again, a burst goes through.
    memcached.resume();
    let back = wait_until(Duration::from_secs(5), || store.is_available(&n1)).await;
    assert!(back.is_some(), "not marked up again");
    let started = Instant::now();
    assert_all_succeed(start_burst(&store, 0)).await;
    assert!(
        started.elapsed() < TIMEOUT + MARGIN,
        "took {:?}",
        started.elapsed()
    );
}
