//! Node health: status, unavailable nodes, nodes that come back.

use std::future::Future;
use std::time::{Duration, Instant};

use tandem_core::{AddOutcome, CasOutcome, NodeId, Precondition, SetItem, StoreError, WriteItem};

use crate::support::{LONG, key, make_available, make_unavailable, present, start, value};
use crate::{MARGIN, StoreFixture};

/// [`node_status`](tandem_core::RemoteStore::node_status) reports every configured node once, in
/// the order of [`nodes`](tandem_core::RemoteStore::nodes), each up and available on a fresh
/// store.
pub async fn node_status_reports_every_node<F: StoreFixture>() {
    let s = start::<F>(2).await;
    let store = &*s.store;
    let ids: Vec<NodeId> = store
        .node_status()
        .into_iter()
        .map(|status| status.id)
        .collect();
    assert_eq!(ids, store.nodes());
    for status in store.node_status() {
        assert!(status.up, "{status:?}");
        assert!(status.down_since.is_none(), "{status:?}");
        assert!(store.is_available(&status.id));
    }
}

/// [`node_epoch`](tandem_core::RemoteStore::node_epoch) stays what it was through
/// ordinary operations on every node, writes, reads, touches, deletes, failed
/// conditions: only a failover or a restart from older files may change it, and the
/// manager takes a change for one (it then rewrites or re-checks copies).
pub async fn node_epochs_stay_put_through_ordinary_operations<F: StoreFixture>() {
    let s = start::<F>(2).await;
    let (store, n1, n2, k) = (&*s.store, s.node(0), s.node(1), key("k"));
    let before = (store.node_epoch(n1), store.node_epoch(n2));
    for node in [n1, n2] {
        store.set(node, &k, b"v", LONG).await.unwrap();
        let token = present(store, node, &k).await.cas;
        assert_eq!(
            store.add(node, &k, b"w", LONG).await.unwrap(),
            AddOutcome::Exists
        );
        store.cas(node, &k, b"w", LONG, token).await.unwrap();
        assert_eq!(
            store.cas(node, &k, b"x", LONG, token).await.unwrap(),
            CasOutcome::Conflict
        );
        store
            .write(node, &k, b"y", LONG, Precondition::None)
            .await
            .unwrap();
        store.append(node, &k, b"z", LONG).await.unwrap();
        assert!(store.touch(node, &k, LONG).await.unwrap());
        store.get_and_touch(node, &k, LONG).await.unwrap();
        store.get_with_ttl(node, &k).await.unwrap();
        assert!(store.delete(node, &k).await.unwrap());
        assert!(store.get(node, &k).await.unwrap().is_none());
        assert_eq!(
            (store.node_epoch(n1), store.node_epoch(n2)),
            before,
            "an epoch changed after ordinary operations on {node}"
        );
    }
}

