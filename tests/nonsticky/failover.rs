//! Node failures under non-sticky sessions.

use std::time::{Duration, Instant};

use tandem::{CookieUpdate, LoadError, RemoteStore};
use tandem_testkit::MemcachedCluster;

use crate::common::*;

/// Creates sessions until one lands on `node`.
async fn create_on(manager: &Manager, node: &str, n: u32) -> tandem::SessionId {
    loop {
        let id = create(manager, n).await;
        if id.node() == node {
            return id;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_primary_mid_run_loses_no_session() {
    let cluster = MemcachedCluster::start(3);
    let store = connect(&cluster).await;
    let servers = [
        non_sticky(&store).build().unwrap(),
        non_sticky(&store).build().unwrap(),
    ];
    let mut sessions = Vec::new();
    for n in 0..30 {
        sessions.push((create(&servers[n % 2], 0).await, 0u32));
    }
    for round in 1..=6u32 {
        if round == 3 {
            cluster.node("n1").kill();
        }
        for (i, (id, expected)) in sessions.iter_mut().enumerate() {
            let server = &servers[(i + round as usize) % 2];
            let mut session = server.load(Some(id.as_str())).await.unwrap();
            assert!(!session.is_new(), "session {i} lost in round {round}");
            assert_eq!(
                session.get::<u32>("n").unwrap(),
                Some(*expected),
                "session {i}"
            );
            session.insert("n", &round).unwrap();
            match server.commit(session).await.unwrap().cookie {
                CookieUpdate::Keep => {}
                CookieUpdate::Set { id: moved, .. } => *id = moved,
                CookieUpdate::Clear => panic!("session {i} cleared"),
            }
            *expected = round;
        }
    }
    let relocated: u64 = servers.iter().map(|server| server.stats().relocated).sum();
    assert!(relocated > 0, "no session lived on the killed node");
    assert!(sessions.iter().all(|(id, _)| id.node() != "n1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_primary_costs_one_timeout_then_the_backup_serves() {
    let cluster = MemcachedCluster::start(2);
    let store = connect(&cluster).await;
    let a1 = non_sticky(&store).build().unwrap();
    let id = create_on(&a1, "n1", 7).await;
    settle(&a1).await;
    cluster.node("n1").pause();
    let a2 = non_sticky(&store).build().unwrap();
    let started = Instant::now();
    let session = a2.load(Some(id.as_str())).await.unwrap();
    let took = started.elapsed();
    assert!(
        took < TIMEOUT + Duration::from_millis(150),
        "load took {took:?}"
    );
    assert_eq!(session.get::<u32>("n").unwrap(), Some(7));
    assert_eq!(session.id().node(), "n2");
    let moved = new_id(a2.commit(session).await.unwrap().cookie);
    // Later requests do not wait for the hung node at all.
    let started = Instant::now();
    assert_eq!(read_n(&a1, &moved).await, Some(7));
    assert!(started.elapsed() < Duration::from_millis(50));
    cluster.node("n1").resume();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_empty_primary_is_refilled_by_the_next_change() {
    let cluster = MemcachedCluster::start(2);
    let store = connect(&cluster).await;
    let a1 = non_sticky(&store).build().unwrap();
    let id = create_on(&a1, "n1", 1).await;
    settle(&a1).await;
    cluster.node("n1").restart();
    let up = wait_until(Duration::from_secs(2), || store.is_available(&node("n1"))).await;
    assert!(up.is_some());
    // The primary misses, the backup serves, and the change is written to the primary.
    write_n(&a1, &id, 2).await;
    assert_eq!(cluster.node("n1").stats()["curr_items"], "1");
    let a2 = non_sticky(&store).build().unwrap();
    assert_eq!(read_n(&a2, &id).await, Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_node_down_requests_fail_with_a_clear_error() {
    let cluster = MemcachedCluster::start(2);
    let store = connect(&cluster).await;
    let a1 = non_sticky(&store).build().unwrap();
    let id = create(&a1, 1).await;
    settle(&a1).await;
    cluster.node("n1").kill();
    cluster.node("n2").kill();
    let started = Instant::now();
    let error = a1.load(Some(id.as_str())).await.unwrap_err();
    assert_eq!(error, LoadError::Unavailable);
    assert!(started.elapsed() < TIMEOUT * 2 + Duration::from_millis(150));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_primary_and_backup_cost_one_timeout_not_two() {
    let cluster = MemcachedCluster::start(2);
    let store = connect(&cluster).await;
    let a1 = non_sticky(&store).build().unwrap();
    let id = create(&a1, 1).await;
    settle(&a1).await;
    cluster.node("n1").pause();
    cluster.node("n2").pause();
    let started = Instant::now();
    let error = a1.load(Some(id.as_str())).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(error, LoadError::Unavailable);
    assert!(took < TIMEOUT + Duration::from_millis(100), "took {took:?}");
    cluster.node("n1").resume();
    cluster.node("n2").resume();
}

/// A change whose backup copy could not be written (its node was down) is copied
/// again from the primary once the node is back, so that a later failure of the
/// primary does not lose it. No request touches the session in between: only the
/// repair can restore the copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_copy_that_could_not_be_written_is_repaired_from_the_primary() {
    let cluster = MemcachedCluster::start(2);
    let store = connect(&cluster).await;
    let a1 = non_sticky(&store)
        .backup(tandem::BackupMode::Sync { timeout: TIMEOUT })
        .build()
        .unwrap();
    let id = create_on(&a1, "n1", 1).await;
    cluster.node("n2").kill();
    let mut session = a1.load(Some(id.as_str())).await.unwrap();
    session.insert("n", &2u32).unwrap();
    let outcome = a1.commit(session).await.unwrap();
    assert!(
        matches!(outcome.backup, tandem::BackupStatus::Failed(_)),
        "{outcome:?}"
    );
    // Back, and empty: the first copy is gone too.
    cluster.node("n2").restart();
    let repaired = wait_until(Duration::from_secs(3), || {
        a1.stats().backup_copies_repaired == 1
    })
    .await;
    assert!(repaired.is_some(), "{:?}", a1.stats());
    cluster.node("n1").kill();
    let a2 = non_sticky(&store).build().unwrap();
    assert_eq!(read_n(&a2, &id).await, Some(2));
}
