//! memcached-specific behaviour of conditional writes and appends: tokens returned in
//! the write's own round trip, pipelined `write_many`, an append memcached refuses.
//! The `RemoteStore` contract itself is checked by the conformance suite
//! (`tests/conformance.rs`).

use std::time::{Duration, Instant};

use tandem_core::{
    CasToken, NodeId, Precondition, RemoteStore, StoreError, StoreKey, Ttl, WriteItem, WriteOutcome,
};
use tandem_memcached::MemcachedStore;
use tandem_testkit::MemcachedProcess;

use crate::common::{MARGIN, TIMEOUT, config, key, node, single};

/// The value and CAS token stored under `k`, if any.
async fn stored(store: &MemcachedStore, n1: &NodeId, k: &StoreKey) -> Option<(Vec<u8>, CasToken)> {
    let item = store.get(n1, k).await.unwrap()?;
    Some((item.value, item.cas))
}

/// The token of a `Stored(Some(_))` outcome; panics on anything else.
fn token_of(outcome: Result<WriteOutcome, StoreError>) -> CasToken {
    match outcome {
        Ok(WriteOutcome::Stored(Some(token))) => token,
        other => panic!("expected Stored with a token, got {other:?}"),
    }
}

#[tokio::test]
async fn writes_return_their_token_in_the_same_round_trip() {
    let memcached = MemcachedProcess::start();
    let store = single(&memcached, config()).await;
    let (n1, k) = (node("n1"), key("chain"));
    let ttl = Ttl::After(Duration::from_secs(60));

    let operations = store.node_health(&n1).unwrap().operations;
    let t1 = token_of(store.write(&n1, &k, b"v1", ttl, Precondition::Absent).await);
    let t2 = token_of(
        store
            .write(&n1, &k, b"v2", ttl, Precondition::Cas(t1))
            .await,
    );
    token_of(store.write(&n1, &k, b"v3", ttl, Precondition::None).await);
    assert_eq!(
        store.node_health(&n1).unwrap().operations,
        operations + 3,
        "three writes, each with its token, no read in between"
    );
    assert_ne!(t1, t2);
}

#[tokio::test]
async fn write_many_pipelines_mixed_preconditions_and_answers_each_in_order() {
    let memcached = MemcachedProcess::start();
    let store = single(&memcached, config()).await;
    let n1 = node("n1");
    let ttl = Ttl::After(Duration::from_secs(60));
    let [existing, fresh, plain, current, stale, missing, big] = [
        "existing", "fresh", "plain", "current", "stale", "missing", "big",
    ]
    .map(key);
    for k in [&existing, &current, &stale, &big] {
        store.set(&n1, k, b"before", ttl).await.unwrap();
    }
    let stale_token = store.get(&n1, &stale).await.unwrap().unwrap().cas;
    store.set(&n1, &stale, b"newer", ttl).await.unwrap();
    let current_token = store.get(&n1, &current).await.unwrap().unwrap().cas;

    let oversized = vec![b'x'; store.max_item_size() + 1];
    let item = |key, value, precondition| WriteItem {
        key,
        value,
        ttl,
        precondition,
    };
    let items = [
        item(&existing, b"lost", Precondition::Absent),
        item(&fresh, b"fresh", Precondition::Absent),
        item(&plain, b"plain", Precondition::None),
        item(&big, &oversized, Precondition::None),
        item(&current, b"swapped", Precondition::Cas(current_token)),
        item(&stale, b"lost", Precondition::Cas(stale_token)),
        item(&missing, b"lost", Precondition::Cas(stale_token)),
    ];
    let operations = store.node_health(&n1).unwrap().operations;
    let results = store.write_many(&n1, &items).await;
    // One exchange for the six that were sent.
    assert_eq!(store.node_health(&n1).unwrap().operations, operations + 1);
    assert_eq!(results.len(), items.len());
    assert_eq!(results[0], Ok(WriteOutcome::Exists));
    let fresh_token = token_of(results[1].clone());
    let plain_token = token_of(results[2].clone());
    assert!(
        matches!(results[3], Err(StoreError::TooLarge { .. })),
        "{:?}",
        results[3]
    );
    let swapped_token = token_of(results[4].clone());
    assert_eq!(results[5], Ok(WriteOutcome::Conflict));
    assert_eq!(results[6], Ok(WriteOutcome::NotFound));

    assert_eq!(
        stored(&store, &n1, &fresh).await,
        Some((b"fresh".to_vec(), fresh_token))
    );
    assert_eq!(
        stored(&store, &n1, &plain).await,
        Some((b"plain".to_vec(), plain_token))
    );
    assert_eq!(
        stored(&store, &n1, &current).await,
        Some((b"swapped".to_vec(), swapped_token))
    );
    for (k, kept) in [
        (&existing, &b"before"[..]),
        (&big, b"before"),
        (&stale, b"newer"),
    ] {
        assert_eq!(store.get(&n1, k).await.unwrap().unwrap().value, kept, "{k}");
    }
    assert_eq!(store.get(&n1, &missing).await.unwrap(), None);
    assert_eq!(store.node_health(&n1).unwrap().failures, 0);
}

