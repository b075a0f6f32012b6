//! Node failures against real memcached processes: killed, paused, restarted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tandem_core::{CasToken, RemoteStore, StoreError, Ttl};
use tandem_testkit::{MemcachedCluster, MemcachedProcess};

use crate::common::{PROBE_INTERVAL, TIMEOUT, config, connect, key, node, single, wait_until};

/// What a failing call may take beyond the operation timeout.
const SLACK: Duration = Duration::from_millis(150);
/// A call on a node known to be down must not touch the network.
const FAST: Duration = Duration::from_millis(20);
/// How long a node that answers again may take to be marked up: the first probe comes
/// one probe interval after the failure, and one that started just before the node
/// came back may still fail, which costs one more interval.
const COMEBACK: Duration = PROBE_INTERVAL
    .saturating_add(TIMEOUT)
    .saturating_mul(2)
    .saturating_add(Duration::from_millis(500));

/// Runs every operation once on `node` and asserts each fails fast with `NodeDown`.
async fn assert_every_operation_refused(store: &impl RemoteStore, id: &str) -> Duration {
    let (node, k, ttl) = (node(id), key("k"), Ttl::Never);
    let started = Instant::now();
    let errors = [
        store.get(&node, &k).await.unwrap_err(),
        store.set(&node, &k, b"v", ttl).await.unwrap_err(),
        store.add(&node, &k, b"v", ttl).await.unwrap_err(),
        store
            .cas(&node, &k, b"v", ttl, CasToken(1))
            .await
            .unwrap_err(),
        store.delete(&node, &k).await.unwrap_err(),
        store.touch(&node, &k, ttl).await.unwrap_err(),
    ];
    let elapsed = started.elapsed();
    for error in errors {
        assert_eq!(error, StoreError::NodeDown { node: node.clone() });
    }
    assert!(elapsed < FAST, "six refused calls took {elapsed:?}");
    elapsed
}

#[tokio::test]
async fn a_killed_node_fails_within_the_timeout_then_fails_fast() {
    let cluster = MemcachedCluster::start(2);
    let store = connect(&cluster.node_spec(), config()).await;
    let (n1, n2, k) = (node("n1"), node("n2"), key("session:1"));
    for health in store.health() {
        assert!(health.up && health.down_since.is_none() && health.last_error.is_none());
        assert_eq!((health.operations, health.failures), (0, 0));
    }
    store.set(&n1, &k, b"v", Ttl::Never).await.unwrap();
    store.set(&n2, &k, b"v", Ttl::Never).await.unwrap();

    cluster.node("n1").kill();
    let started = Instant::now();
    let error = store.get(&n1, &k).await.unwrap_err();
    let failed_after = started.elapsed();
    println!("killed node: first call failed after {failed_after:?} with: {error}");
    assert!(
        matches!(
            error,
            StoreError::Unreachable { .. } | StoreError::Timeout { .. }
        ),
        "{error:?}"
    );
    assert!(failed_after < TIMEOUT + SLACK, "took {failed_after:?}");
    assert!(!store.is_available(&n1));

    let refused = assert_every_operation_refused(&store, "n1").await;
    println!("killed node: six later calls refused in {refused:?} in total");

    assert!(store.is_available(&n2), "the other node is not affected");
    assert_eq!(store.get(&n2, &k).await.unwrap().unwrap().value, b"v");

    let health = store.node_health(&n1).unwrap();
    assert!(!health.up);
    assert!(health.down_since.is_some());
    assert_eq!(health.address, cluster.node("n1").address());
    assert_eq!((health.operations, health.failures), (2, 1));
    assert_eq!(health.refused_while_down, 6);
    assert_eq!((health.marked_down, health.marked_up), (1, 0));
    assert!(health.last_error.is_some());
}

#[tokio::test]
async fn a_paused_node_costs_one_timeout_and_comes_back_after_resume() {
    let memcached = MemcachedProcess::start();
    let store = single(&memcached, config()).await;
    let (n1, k) = (node("n1"), key("session:p"));
    store.set(&n1, &k, b"kept", Ttl::Never).await.unwrap();

    memcached.pause();
    let started = Instant::now();
    let error = store.get(&n1, &k).await.unwrap_err();
    let failed_after = started.elapsed();
    println!(
        "paused node: get on a pooled connection failed after {failed_after:?} \
         (operation timeout {TIMEOUT:?})"
    );
    assert_eq!(
        error,
        StoreError::Timeout {
            node: n1.clone(),
            after: TIMEOUT
        }
    );
    assert!(failed_after >= TIMEOUT, "took only {failed_after:?}");
    assert!(failed_after < TIMEOUT + SLACK, "took {failed_after:?}");
    assert!(!store.is_available(&n1));
    assert_every_operation_refused(&store, "n1").await;

    // Still paused: the probes time out and the node stays down.
    tokio::time::sleep(PROBE_INTERVAL * 2).await;
    assert!(!store.is_available(&n1));
    let (message, _) = store.node_health(&n1).unwrap().last_error.unwrap();
    assert!(message.starts_with("probe failed"), "{message}");

    memcached.resume();
    let back = wait_until(COMEBACK, || store.is_available(&n1)).await;
    println!("paused node: marked up {back:?} after resume");
    assert!(back.is_some(), "not back within {COMEBACK:?}");
    assert_eq!(store.get(&n1, &k).await.unwrap().unwrap().value, b"kept");
    let health = store.node_health(&n1).unwrap();
    assert_eq!((health.marked_down, health.marked_up), (1, 1));
    assert!(health.up && health.down_since.is_none());
}

