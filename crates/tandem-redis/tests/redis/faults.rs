//! Servers down at startup, hung, killed and restarted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tandem_core::{
    CasOutcome, Precondition, RemoteStore, StoreError, Ttl, WriteItem, WriteOutcome,
};
use tandem_redis::RedisStore;
use tandem_testkit::{RedisOptions, RedisProcess, RedisServers, wait_until, wait_until_async};

use crate::common::{COMEBACK, LATE, TIMEOUT, config, connect, key, node};

/// Asserts that `node` comes back within [`COMEBACK`] and serves a write.
async fn assert_comes_back(store: &RedisStore, id: &str) {
    let back = wait_until(COMEBACK, || store.is_available(&node(id))).await;
    assert!(back.is_some(), "{id} not back within {COMEBACK:?}");
    println!("{id} marked up {back:?} after its server was back");
    store
        .set(&node(id), &key("after"), b"after", Ttl::Never)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_server_down_at_startup_is_marked_down_and_comes_back() {
    let servers = RedisServers::start(2);
    servers.node("r1").kill();
    let started = Instant::now();
    let store = connect(&servers.node_spec(), config()).await;
    assert!(
        started.elapsed() < TIMEOUT + LATE,
        "{:?}",
        started.elapsed()
    );
    let (r1, r2, k) = (node("r1"), node("r2"), key("k"));
    assert!(!store.is_available(&r1));
    assert!(store.is_available(&r2));
    let health = store.node_health(&r1).unwrap();
    assert!(!health.up && health.down_since.is_some());
    let (message, _) = health.last_error.unwrap();
    assert!(message.starts_with("first connection failed"), "{message}");
    assert_eq!(
        store.get(&r1, &k).await,
        Err(StoreError::NodeDown { node: r1.clone() })
    );
    store.set(&r2, &k, b"r2 works", Ttl::Never).await.unwrap();

    servers.node("r1").restart();
    assert_comes_back(&store, "r1").await;
    let health = store.node_health(&r1).unwrap();
    assert_eq!((health.marked_down, health.marked_up), (1, 1));
    assert_eq!(health.connections_opened, 1);
}

#[tokio::test]
async fn a_hung_server_costs_one_timeout_and_comes_back_after_resume() {
    let redis = RedisProcess::start();
    let store = Arc::new(connect(&redis.url(), config()).await);
    let (r1, k) = (node("r1"), key("k"));
    store.set(&r1, &k, b"kept", Ttl::Never).await.unwrap();

    redis.pause();
    // Ten concurrent operations on the hung server: each costs one timeout at most,
    // and they all end together.
    let started = Instant::now();
    let calls: Vec<_> = (0..10)
        .map(|index| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let k = crate::common::key(&format!("k{index}"));
                store.set(&node("r1"), &k, b"v", Ttl::Never).await
            })
        })
        .collect();
    for call in calls {
        let error = call.await.unwrap().unwrap_err();
        assert!(error.is_node_failure(), "{error:?}");
    }
    let took = started.elapsed();
    println!("hung server: ten concurrent sets failed after {took:?} (timeout {TIMEOUT:?})");
    assert!(took >= TIMEOUT && took < TIMEOUT + LATE, "{took:?}");
    assert!(!store.is_available(&r1));
    let refused = Instant::now();
    assert_eq!(
        store.get(&r1, &k).await,
        Err(StoreError::NodeDown { node: r1.clone() })
    );
    assert!(refused.elapsed() < Duration::from_millis(50));

    redis.resume();
    assert_comes_back(&store, "r1").await;
    assert_eq!(store.get(&r1, &k).await.unwrap().unwrap().value, b"kept");
    let health = store.node_health(&r1).unwrap();
    assert_eq!((health.marked_down, health.marked_up), (1, 1));
    assert!(health.failures >= 1);
}

#[tokio::test]
async fn a_hung_server_at_startup_costs_one_timeout() {
    let redis = RedisProcess::start();
    redis.pause();
    let started = Instant::now();
    let store = connect(&redis.url(), config()).await;
    let took = started.elapsed();
    println!("connect to a hung server took {took:?}");
    assert!(took >= TIMEOUT && took < TIMEOUT + LATE, "{took:?}");
    assert!(!store.is_available(&node("r1")));
    redis.resume();
    assert_comes_back(&store, "r1").await;
}

