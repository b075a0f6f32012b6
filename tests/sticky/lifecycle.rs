//! The request lifecycle as memcached sees it: local hits that send it nothing, and
//! backups batched into pipelined exchanges. (The manager's lifecycle over any store
//! is tested by `tandem-behaviour`'s suite.)

use std::time::{Duration, Instant};

use tandem_testkit::MemcachedCluster;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locally_held_session_costs_no_memcached_operation() {
    let cluster = MemcachedCluster::start(2);
    let store = connect(&cluster).await;
    // Without the peer feed, whose background read (once a second, whatever the
    // number of sessions) is not a request's.
    let a1 = server(&store, "a1")
        .peer_feed_interval(None)
        .build()
        .unwrap();
    let id = create(&a1, 1).await;
    settle(&a1).await;
    let before = operations(&store);
    for _ in 0..200 {
        assert_eq!(read_n(&a1, &id).await, Some(1));
    }
    assert_eq!(
        operations(&store),
        before,
        "reads of a held session hit memcached"
    );
    let stats = a1.stats();
    assert_eq!(stats.loaded_local, 200);
    assert_eq!(stats.backups_written, 1);
    assert_eq!(stats.backups_skipped_unchanged, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_backups_go_to_memcached_in_pipelined_batches() {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let a1 = server(&store, "a1")
        .backup_concurrency(1)
        .backup_linger(Duration::from_millis(20))
        // Its background reads would count as exchanges.
        .peer_feed_interval(None)
        .build()
        .unwrap();
    let before = operations(&store);
    let mut ids = Vec::new();
    for n in 0..100 {
        ids.push(create(&a1, n).await);
    }
    settle(&a1).await;
    let exchanges = operations(&store) - before;
    assert_eq!(a1.stats().backups_written, 100);
    assert_eq!(cluster.node("n1").stats()["cmd_set"], "100");
    assert!(
        exchanges <= 25,
        "100 backups took {exchanges} exchanges with memcached"
    );
    // Every batched write landed whole: another server reads each session.
    let a2 = server(&store, "a2").build().unwrap();
    for (n, id) in (0..100).zip(&ids) {
        assert_eq!(read_n(&a2, id).await, Some(n));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_lingers_for_more_backups_to_send_with_the_first() {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let linger = Duration::from_millis(300);
    let a1 = server(&store, "a1")
        .backup_linger(linger)
        // Its background reads would count as exchanges.
        .peer_feed_interval(None)
        .build()
        .unwrap();
    let before = operations(&store);
    let started = Instant::now();
    for n in 0..20 {
        create(&a1, n).await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let created_in = started.elapsed();
    settle(&a1).await;
    assert_eq!(a1.stats().backups_written, 20);
    if created_in < linger {
        assert_eq!(
            operations(&store) - before,
            1,
            "20 backups queued within the linger went out as one batch"
        );
    }
}
