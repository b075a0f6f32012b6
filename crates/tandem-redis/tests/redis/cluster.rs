//! A Redis Cluster as one node, against real cluster nodes: keys spread over every
//! master, resharding under traffic (real `ASK` and `MOVED` redirections) without a
//! failed operation, and a master killed or hung until its replica takes over.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tandem_core::{Precondition, RemoteStore, SetItem, Ttl, WriteItem, WriteOutcome};
use tandem_testkit::{RedisCluster, RedisProcess, RedisReply, key_slot};

use crate::common::{LATE, TIMEOUT, config, connect, key, node};
use crate::sentinel::blocking;
use crate::traffic::{Traffic, cas_increment, holds};

/// Generous: a cluster failover takes a couple of seconds, more on a busy machine.
const FAILOVER: Duration = Duration::from_secs(20);

/// A counter of `INFO section` (`errorstat_MOVED:count=3`,
/// `cmdstat_asking:calls=2,...`), 0 if absent.
fn stat(node: &RedisProcess, section: &str, prefix: &str) -> u64 {
    let info = node.command(&["INFO", section]);
    info.as_str()
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix(prefix))
        .map_or(0, |count| {
            let count = count.split(',').next().unwrap();
            count.trim().parse().unwrap()
        })
}

/// `per_slot` keys in each of `slots` (`{tagN}:i`, the tag hashing to the slot).
fn keys_in(slots: &[u16], per_slot: usize) -> Vec<String> {
    slots
        .iter()
        .flat_map(|&slot| {
            let tag = (0..)
                .map(|n| format!("tag{n}"))
                .find(|tag| key_slot(tag.as_bytes()) == slot)
                .unwrap();
            (0..per_slot).map(move |n| format!("{{{tag}}}:{n}"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_keys_of_one_node_spread_over_every_master() {
    let cluster = RedisCluster::start(3, 0);
    let store = connect(&format!("r1={}", cluster.url()), config()).await;
    let r1 = node("r1");
    let keys: Vec<String> = (0..300).map(|n| format!("session:{n}")).collect();
    let values: Vec<String> = keys.iter().map(|k| format!("value of {k}")).collect();
    let store_keys: Vec<_> = keys.iter().map(|k| key(k)).collect();
    let items: Vec<SetItem<'_>> = store_keys
        .iter()
        .zip(&values)
        .map(|(k, value)| SetItem {
            key: k,
            value: value.as_bytes(),
            ttl: Ttl::Never,
        })
        .collect();
    // One call, keys of hundreds of slots on three masters.
    for result in store.set_many(&r1, &items).await {
        result.unwrap();
    }
    let masters = cluster.masters();
    assert_eq!(masters.len(), 3);
    let mut total = 0;
    for master in &masters {
        let RedisReply::Integer(count) = master.command(&["DBSIZE"]) else {
            panic!()
        };
        println!("{} holds {count} of the 300 keys", master.address());
        assert!(count > 50, "{count}");
        total += count;
    }
    assert_eq!(total, 300);
    for (k, value) in keys.iter().zip(&values) {
        assert_eq!(
            cluster.master_of_key(k).command(&["EXISTS", k]),
            RedisReply::Integer(1)
        );
        assert!(holds(&store, k, value).await, "{k}");
    }

    // write_many across slots: preconditions checked per key, on its master.
    let current = store.get(&r1, &key(&keys[0])).await.unwrap().unwrap();
    let (k0, k1, fresh) = (key(&keys[0]), key(&keys[1]), key("fresh:1"));
    let writes = [
        WriteItem {
            key: &k0,
            value: b"cas",
            ttl: Ttl::Never,
            precondition: Precondition::Cas(current.cas),
        },
        WriteItem {
            key: &k1,
            value: b"add",
            ttl: Ttl::Never,
            precondition: Precondition::Absent,
        },
        WriteItem {
            key: &fresh,
            value: b"new",
            ttl: Ttl::Never,
            precondition: Precondition::Absent,
        },
    ];
    let outcomes = store.write_many(&r1, &writes).await;
    assert!(
        matches!(outcomes[0], Ok(WriteOutcome::Stored(_))),
        "{outcomes:?}"
    );
    assert_eq!(outcomes[1], Ok(WriteOutcome::Exists));
    assert!(
        matches!(outcomes[2], Ok(WriteOutcome::Stored(_))),
        "{outcomes:?}"
    );
    assert_eq!(store.get(&r1, &k0).await.unwrap().unwrap().value, b"cas");
    assert_eq!(store.get(&r1, &fresh).await.unwrap().unwrap().value, b"new");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resharding_under_traffic_fails_no_operation() {
    let mut cluster = RedisCluster::start(3, 0);
    let new_port = cluster.add_master().port();
    let cluster = Arc::new(cluster);
    let store = Arc::new(connect(&format!("r1={}", cluster.url()), config()).await);
    let r1 = node("r1");
    let epoch = store.epoch(&r1).unwrap();
    // Counters in the slots that move (many keys per slot, so that a slot is
    // half moved for a while), each incremented by cas by one task alone.
    let first = cluster.masters()[0].port();
    let slots: Vec<u16> = cluster
        .slots_of(cluster.masters()[0])
        .into_iter()
        .flatten()
        .take(40)
        .collect();
    let counters = keys_in(&slots, 20);
    let writers = 6;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tasks: Vec<_> = (0..writers)
        .map(|writer| {
            let (store, stop) = (Arc::clone(&store), Arc::clone(&stop));
            let mine: Vec<String> = counters
                .iter()
                .skip(writer)
                .step_by(writers)
                .cloned()
                .collect();
            tokio::spawn(async move {
                let (mut done, mut failed, mut slowest) = (0u64, Vec::new(), Duration::ZERO);
                let mut last = std::collections::HashMap::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    for k in &mine {
                        let started = Instant::now();
                        match cas_increment(&store, k).await {
                            Ok(value) => {
                                last.insert(k.clone(), value);
                                done += 1;
                            }
                            Err(error) => {
                                failed.push(error);
                                // A node refused as down fails at once: do not spin.
                                tokio::time::sleep(Duration::from_millis(10)).await;
                            }
                        }
                        slowest = slowest.max(started.elapsed());
                    }
                }
                (done, failed, slowest, last)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The 40 slots to the second master, then to the new one.
    let started = Instant::now();
    let moved = {
        let cluster = Arc::clone(&cluster);
        blocking(move || {
            // Each slot half moved for a while: clients get ASK for its keys.
            let pause = Duration::from_millis(5);
            let (from, to) = (cluster.masters()[0], cluster.masters()[1]);
            let moved = cluster.migrate_slots_slowly(from, to, 40, pause);
            let new = cluster
                .nodes()
                .iter()
                .find(|n| n.port() == new_port)
                .unwrap();
            let to = cluster.masters()[1];
            cluster.migrate_slots_slowly(to, new, 40, pause);
            moved
        })
        .await
    };
    let resharding = started.elapsed();
    assert_eq!(moved, slots);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut done, mut failed, mut slowest) = (0, Vec::new(), Duration::ZERO);
    let mut last = std::collections::HashMap::new();
    for task in tasks {
        let (d, f, s, l) = task.await.unwrap();
        done += d;
        failed.extend(f);
        slowest = slowest.max(s);
        last.extend(l);
    }
    // Each ASK the client followed cost an ASKING on the importing master.
    let (ask, moved_errors) = cluster.nodes().iter().fold((0, 0), |(ask, moved), n| {
        (
            ask + stat(n, "commandstats", "cmdstat_asking:calls="),
            moved + stat(n, "errorstats", "errorstat_MOVED:count="),
        )
    });
    println!(
        "resharding 2 x 40 slots with {} keys took {resharding:?}: {done} cas increments, {} failed, slowest {slowest:?}; the servers answered ASK {ask} and MOVED {moved_errors} times",
        counters.len(),
        failed.len()
    );
    let unexpected: Vec<_> = failed
        .iter()
        .filter(|e| !matches!(e, tandem_core::StoreError::NodeDown { .. }))
        .collect();
    assert!(
        failed.is_empty(),
        "{unexpected:?} {:?}",
        store.node_health(&r1).unwrap().last_error
    );
    assert!(ask > 0 && moved_errors > 0, "no redirection?");
    assert!(slowest <= TIMEOUT, "{slowest:?}");
    // Every counter holds the last value its task wrote, on the new master.
    let new = cluster
        .nodes()
        .iter()
        .find(|n| n.port() == new_port)
        .unwrap();
    for (k, value) in &last {
        assert!(holds(&store, k, &value.to_string()).await, "{k}");
        assert_eq!(cluster.master_of_key(k).port(), new_port);
        assert_eq!(new.command(&["EXISTS", k]), RedisReply::Integer(1));
    }
    assert_ne!(first, new_port);
    assert!(store.is_available(&r1));
    let health = store.node_health(&r1).unwrap();
    assert_eq!(health.failures, 0);
    // The configuration epoch rose (each importing master took a new one), but
    // no master failed over: no write can be lost, and the epoch stays.
    let watched = Duration::from_millis(500);
    tokio::time::sleep(watched).await;
    assert_eq!(store.epoch(&r1).unwrap(), epoch);
}

/// A cluster of three masters with a replica each, a store over it and writers;
/// `fault` breaks a master, `after` repairs it once its replica took over and the
/// store serves again.
async fn master_fault(
    fault: impl FnOnce(&RedisProcess) + Send + 'static,
    after: impl FnOnce(&RedisProcess) + Send + 'static,
) {
    let cluster = Arc::new(RedisCluster::start(3, 1));
    let store = Arc::new(connect(&format!("r1={}", cluster.url()), config()).await);
    let r1 = node("r1");
    // Keys written before the fault, and replicated.
    let before: Vec<String> = (0..100).map(|n| format!("before:{n}")).collect();
    for k in &before {
        store
            .set(&r1, &key(k), k.as_bytes(), Ttl::Never)
            .await
            .unwrap();
    }
    cluster.wait_for_replication();
    let epoch = store.epoch(&r1).unwrap();
    let traffic = Traffic::start(&store, 4, "cluster");
    traffic
        .wait_for_successes(50, Duration::from_secs(5))
        .await
        .unwrap();

    let broken = Instant::now();
    let victim = cluster.master_of_key("before:0").port();
    let (heir, failover) = {
        let cluster = Arc::clone(&cluster);
        blocking(move || {
            let victim = cluster.nodes().iter().find(|n| n.port() == victim).unwrap();
            fault(victim);
            let heir = cluster.wait_for_failover(victim, FAILOVER).port();
            (heir, broken.elapsed())
        })
        .await
    };
    // Back while the old master is still dead or hung.
    let back = traffic
        .wait_for_successes(100, Duration::from_secs(10))
        .await
        .expect("the store serves again after the failover");
    let victim = cluster.nodes().iter().find(|n| n.port() == victim).unwrap();
    after(victim);
    let report = traffic.stop().await;
    println!(
        "cluster failover {failover:?}, store back {back:?} after it; {}",
        report.summary()
    );
    assert!(
        report.failure_window() <= failover + TIMEOUT * 3 + LATE,
        "{:?}",
        report.failure_window()
    );
    assert!(report.slowest() <= TIMEOUT + LATE, "{:?}", report.slowest());
    assert_eq!(cluster.master_of_key("before:0").port(), heir);
    for k in &before {
        assert!(holds(&store, k, k).await, "{k} lost");
    }
    for (k, value) in report.acknowledged_since(broken + failover) {
        assert!(holds(&store, &k, &value).await, "{k} lost");
    }
    // The store's watch reads the cluster's epoch every probe interval.
    let changed =
        tandem_testkit::wait_until(Duration::from_secs(5), || store.epoch(&r1).unwrap() > epoch)
            .await;
    assert!(changed.is_some(), "a failover, another epoch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_cluster_master_is_replaced_within_a_bounded_window() {
    master_fault(RedisProcess::kill, |_| {}).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_master_hung_past_the_node_timeout_is_replaced() {
    master_fault(RedisProcess::pause, RedisProcess::resume).await;
}