#[tokio::test]
async fn dropped_operations_do_not_disturb_the_connection() {
    let redis = RedisProcess::start();
    let store = Arc::new(connect(&redis.url(), config()).await);
    let r1 = node("r1");
    for index in 0..50 {
        let value = format!("value {index}");
        store
            .set(
                &r1,
                &key(&format!("k{index}")),
                value.as_bytes(),
                Ttl::Never,
            )
            .await
            .unwrap();
    }
    // Requests whose callers give up (a request dropped mid-operation) while the
    // server is stalled: their answers come later, to nobody.
    redis.pause();
    for index in 0..20 {
        let k = key(&format!("k{index}"));
        let abandoned = store.get(&r1, &k);
        assert!(
            tokio::time::timeout(Duration::from_millis(5), abandoned)
                .await
                .is_err()
        );
    }
    redis.resume();
    // Every later answer still goes to its own request, on the same connection.
    let reads: Vec<_> = (0..50)
        .map(|index| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let item = store.get(&node("r1"), &key(&format!("k{index}"))).await;
                (index, item.unwrap().unwrap().value)
            })
        })
        .collect();
    for read in reads {
        let (index, value) = read.await.unwrap();
        assert_eq!(value, format!("value {index}").into_bytes());
    }
    let health = store.node_health(&r1).unwrap();
    assert!(health.up);
    assert_eq!((health.failures, health.connections_opened), (0, 1));
}

/// Multi-threaded, as an application's runtime is: the connection's reader notices
/// the restart while this test's thread is blocked restarting the server. (An
/// operation sent in the instant between the two fails, and its node is down for a
/// probe interval.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_is_reconnected_without_a_failed_operation() {
    let redis = RedisProcess::start_with(RedisOptions::default().persistence());
    let store = connect(&redis.url(), config()).await;
    let (r1, k) = (node("r1"), key("k"));
    store.set(&r1, &k, b"saved", Ttl::Never).await.unwrap();
    let token = store.get(&r1, &k).await.unwrap().unwrap().cas;
    redis.save();

    redis.restart();
    // The old connection told the store it ended; the next operation dials anew.
    let item = store.get(&r1, &k).await.unwrap().unwrap();
    assert_eq!((item.value.as_slice(), item.cas), (&b"saved"[..], token));
    // The restarted server has no scripts cached: both ways of running one load it.
    let written = store
        .write_many(
            &r1,
            &[WriteItem {
                key: &k,
                value: b"batch",
                ttl: Ttl::Never,
                precondition: Precondition::Cas(token),
            }],
        )
        .await;
    let Ok(WriteOutcome::Stored(Some(_))) = written[0] else {
        panic!("{written:?}");
    };
    redis.restart();
    store.set(&r1, &k, b"v", Ttl::Never).await.unwrap();
    let current = store.get(&r1, &k).await.unwrap().unwrap().cas;
    assert_eq!(
        store.cas(&r1, &k, b"w", Ttl::Never, current).await,
        Ok(CasOutcome::Stored)
    );

    let health = store.node_health(&r1).unwrap();
    assert_eq!((health.failures, health.marked_down), (0, 0), "{health:?}");
    assert_eq!(health.connections_opened, 3);
}

#[tokio::test]
async fn a_killed_server_fails_fast_and_comes_back_when_restarted() {
    let redis = RedisProcess::start();
    let store = connect(&redis.url(), config()).await;
    let (r1, k) = (node("r1"), key("k"));
    store.set(&r1, &k, b"v", Ttl::Never).await.unwrap();

    redis.kill();
    let started = Instant::now();
    let error = store.get(&r1, &k).await.unwrap_err();
    println!("killed server: {error} after {:?}", started.elapsed());
    assert!(matches!(error, StoreError::Unreachable { .. }), "{error:?}");
    assert!(
        started.elapsed() < TIMEOUT,
        "no wait for a refused connection"
    );
    assert!(!store.is_available(&r1));
    // The probe keeps failing while the server is gone, and says why.
    let probed = wait_until_async(COMEBACK, || async {
        store
            .node_health(&r1)
            .unwrap()
            .last_error
            .is_some_and(|(message, _)| message.starts_with("probe failed"))
    })
    .await;
    assert!(probed.is_some());

    redis.restart();
    assert_comes_back(&store, "r1").await;
}
