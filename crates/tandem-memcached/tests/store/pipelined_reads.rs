//! Reads beyond a node's read exchanges wait and go out together, pipelined, against
//! a real memcached; each still gets its own answer, and failures free the exchanges.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tandem_core::{RemoteStore, StoreError, Ttl};
use tandem_testkit::{MemcachedProcess, wait_until};

use crate::common::{COMEBACK, LATE, MARGIN, TIMEOUT, beside_a_timeout, config, key, node, single};

/// What one read of the test expects back.
#[derive(Debug, Clone, Copy)]
enum Read {
    Get,
    GetAndTouch,
    Touch,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_queued_behind_a_busy_exchange_share_one_and_each_gets_its_own_answer() {
    let memcached = MemcachedProcess::start();
    let config = config()
        .with_operation_timeout(Duration::from_secs(3))
        .with_max_read_exchanges(1);
    let store = Arc::new(single(&memcached, config).await);
    let n1 = node("n1");
    const STORED: usize = 30;
    for index in 0..STORED {
        let value = format!("value of {index}: {}", "x".repeat(index));
        store
            .set(
                &n1,
                &key(&format!("k{index}")),
                value.as_bytes(),
                Ttl::Never,
            )
            .await
            .unwrap();
    }

    // While memcached is stopped the first read holds the only exchange, so every
    // other read queues; they all go out together once it answers.
    memcached.pause();
    let mut reads = tokio::task::JoinSet::new();
    let kinds = [Read::Get, Read::GetAndTouch, Read::Touch];
    // Five of the keys read were never stored.
    const READS: usize = STORED + 5;
    for index in 0..READS {
        let (store, kind) = (Arc::clone(&store), kinds[index % kinds.len()]);
        reads.spawn(async move {
            let (n1, k) = (node("n1"), key(&format!("k{index}")));
            let answer = match kind {
                Read::Get => store
                    .get(&n1, &k)
                    .await
                    .map(|item| item.map(|item| item.value)),
                Read::GetAndTouch => store
                    .get_and_touch(&n1, &k, Ttl::After(Duration::from_secs(60)))
                    .await
                    .map(|item| item.map(|item| item.value)),
                Read::Touch => store
                    .touch(&n1, &k, Ttl::After(Duration::from_secs(60)))
                    .await
                    .map(|hit| hit.then(Vec::new)),
            };
            (index, kind, answer)
        });
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    memcached.resume();
    let started = Instant::now();
    while let Some(joined) = reads.join_next().await {
        let (index, kind, answer) = joined.unwrap();
        let answer = answer.unwrap_or_else(|error| panic!("read {index} ({kind:?}): {error}"));
        let expected = (index < STORED).then(|| match kind {
            Read::Touch => Vec::new(),
            Read::Get | Read::GetAndTouch => {
                format!("value of {index}: {}", "x".repeat(index)).into_bytes()
            }
        });
        assert_eq!(answer, expected, "read {index} ({kind:?})");
    }
    println!(
        "{READS} reads answered {:?} after memcached resumed",
        started.elapsed()
    );

    let health = store.node_health(&n1).unwrap();
    assert!(health.up);
    assert_eq!(health.failures, 0);
    assert_eq!(health.operations, (STORED + READS) as u64);
    // All but the first read went out in one shared exchange.
    assert_eq!(health.coalesced_reads, (READS - 1) as u64);
    // The manager reads the same count through `node_status` (and exports it).
    let status = store.node_status().pop().unwrap();
    assert_eq!(status.coalesced_reads, health.coalesced_reads);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_queued_on_a_hung_node_time_out_and_leave_the_exchanges_free() {
    let memcached = MemcachedProcess::start();
    let store = Arc::new(single(&memcached, config().with_max_read_exchanges(1)).await);
    let (n1, k) = (node("n1"), key("k"));
    store.set(&n1, &k, b"v", Ttl::Never).await.unwrap();

    memcached.pause();
    let all = beside_a_timeout(async {
        let mut reads = tokio::task::JoinSet::new();
        for _ in 0..10 {
            let store = Arc::clone(&store);
            reads.spawn(async move { store.get(&node("n1"), &key("k")).await });
        }
        while let Some(joined) = reads.join_next().await {
            let result = joined.unwrap();
            assert!(
                matches!(result, Err(StoreError::Timeout { .. })),
                "{result:?}"
            );
        }
    })
    .await;
    println!(
        "hung node: 10 reads through one exchange failed within {:?}",
        all.took
    );
    // Together one timeout: reads that waited for the exchange in turn would each add
    // one.
    assert!(all.late() < LATE, "{}", all.timings());

    // Once the node answers again, reads go through: nothing still holds the
    // exchange.
    memcached.resume();
    assert!(
        wait_until(COMEBACK, || store.is_available(&n1))
            .await
            .is_some()
    );
    let started = Instant::now();
    let mut reads = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let store = Arc::clone(&store);
        reads.spawn(async move { store.get(&node("n1"), &key("k")).await });
    }
    while let Some(joined) = reads.join_next().await {
        let item = joined.unwrap().unwrap().expect("stored before the pause");
        assert_eq!(item.value, b"v");
    }
    // Each read succeeded, so none waited out its timeout on a held exchange (it would
    // have failed); the loose bound catches reads let through only after a long wait.
    assert!(
        started.elapsed() < TIMEOUT + MARGIN,
        "took {:?}",
        started.elapsed()
    );
}
