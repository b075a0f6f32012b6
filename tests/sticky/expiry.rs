//! Expiry and the local tier's bounds: sliding expiry kept alive remotely by touches,
//! real expiry deleting the remote copy, eviction for space not deleting it.

use std::time::Duration;

use tandem::{KeyPrefix, RemoteStore, SessionId, model::KeySpace};
use tandem_testkit::MemcachedCluster;

use crate::common::*;

fn key(id: &SessionId) -> tandem::model::StoreKey {
    KeyPrefix::new("tandem:")
        .unwrap()
        .key(KeySpace::Session, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_in_use_stays_loadable_remotely_without_being_rewritten() {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let interval = Duration::from_secs(2);
    let a1 = server(&store, "a1")
        .max_inactive(Some(interval))
        .build()
        .unwrap();
    let id = create(&a1, 5).await;
    settle(&a1).await;
    // Read every second for three intervals: the remote copy (interval + 1 s slack)
    // would have expired twice over without the touches.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(read_n(&a1, &id).await, Some(5));
    }
    settle(&a1).await;
    let stats = a1.stats();
    assert_eq!(stats.backups_written, 1, "the blob was rewritten");
    assert!(stats.touches >= 4, "only {} touches", stats.touches);
    let a2 = server(&store, "a2").build().unwrap();
    assert_eq!(read_n(&a2, &id).await, Some(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_expiry_deletes_the_remote_copy() {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let a1 = server(&store, "a1")
        .max_inactive(Some(Duration::from_secs(1)))
        .build()
        .unwrap();
    let id = create(&a1, 5).await;
    settle(&a1).await;
    assert!(store.get(&node("n1"), &key(&id)).await.unwrap().is_some());
    // Expired locally after 1 s; the remote copy would live 2 s, but is ended first
    // with a tombstone, so that no server loads it again.
    let ended = wait_until(Duration::from_millis(1900), || {
        a1.stats().tombstones_written == 1
    })
    .await;
    assert!(ended.is_some(), "{:?}", a1.stats());
    let stored = store.get(&node("n1"), &key(&id)).await.unwrap().unwrap();
    assert!(stored.value.starts_with(b"\xfftandem:ended:"));
    assert_eq!(a1.stats().expired, 1);
    let a2 = server(&store, "a2").build().unwrap();
    assert_eq!(read_n(&a2, &id).await, None, "nor on another server");
    assert_eq!(
        read_n(&a1, &id).await,
        None,
        "an expired session must start over"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_swapped_out_for_space_are_reloaded_not_lost() {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let a1 = server(&store, "a1")
        .local_capacity_bytes(16 * 1024)
        .build()
        .unwrap();
    let payload = Cart {
        items: (0..40).map(|i| (format!("sku-{i:04}"), i)).collect(),
    };
    let mut ids = Vec::new();
    for n in 0..60 {
        let mut session = a1.load(None).await.unwrap();
        session.insert("n", &n).unwrap();
        session.insert("cart", &payload).unwrap();
        ids.push(new_id(a1.commit(session).await.unwrap().cookie));
    }
    settle(&a1).await;
    a1.run_pending_tasks().await;
    assert!(a1.local_sessions() < 60, "nothing was swapped out");
    assert!(a1.stats().swapped_out > 0);
    assert_eq!(a1.stats().remote_deletes, 0);
    for (n, id) in ids.iter().enumerate() {
        let session = a1.load(Some(id.as_str())).await.unwrap();
        assert!(!session.is_new(), "session {n} lost");
        assert_eq!(session.get::<u32>("n").unwrap(), Some(n as u32));
        assert_eq!(
            session.get::<Cart>("cart").unwrap().as_ref(),
            Some(&payload)
        );
        a1.commit(session).await.unwrap();
    }
    assert!(a1.stats().loaded_remote > 0);
}
