//! Expiry and the local tier's bounds: sliding expiry kept alive remotely by touches,
//! real expiry ending the remote copy, eviction for space not deleting it.

use std::time::Duration;

use tandem_store_conformance::StoreFixture;

use crate::support::*;

/// A session read every second stays loadable by another server for three times its
/// interval: its remote copy is kept alive by touches, not rewritten.
pub async fn a_session_in_use_stays_loadable_remotely_without_being_rewritten<F: StoreFixture>() {
    let started = start::<F>(1).await;
    let interval = Duration::from_secs(2);
    let a1 = sticky(&started.store, "a1")
        .max_inactive(Some(interval))
        .build()
        .unwrap();
    let id = create(&a1, 5).await;
    settle(&a1).await;
    // Read every second for three intervals: the remote copy (interval + 1 s slack)
    // would have expired twice over without the touches. The sleeps are the time
    // passing, not a proof of anything.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(read_n(&a1, &id).await, Some(5));
    }
    settle(&a1).await;
    let stats = a1.stats();
    assert_eq!(stats.backups_written, 1, "the session was rewritten");
    assert!(stats.touches >= 4, "only {} touches", stats.touches);
    let a2 = sticky(&started.store, "a2").build().unwrap();
    assert_eq!(read_n(&a2, &id).await, Some(5));
}

/// A session that expires locally has its remote copy ended with a tombstone, so that
/// no server loads it again; a read of it starts a new session.
pub async fn local_expiry_deletes_the_remote_copy<F: StoreFixture>() {
    let started = start::<F>(1).await;
    let a1 = sticky(&started.store, "a1")
        .max_inactive(Some(Duration::from_secs(1)))
        .build()
        .unwrap();
    let id = create(&a1, 5).await;
    settle(&a1).await;
    assert!(started.stored(&id).await.is_some(), "no remote copy");
    // Expired locally after 1 s; the tombstone follows within a sweep.
    let ended = wait_until(Duration::from_secs(1) + SLACK, || {
        a1.stats().tombstones_written == 1
    })
    .await;
    assert!(ended.is_some(), "{:?}", a1.stats());
    let stored = started.stored(&id).await.expect("a tombstone").value;
    assert!(stored.starts_with(TOMBSTONE), "{stored:?}");
    assert_eq!(a1.stats().expired, 1);
    let a2 = sticky(&started.store, "a2").build().unwrap();
    assert_eq!(read_n(&a2, &id).await, None, "nor on another server");
    assert_eq!(
        read_n(&a1, &id).await,
        None,
        "an expired session must start over"
    );
}

/// Sessions evicted from a small local tier for space are swapped out, not lost: each
/// is reloaded whole from the store, and nothing was deleted remotely.
pub async fn sessions_swapped_out_for_space_are_reloaded_not_lost<F: StoreFixture>() {
    let started = start::<F>(1).await;
    let a1 = sticky(&started.store, "a1")
        .local_capacity_bytes(16 * 1024)
        .build()
        .unwrap();
    let payload = Cart {
        items: (0..40).map(|i| (format!("sku-{i:04}"), i)).collect(),
    };
    let mut ids = Vec::new();
    for n in 0..60u32 {
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
    for (n, id) in (0..).zip(&ids) {
        let session = a1.load(Some(id.as_str())).await.unwrap();
        assert!(!session.is_new(), "session {n} lost");
        assert_eq!(session.get::<u32>("n").unwrap(), Some(n));
        assert_eq!(
            session.get::<Cart>("cart").unwrap().as_ref(),
            Some(&payload)
        );
        a1.commit(session).await.unwrap();
    }
    assert!(a1.stats().loaded_remote > 0);
}
