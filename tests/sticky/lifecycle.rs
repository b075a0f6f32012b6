//! The request lifecycle: local hits, backups (async, coalesced, sync), shutdown.

use std::time::{Duration, Instant};

use tandem::{BackupMode, BackupStatus, CookieUpdate, RemoteStore};
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
async fn a_changed_session_is_backed_up_and_an_unchanged_one_is_not_rewritten() {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let a1 = server(&store, "a1").build().unwrap();
    let id = create(&a1, 1).await;
    settle(&a1).await;
    write_n(&a1, &id, 1).await; // the same value: not a change
    write_n(&a1, &id, 2).await;
    settle(&a1).await;
    assert_eq!(a1.stats().backups_written, 2);
    assert_eq!(cluster.node("n1").stats()["cmd_set"], "2");

    // Another server loads what a1 backed up.
    let a2 = server(&store, "a2").build().unwrap();
    assert_eq!(read_n(&a2, &id).await, Some(2));
    assert_eq!(a2.stats().loaded_remote, 1);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_while_a_backup_is_pending_coalesce_into_the_newest_state() {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let a1 = server(&store, "a1").backup_concurrency(1).build().unwrap();
    let id = create(&a1, 0).await;
    settle(&a1).await;

    // A hung node holds the first write; the next commits must neither wait for it
    // nor queue a write each.
    cluster.node("n1").pause();
    let mut slowest = Duration::ZERO;
    for n in 1..=20 {
        let started = Instant::now();
        write_n(&a1, &id, n).await;
        slowest = slowest.max(started.elapsed());
    }
    assert!(
        slowest < Duration::from_millis(50),
        "a commit waited {slowest:?}"
    );
    let coalesced = a1.stats().backups_coalesced;
    assert!(coalesced >= 18, "only {coalesced} of 20 commits coalesced");

    // The held write times out, which marks the node down; the newest state waits.
    let failed = wait_until(Duration::from_secs(2), || a1.stats().backups_failed >= 1).await;
    assert!(failed.is_some(), "the write to the hung node did not fail");
    assert!(a1.pending_backups() >= 1, "the newest state is not pending");
    cluster.node("n1").resume();
    settle(&a1).await;
    let a2 = server(&store, "a2").build().unwrap();
    assert_eq!(read_n(&a2, &id).await, Some(20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_backup_writes_before_returning_and_a_hung_node_costs_one_timeout() {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let sync = BackupMode::Sync {
        timeout: Duration::from_millis(300),
    };
    let a1 = server(&store, "a1").backup(sync).build().unwrap();
    let mut session = a1.load(None).await.unwrap();
    session.insert("n", &1u32).unwrap();
    let outcome = a1.commit(session).await.unwrap();
    assert_eq!(outcome.backup, BackupStatus::Written);
    let id = new_id(outcome.cookie);
    // Written already: the copy is in memcached without waiting. (Read directly: a
    // request on another server would take the session over.)
    let key = tandem::KeyPrefix::new("tandem:")
        .unwrap()
        .key(tandem::model::KeySpace::Session, &id);
    assert!(store.get(&node("n1"), &key).await.unwrap().is_some());

    let mut session = a1.load(Some(id.as_str())).await.unwrap();
    session.insert("n", &2u32).unwrap();
    cluster.node("n1").pause();
    let started = Instant::now();
    let outcome = a1.commit(session).await.unwrap();
    let took = started.elapsed();
    assert!(
        matches!(outcome.backup, BackupStatus::Failed(_)),
        "{outcome:?}"
    );
    assert!(
        took < TIMEOUT + Duration::from_millis(150),
        "commit took {took:?}"
    );
    // The failed backup is retried once the node is back.
    cluster.node("n1").resume();
    settle(&a1).await;
    let a3 = server(&store, "a3").build().unwrap();
    assert_eq!(read_n(&a3, &id.with_route(None)).await, Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_flushes_every_pending_backup() {
    let cluster = MemcachedCluster::start(2);
    let store = connect(&cluster).await;
    let a1 = server(&store, "a1").build().unwrap();
    let mut ids = Vec::new();
    for n in 0..100 {
        ids.push(create(&a1, n).await);
    }
    let report = a1.shutdown(Duration::from_secs(5)).await;
    assert_eq!(report.unsaved, 0);
    drop(a1);

    let restarted = server(&store, "a1").build().unwrap();
    for (n, id) in ids.iter().enumerate() {
        assert_eq!(read_n(&restarted, id).await, Some(n as u32), "session {id}");
    }
    assert_eq!(restarted.stats().loaded_remote, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidation_and_cycle_id_end_the_old_remote_copy() {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let a1 = server(&store, "a1").build().unwrap();
    let id = create(&a1, 7).await;
    settle(&a1).await;
    let key = |id: &tandem::SessionId| {
        tandem::KeyPrefix::new("tandem:")
            .unwrap()
            .key(tandem::model::KeySpace::Session, id)
    };
    // What memcached holds under an id: a session, a tombstone, or nothing.
    let stored = async |id: &tandem::SessionId| {
        store
            .get(&node("n1"), &key(id))
            .await
            .unwrap()
            .map(|item| item.value)
    };

    let mut session = a1.load(Some(id.as_str())).await.unwrap();
    session.cycle_id();
    let cycled = new_id(a1.commit(session).await.unwrap().cookie);
    settle(&a1).await;
    // The commit waited for the old copy's tombstone.
    let old = stored(&id).await.expect("a tombstone");
    assert!(old.starts_with(b"\xfftandem:ended:"), "{old:?}");
    assert_eq!(a1.stats().tombstones_written, 1);
    let a2 = server(&store, "a2").build().unwrap();
    assert_eq!(read_n(&a2, &id).await, None, "the old id still loads");
    assert_eq!(read_n(&a2, &cycled).await, Some(7));

    let mut session = a1.load(Some(cycled.as_str())).await.unwrap();
    session.invalidate();
    assert_eq!(
        a1.commit(session).await.unwrap().cookie,
        CookieUpdate::Clear
    );
    let ended = stored(&cycled).await.expect("a tombstone");
    assert!(ended.starts_with(b"\xfftandem:ended:"), "{ended:?}");
    let a3 = server(&store, "a3").build().unwrap();
    assert_eq!(read_n(&a3, &cycled).await, None, "the invalidated id loads");
    assert_eq!(read_n(&a2, &cycled).await, None, "the invalidated id loads");
}
