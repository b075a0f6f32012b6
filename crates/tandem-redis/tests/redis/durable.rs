//! The durable setting (`RedisConfig::with_wait_replicas`): every write waits for
//! its replicas (`WAIT`) on a connection of its own, and one too few replicas
//! acknowledged in time fails (`Unreplicated::Fail`) or is only counted
//! (`Unreplicated::Proceed`); over a Sentinel group, a cluster and a standalone
//! server.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tandem_core::{RemoteStore, StoreError, Ttl};
use tandem_redis::{RedisConfig, Unreplicated};
use tandem_testkit::{RedisCluster, RedisProcess, RedisReply, RedisSentinelGroup};

use crate::common::{LATE, TIMEOUT, config, connect, key, node};

/// How long a write waits for its replicas: replicas acknowledge within a
/// millisecond or two on loopback, but a busy 2-core machine has them wait.
const WAIT: Duration = Duration::from_millis(500);

fn durable(replicas: u32) -> RedisConfig {
    config().with_wait_replicas(replicas, WAIT)
}

#[track_caller]
fn assert_stored(server: &RedisProcess, k: &str, value: &[u8]) {
    match server.command(&["GET", k]) {
        RedisReply::Bulk(stored) => assert!(stored.starts_with(value), "{stored:?}"),
        other => panic!("{k} on {}: {other:?}", server.address()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_wait_for_both_replicas_of_a_sentinel_group() {
    let group = RedisSentinelGroup::start(2, 1);
    let store = Arc::new(connect(&group.url(), durable(2).with_wait_connections(4)).await);
    let r1 = node("r1");
    for n in 0..20 {
        let k = key(&format!("k{n}"));
        store.set(&r1, &k, b"v", Ttl::Never).await.unwrap();
    }
    store.delete(&r1, &key("k0")).await.unwrap();
    let health = store.node_health(&r1).unwrap();
    assert_eq!((health.waited_writes, health.unreplicated_writes), (21, 0));
    for replica in group.replicas() {
        assert_eq!(replica.command(&["EXISTS", "k1"]), RedisReply::Integer(1));
    }

    // Many more concurrent writes than connections for them: all complete.
    let started = Instant::now();
    let writes: Vec<_> = (0..64)
        .map(|n| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let k = key(&format!("many{n}"));
                store.set(&node("r1"), &k, b"v", Ttl::Never).await
            })
        })
        .collect();
    for write in writes {
        write.await.unwrap().unwrap();
    }
    println!(
        "64 concurrent durable writes on 4 connections: {:?}",
        started.elapsed()
    );
    let health = store.node_health(&r1).unwrap();
    assert_eq!((health.waited_writes, health.unreplicated_writes), (85, 0));
    assert!(
        health.connections_opened <= 1 + 4,
        "{}",
        health.connections_opened
    );

    // One replica hung: one acknowledgement of two, in time.
    let hung = group.replicas()[0];
    hung.pause();
    let started = Instant::now();
    let error = store
        .set(&r1, &key("half"), b"half", Ttl::Never)
        .await
        .unwrap_err();
    let took = started.elapsed();
    println!("a write with one replica hung: {error} after {took:?}");
    assert_eq!(
        error,
        StoreError::Unreplicated {
            node: r1.clone(),
            acknowledged: 1,
            wanted: 2
        }
    );
    assert!(took >= WAIT && took < TIMEOUT + WAIT + LATE, "{took:?}");
    assert_stored(group.master(), "half", b"half");
    assert!(store.is_available(&r1), "the node itself is fine");
    let health = store.node_health(&r1).unwrap();
    assert_eq!((health.waited_writes, health.unreplicated_writes), (86, 1));

    // The same with Proceed: the write succeeds, and is counted.
    let proceed = connect(
        &group.url(),
        durable(2).with_unreplicated(Unreplicated::Proceed),
    )
    .await;
    proceed
        .set(&r1, &key("counted"), b"counted", Ttl::Never)
        .await
        .unwrap();
    let health = proceed.node_health(&r1).unwrap();
    assert_eq!((health.waited_writes, health.unreplicated_writes), (1, 1));
    assert_stored(group.master(), "counted", b"counted");
    hung.resume();
    store
        .set(&r1, &key("whole"), b"v", Ttl::Never)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_wait_for_the_replica_of_their_keys_master_in_a_cluster() {
    let cluster = RedisCluster::start(3, 1);
    let store = connect(&format!("r1={}", cluster.url()), durable(1)).await;
    let r1 = node("r1");
    let keys: Vec<String> = (0..30).map(|n| format!("durable:{n}")).collect();
    for k in &keys {
        store.set(&r1, &key(k), b"v", Ttl::Never).await.unwrap();
    }
    let health = store.node_health(&r1).unwrap();
    assert_eq!((health.waited_writes, health.unreplicated_writes), (30, 0));

    // The replica of one master hung: writes to that master's keys are
    // unreplicated, the others are not.
    let victim = cluster.master_of_key(&keys[0]);
    let replica = cluster
        .nodes()
        .iter()
        .find(|n| {
            matches!(n.command(&["ROLE"]), RedisReply::Array(role)
                if role[0].as_str() == Some("slave") && role[2] == RedisReply::Integer(victim.port().into()))
        })
        .unwrap();
    replica.pause();
    let (mut unreplicated, mut replicated) = (0, 0);
    for k in &keys {
        if unreplicated >= 2 && replicated >= 2 {
            break;
        }
        match store.set(&r1, &key(k), b"w", Ttl::Never).await {
            Ok(()) => {
                assert_ne!(cluster.master_of_key(k).port(), victim.port(), "{k}");
                replicated += 1;
            }
            Err(error) => {
                let health = store.node_health(&r1).unwrap();
                assert_eq!(
                    error,
                    StoreError::Unreplicated {
                        node: r1.clone(),
                        acknowledged: 0,
                        wanted: 1
                    },
                    "{health:?}"
                );
                assert_eq!(cluster.master_of_key(k).port(), victim.port(), "{k}");
                assert_stored(victim, k, b"w");
                unreplicated += 1;
            }
        }
    }
    println!("one replica hung: {unreplicated} writes unreplicated, {replicated} replicated");
    assert!(unreplicated > 0 && replicated > 0);
    let health = store.node_health(&r1).unwrap();
    assert_eq!(health.unreplicated_writes, unreplicated);
    assert!(health.up);
    replica.resume();
}

#[tokio::test]
async fn a_server_without_replicas_replicates_no_write() {
    let redis = RedisProcess::start();
    let store = connect(&redis.url(), durable(1)).await;
    let r1 = node("r1");
    for n in 0..3 {
        let k = format!("k{n}");
        let error = store
            .set(&r1, &key(&k), b"v", Ttl::Never)
            .await
            .unwrap_err();
        assert_eq!(
            error,
            StoreError::Unreplicated {
                node: r1.clone(),
                acknowledged: 0,
                wanted: 1
            }
        );
        assert_stored(&redis, &k, b"v");
    }
    let health = store.node_health(&r1).unwrap();
    assert_eq!((health.waited_writes, health.unreplicated_writes), (3, 3));
    assert!(health.up);
}