#[tokio::test]
async fn write_many_on_a_paused_node_fails_every_item_within_the_timeout() {
    let memcached = MemcachedProcess::start();
    let store = single(&memcached, config()).await;
    let n1 = node("n1");
    let keys = ["a", "b", "c"].map(key);
    store.set(&n1, &keys[0], b"warm", Ttl::Never).await.unwrap();
    let oversized = vec![b'x'; store.max_item_size() + 1];
    let items = [
        WriteItem {
            key: &keys[0],
            value: b"v",
            ttl: Ttl::Never,
            precondition: Precondition::None,
        },
        WriteItem {
            key: &keys[1],
            value: b"v",
            ttl: Ttl::Never,
            precondition: Precondition::Absent,
        },
        WriteItem {
            key: &keys[2],
            value: &oversized,
            ttl: Ttl::Never,
            precondition: Precondition::None,
        },
        WriteItem {
            key: &keys[2],
            value: b"v",
            ttl: Ttl::Never,
            precondition: Precondition::Cas(CasToken(1)),
        },
    ];

    memcached.pause();
    let started = Instant::now();
    let results = store.write_many(&n1, &items).await;
    let elapsed = started.elapsed();
    memcached.resume();
    assert_eq!(results.len(), items.len());
    for (index, result) in results.iter().enumerate() {
        if index == 2 {
            assert!(
                matches!(result, Err(StoreError::TooLarge { .. })),
                "{result:?}"
            );
        } else {
            assert!(
                result.as_ref().is_err_and(StoreError::is_node_failure),
                "item {index}: {result:?}"
            );
        }
    }
    assert!(elapsed < TIMEOUT + MARGIN, "took {elapsed:?}");
    assert!(!store.is_available(&n1));
}

#[tokio::test]
async fn an_append_memcached_refuses_reports_the_item_size_and_is_no_failure() {
    let memcached = MemcachedProcess::start();
    let store = single(&memcached, config()).await;
    let (n1, feed) = (node("n1"), key("feed"));
    let limit = store.max_item_size();

    let full = vec![b'x'; limit];
    store.append(&n1, &feed, &full, Ttl::Never).await.unwrap();
    let before = stored(&store, &n1, &feed).await.unwrap();
    // Sent, refused by memcached as not stored, then sized by a read.
    let error = store
        .append(&n1, &feed, &[b'y'; 1000], Ttl::Never)
        .await
        .unwrap_err();
    assert_eq!(
        error,
        StoreError::TooLarge {
            size: limit + 1000,
            limit
        }
    );
    assert_eq!(stored(&store, &n1, &feed).await.unwrap(), before);
    let health = store.node_health(&n1).unwrap();
    assert!(health.up && health.failures == 0, "{health:?}");
}