/// Every operation on an unavailable node fails with a node failure
/// ([`StoreError::is_node_failure`]: down, timed out or unreachable) that names the
/// node, each within the fixture's operation timeout (plus [`MARGIN`]); batches fail
/// every item. Once an operation has failed, the store no longer reports the node
/// available, in [`is_available`](tandem_core::RemoteStore::is_available) and in
/// [`node_status`](tandem_core::RemoteStore::node_status).
pub async fn an_unavailable_node_fails_every_operation_in_bounded_time<F: StoreFixture>() {
    let s = start::<F>(1).await;
    let (store, n1, k) = (&*s.store, s.node(0), key("k"));
    store.set(n1, &k, b"v", LONG).await.unwrap();
    let token = present(store, n1, &k).await.cas;
    let case = "an_unavailable_node_fails_every_operation_in_bounded_time";
    if !make_unavailable(&s, n1, case).await {
        return;
    }
    let bound = s.fixture.operation_timeout() + MARGIN;
    let failed = |error: &StoreError| check_node_failure(error, n1);

    let set_items = [SetItem {
        key: &k,
        value: b"v",
        ttl: LONG,
    }; 2];
    let write_items = [
        WriteItem {
            key: &k,
            value: b"v",
            ttl: LONG,
            precondition: Precondition::None,
        },
        WriteItem {
            key: &k,
            value: b"v",
            ttl: LONG,
            precondition: Precondition::Cas(token),
        },
    ];
    failed(&timed("get", bound, store.get(n1, &k)).await.unwrap_err());
    assert!(
        !store.is_available(n1),
        "an operation failed on the node, and the store still reports it available"
    );
    let status = store.node_status();
    assert!(
        status.iter().any(|status| status.id == *n1 && !status.up),
        "node_status reports the failed node up: {status:?}"
    );
    failed(
        &timed("set", bound, store.set(n1, &k, b"v", LONG))
            .await
            .unwrap_err(),
    );
    failed(
        &timed("add", bound, store.add(n1, &k, b"v", LONG))
            .await
            .unwrap_err(),
    );
    failed(
        &timed("cas", bound, store.cas(n1, &k, b"v", LONG, token))
            .await
            .unwrap_err(),
    );
    for precondition in [
        Precondition::None,
        Precondition::Absent,
        Precondition::Cas(token),
    ] {
        failed(
            &timed(
                "write",
                bound,
                store.write(n1, &k, b"v", LONG, precondition),
            )
            .await
            .unwrap_err(),
        );
    }
    for result in timed("set_many", bound, store.set_many(n1, &set_items)).await {
        failed(&result.unwrap_err());
    }
    for result in timed("write_many", bound, store.write_many(n1, &write_items)).await {
        failed(&result.unwrap_err());
    }
    failed(
        &timed("delete", bound, store.delete(n1, &k))
            .await
            .unwrap_err(),
    );
    failed(
        &timed("delete_if", bound, store.delete_if(n1, &k, token))
            .await
            .unwrap_err(),
    );
    failed(
        &timed("append", bound, store.append(n1, &k, b"v", LONG))
            .await
            .unwrap_err(),
    );
    failed(
        &timed("get_with_ttl", bound, store.get_with_ttl(n1, &k))
            .await
            .unwrap_err(),
    );
    failed(
        &timed("touch", bound, store.touch(n1, &k, LONG))
            .await
            .unwrap_err(),
    );
    failed(
        &timed("get_and_touch", bound, store.get_and_touch(n1, &k, LONG))
            .await
            .unwrap_err(),
    );
    assert!(!store.is_available(n1));
    make_available(&s, n1).await;
}

/// While one node is unavailable, every operation on another node works as usual,
/// and the store reports the other node available.
pub async fn other_nodes_keep_working_while_one_is_unavailable<F: StoreFixture>() {
    let s = start::<F>(2).await;
    let (store, down, up) = (&*s.store, s.node(0), s.node(1));
    let [k, fresh, batch] = ["k", "fresh", "batch"].map(key);
    store
        .set(down, &k, b"on the failed node", LONG)
        .await
        .unwrap();
    store.set(up, &k, b"v1", LONG).await.unwrap();
    let case = "other_nodes_keep_working_while_one_is_unavailable";
    if !make_unavailable(&s, down, case).await {
        return;
    }
    let bound = s.fixture.operation_timeout() + MARGIN;
    check_node_failure(
        &timed("get", bound, store.get(down, &k)).await.unwrap_err(),
        down,
    );

    assert!(
        store.is_available(up),
        "the other node is reported unavailable"
    );
    let status = store.node_status();
    assert!(
        status.iter().any(|status| status.id == *up && status.up),
        "node_status reports the other node down: {status:?}"
    );
    let item = present(store, up, &k).await;
    assert_eq!(item.value, b"v1");
    assert_eq!(
        store.cas(up, &k, b"v2", LONG, item.cas).await,
        Ok(CasOutcome::Stored)
    );
    store.set(up, &k, b"v3", LONG).await.unwrap();
    assert_eq!(
        store.add(up, &fresh, b"fresh", LONG).await,
        Ok(AddOutcome::Stored)
    );
    let results = store
        .set_many(
            up,
            &[SetItem {
                key: &batch,
                value: b"batch",
                ttl: LONG,
            }],
        )
        .await;
    assert_eq!(results, [Ok(())]);
    let results = store
        .write_many(
            up,
            &[WriteItem {
                key: &batch,
                value: b"batch2",
                ttl: LONG,
                precondition: Precondition::None,
            }],
        )
        .await;
    assert!(results[0].is_ok(), "{results:?}");
    store.append(up, &k, b"+", LONG).await.unwrap();
    assert!(store.touch(up, &k, LONG).await.unwrap());
    assert!(store.get_and_touch(up, &k, LONG).await.unwrap().is_some());
    assert!(store.get_with_ttl(up, &k).await.unwrap().is_some());
    assert_eq!(value(store, up, &k).await.unwrap(), b"v3+");
    let current = present(store, up, &fresh).await.cas;
    assert_eq!(
        store.delete_if(up, &fresh, current).await,
        Ok(CasOutcome::Stored)
    );
    assert_eq!(store.delete(up, &batch).await, Ok(true));
    assert!(store.is_available(up));
    make_available(&s, down).await;
}

