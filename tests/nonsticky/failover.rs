//! memcached nodes restarted empty under non-sticky sessions. (Unavailable nodes are
//! tested over any store by `tandem-behaviour`'s suite.)

use std::time::Duration;

use tandem::RemoteStore;
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
