//! Node failures against real memcached processes: killed, paused, restarted.

use std::sync::Arc;
use std::time::Duration;

use tandem_core::{CasToken, RemoteStore, StoreError, Ttl};
use tandem_memcached::MemcachedStore;
use tandem_testkit::{MemcachedCluster, MemcachedProcess, wait_until};

use crate::common::{
    COMEBACK, LATE, PROBE_INTERVAL, TIMEOUT, beside_a_timeout, config, connect, key, node, single,
};

/// Runs every operation once on `node` and asserts each fails fast with `NodeDown`:
/// refused without touching the network (no operation sent, six counted as refused),
/// and all six together sooner than one operation timeout (measured against a timer
/// beside them, which a busy machine delays as much). Returns how long they took.
async fn assert_every_operation_refused(store: &MemcachedStore, id: &str) -> Duration {
    let (node, k, ttl) = (node(id), key("k"), Ttl::Never);
    let before = store.node_health(&node).unwrap();
    let timed = beside_a_timeout(async {
        [
            store.get(&node, &k).await.unwrap_err(),
            store.set(&node, &k, b"v", ttl).await.unwrap_err(),
            store.add(&node, &k, b"v", ttl).await.unwrap_err(),
            store
                .cas(&node, &k, b"v", ttl, CasToken(1))
                .await
                .unwrap_err(),
            store.delete(&node, &k).await.unwrap_err(),
            store.touch(&node, &k, ttl).await.unwrap_err(),
        ]
    })
    .await;
    for error in &timed.output {
        assert_eq!(*error, StoreError::NodeDown { node: node.clone() });
    }
    let after = store.node_health(&node).unwrap();
    assert_eq!(after.operations, before.operations, "nothing was sent");
    assert_eq!(after.refused_while_down, before.refused_while_down + 6);
    assert!(
        timed.took < timed.timer,
        "six refused calls: {}",
        timed.timings()
    );
    timed.took
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
    let first = beside_a_timeout(store.get(&n1, &k)).await;
    let error = first.output.as_ref().unwrap_err();
    println!(
        "killed node: first call failed after {:?} with: {error}",
        first.took
    );
    assert!(
        matches!(
            error,
            StoreError::Unreachable { .. } | StoreError::Timeout { .. }
        ),
        "{error:?}"
    );
    // At most one timeout: no retry loop of reconnects.
    assert!(first.late() < LATE, "{}", first.timings());
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
    let get = beside_a_timeout(store.get(&n1, &k)).await;
    println!(
        "paused node: get on a pooled connection failed after {:?} \
         (operation timeout {TIMEOUT:?})",
        get.took
    );
    assert_eq!(
        get.output.as_ref().unwrap_err(),
        &StoreError::Timeout {
            node: n1.clone(),
            after: TIMEOUT
        }
    );
    // One timeout: not sooner, and not a second one after it.
    assert!(get.took >= TIMEOUT, "took only {:?}", get.took);
    assert!(get.late() < LATE, "{}", get.timings());
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

    let set = beside_a_timeout(store.set(&n1, &key("first"), b"v", Ttl::Never)).await;
    println!(
        "paused node: set on a new connection failed after {:?}",
        set.took
    );
    let error = set.output.as_ref().unwrap_err();
    assert!(matches!(error, StoreError::Timeout { .. }), "{error:?}");
    // The connection and the answer share one timeout.
    assert!(set.late() < LATE, "{}", set.timings());

    // Concurrent calls on a node that is still believed up: each costs at most one
    // timeout, and together they cost one timeout, not one each.
    memcached.resume();
    assert!(
        wait_until(COMEBACK, || store.is_available(&n1))
            .await
            .is_some()
    );
    memcached.pause();
    let all = beside_a_timeout(async {
        let mut calls = tokio::task::JoinSet::new();
        for index in 0..8 {
            let store = Arc::clone(&store);
            calls.spawn(async move {
                let k = key(&format!("k{index}"));
                store.get(&node("n1"), &k).await
            });
        }
        while let Some(joined) = calls.join_next().await {
            let result = joined.unwrap();
            assert!(
                matches!(result, Err(StoreError::Timeout { .. })),
                "{result:?}"
            );
        }
    })
    .await;
    println!(
        "paused node: 8 concurrent gets all failed within {:?}",
        all.took
    );
    // Eight calls that waited for each other would take a timeout more each.
    assert!(all.late() < LATE, "{}", all.timings());
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