/// A node that becomes available again is served again within the fixture's
/// recovery time (plus [`MARGIN`]): operations on it succeed, and the store reports
/// it available. (Whether its items survived depends on how it failed; this case
/// does not ask.)
pub async fn a_node_that_comes_back_is_served_again<F: StoreFixture>() {
    let s = start::<F>(2).await;
    let (store, n1, n2, k) = (&*s.store, s.node(0), s.node(1), key("k"));
    store.set(n1, &k, b"before", LONG).await.unwrap();
    let case = "a_node_that_comes_back_is_served_again";
    if !make_unavailable(&s, n1, case).await {
        return;
    }
    let bound = s.fixture.operation_timeout() + MARGIN;
    check_node_failure(
        &timed("get", bound, store.get(n1, &k)).await.unwrap_err(),
        n1,
    );
    assert!(!store.is_available(n1));

    make_available(&s, n1).await;
    let limit = s.fixture.recovery_time() + MARGIN;
    let started = Instant::now();
    loop {
        match store.set(n1, &k, b"after", LONG).await {
            Ok(()) => break,
            Err(error) if started.elapsed() < limit => {
                check_node_failure(&error, n1);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => panic!(
                "the node is still not served {:?} after it came back: {error}",
                started.elapsed()
            ),
        }
    }
    assert!(
        store.is_available(n1),
        "served again, but reported unavailable"
    );
    assert_eq!(value(store, n1, &k).await.unwrap(), b"after");
    let status = store.node_status();
    assert!(
        status.iter().all(|status| status.up),
        "node_status reports a node down: {status:?}"
    );
    assert!(store.is_available(n2));
    store.set(n2, &k, b"n2", LONG).await.unwrap();
    assert_eq!(value(store, n2, &k).await.unwrap(), b"n2");
}

/// Asserts that `error` says `node` is unusable, and names it.
#[track_caller]
fn check_node_failure(error: &StoreError, node: &NodeId) {
    assert!(
        error.is_node_failure(),
        "expected a node failure (down, timeout, unreachable), got {error:?}"
    );
    let named = match error {
        StoreError::NodeDown { node }
        | StoreError::Timeout { node, .. }
        | StoreError::Unreachable { node, .. } => node,
        other => panic!("not a node failure: {other:?}"),
    };
    assert_eq!(named, node, "the error names another node: {error:?}");
}

/// Runs `operation`, asserting that it ends within `bound`.
async fn timed<T>(what: &str, bound: Duration, operation: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let output = operation.await;
    let elapsed = started.elapsed();
    assert!(
        elapsed <= bound,
        "{what} on an unavailable node took {elapsed:?}, more than {bound:?}"
    );
    output
}