#[tokio::test]
async fn a_paused_node_bounds_new_connections_and_concurrent_calls() {
    let memcached = MemcachedProcess::start();
    memcached.pause();
    // No pooled connection yet: the kernel completes the handshake for the stopped
    // process, and the call hangs on the answer instead.
    let store = Arc::new(single(&memcached, config()).await);
    let n1 = node("n1");

    let started = Instant::now();
    let error = store
        .set(&n1, &key("first"), b"v", Ttl::Never)
        .await
        .unwrap_err();
    let failed_after = started.elapsed();
    println!("paused node: set on a new connection failed after {failed_after:?}");
    assert!(matches!(error, StoreError::Timeout { .. }), "{error:?}");
    assert!(failed_after < TIMEOUT + SLACK, "took {failed_after:?}");

    // Concurrent calls on a node that is still believed up: each costs at most one
    // timeout, and together they cost one timeout, not one each.
    memcached.resume();
    assert!(
        wait_until(COMEBACK, || store.is_available(&n1))
            .await
            .is_some()
    );
    memcached.pause();
    let started = Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    for index in 0..8 {
        let store = Arc::clone(&store);
        calls.spawn(async move {
            let k = key(&format!("k{index}"));
            let result = store.get(&node("n1"), &k).await;
            (result, started.elapsed())
        });
    }
    let mut slowest = Duration::ZERO;
    while let Some(joined) = calls.join_next().await {
        let (result, elapsed) = joined.unwrap();
        assert!(
            matches!(result, Err(StoreError::Timeout { .. })),
            "{result:?}"
        );
        slowest = slowest.max(elapsed);
    }
    println!("paused node: 8 concurrent gets all failed within {slowest:?}");
    assert!(slowest < TIMEOUT + SLACK, "took {slowest:?}");
    assert_eq!(store.node_health(&n1).unwrap().marked_down, 2);
}

#[tokio::test]
async fn a_restarted_node_is_marked_up_by_itself() {
    let memcached = MemcachedProcess::start();
    let store = single(&memcached, config()).await;
    let (n1, k) = (node("n1"), key("session:r"));
    store
        .set(&n1, &k, b"lost in the restart", Ttl::Never)
        .await
        .unwrap();

    memcached.kill();
    assert!(store.get(&n1, &k).await.unwrap_err().is_node_failure());
    assert!(!store.is_available(&n1));
    let operations = store.node_health(&n1).unwrap().operations;

    // While it stays down, probes fail without being counted as operations or as
    // further down transitions.
    tokio::time::sleep(PROBE_INTERVAL * 2 + PROBE_INTERVAL / 2).await;
    let health = store.node_health(&n1).unwrap();
    assert!(!health.up);
    assert_eq!(health.operations, operations);
    assert_eq!(health.marked_down, 1);
    assert!(health.last_error.unwrap().0.starts_with("probe failed"));

    memcached.restart();
    let back = wait_until(COMEBACK, || store.is_available(&n1)).await;
    println!("restarted node: marked up {back:?} after the restart, without any call");
    assert!(back.is_some(), "not back within {COMEBACK:?}");
    assert_eq!(store.node_health(&n1).unwrap().marked_up, 1);

    assert_eq!(
        store.get(&n1, &k).await.unwrap(),
        None,
        "a fresh, empty server"
    );
    store.set(&n1, &k, b"new", Ttl::Never).await.unwrap();
    assert_eq!(store.get(&n1, &k).await.unwrap().unwrap().value, b"new");
}

#[tokio::test]
async fn dropping_the_store_stops_its_probes() {
    let memcached = MemcachedProcess::start();
    let store = single(&memcached, config()).await;
    let n1 = node("n1");
    memcached.kill();
    assert!(store.get(&n1, &key("k")).await.is_err());
    drop(store);

    memcached.restart();
    let connections = |memcached: &MemcachedProcess| -> u64 {
        memcached.stats()["total_connections"].parse().unwrap()
    };
    // A live store would probe one probe interval after the failure, long after this.
    let before = connections(&memcached);
    tokio::time::sleep(PROBE_INTERVAL * 3).await;
    // Only the stats call itself connected in between: no probe did.
    assert_eq!(connections(&memcached), before + 1);
}
