//! A regression of the Redis store (Cluster) found by the Redis fault matrix: when a
//! master of the cluster died while many operations were in flight (here 100
//! clients, as in the matrix), the node was marked down and never came back, though
//! a replica took the slots over: the cluster client kept those slots on the dead
//! master, so its probes timed out for as long as the test waited. A node failure
//! now discards the cluster connection, and the probe opens a new one that reads
//! the slots afresh.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tandem::model::{NodeId, RemoteStore, StoreKey, Ttl};
use tandem::redis::{RedisConfig, RedisSpec, RedisStore};
use tandem_testkit::{RedisCluster, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_node_comes_back_once_a_replica_took_over() {
    let cluster = Arc::new(RedisCluster::start(3, 1));
    let spec = RedisSpec::parse(&cluster.url()).unwrap();
    let config = RedisConfig::default()
        .with_operation_timeout(Duration::from_millis(250))
        .with_probe_interval(Duration::from_millis(100));
    let store = Arc::new(RedisStore::connect(&spec, config).await.unwrap());
    let r1 = NodeId::new("r1").unwrap();
    let ttl = Ttl::After(Duration::from_secs(600));
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..100)
        .map(|index| {
            let (store, stop, r1) = (Arc::clone(&store), Arc::clone(&stop), r1.clone());
            tokio::spawn(async move {
                let key = StoreKey::new(&format!("tandem:k{index}")).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    let _ = store.get_and_touch(&r1, &key, ttl).await;
                    let _ = store.set(&r1, &key, b"v", ttl).await;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let failover = Arc::clone(&cluster);
    tokio::task::spawn_blocking(move || {
        let master = failover.masters()[0];
        master.kill();
        failover.wait_for_failover(master, Duration::from_secs(20));
    })
    .await
    .unwrap();
    // A few probe intervals and operation timeouts later the node must be up.
    let up = wait_until(Duration::from_secs(5), || store.is_available(&r1)).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    assert!(
        up.is_some(),
        "the node is still down 5 s after the failover: {:?}",
        store.node_health(&r1)
    );
}
