//! Reads after a node's epoch changed (a failover that lost writes, simulated with
//! `MemoryStore::fail_over`): the two copies are compared for a while, the newer one
//! is served, the older one repaired.

use super::*;
use crate::{BackupRefresh, ReplicatedCopies, TokioClock};

/// Two nodes and a manager on the system clock, and a session on `n1` holding a=1.
/// Every read touches the backup copy, so that each read costs the same.
async fn setup() -> (Arc<MemoryStore>, Manager, SessionId) {
    let store = store(&["n1", "n2"]);
    let a1 = builder(&store)
        .backup_refresh(BackupRefresh::EveryRead)
        .build()
        .unwrap();
    let id = create_on(&a1, "n1", "a", "1").await;
    settle(&a1).await;
    (store, a1, id)
}

/// Changes a to `value` a few milliseconds later, so that its last access is later.
async fn change(manager: &Manager, id: &SessionId, value: &str) {
    tokio::time::sleep(Duration::from_millis(5)).await;
    write(manager, id, "a", value).await;
    settle(manager).await;
}

/// Operations a read of `id` (load and unchanged commit) sends, background included.
async fn read_costs(store: &MemoryStore, manager: &Manager, id: &SessionId, a: &str) -> u64 {
    let before = store.operations();
    assert_eq!(read(manager, id, "a").await.as_deref(), Some(a));
    settle(manager).await;
    store.operations() - before
}

/// The primary's node fails over to a state from before the last change: the backup
/// copy is newer, and is served and written back over the primary.
#[tokio::test]
async fn an_older_primary_after_a_failover_is_detected_and_replaced() {
    let (store, a1, id) = setup().await;
    let snapshot = store.snapshot(&node("n1")).unwrap();
    change(&a1, &id, "2").await;
    assert!(store.fail_over(&node("n1"), &snapshot));

    assert_eq!(read(&a1, &id, "a").await.as_deref(), Some("2"));
    settle(&a1).await;
    assert_eq!(a1.stats().older_copies_detected, 1);
    // Written back: the copies agree again, and another server reads the newer state.
    let other = manager(&store);
    assert_eq!(read(&other, &id, "a").await.as_deref(), Some("2"));
    assert_eq!(read(&a1, &id, "a").await.as_deref(), Some("2"));
    assert_eq!(a1.stats().older_copies_detected, 1);
    assert_eq!(other.stats().older_copies_detected, 0);
}

/// The backup copy's node fails over: the primary is newer, is served, and the backup
/// copy is repaired from it.
#[tokio::test]
async fn an_older_backup_copy_after_a_failover_is_detected_and_repaired() {
    let (store, a1, id) = setup().await;
    let snapshot = store.snapshot(&node("n2")).unwrap();
    change(&a1, &id, "2").await;
    assert!(store.fail_over(&node("n2"), &snapshot));

    assert_eq!(read(&a1, &id, "a").await.as_deref(), Some("2"));
    assert_eq!(a1.stats().older_copies_detected, 1);
    assert!(repaired(&a1, 1).await, "{:?}", a1.stats());
    // Repaired: the session survives the loss of its primary with its newer state.
    store.set_node_up(&node("n1"), false);
    let moved = a1.load(Some(id.as_str())).await.unwrap();
    assert_eq!(moved.get::<String>("a").unwrap().as_deref(), Some("2"));
    drop(moved);
    store.set_node_up(&node("n1"), true);
    assert_eq!(a1.stats().older_copies_detected, 1);
}

/// Without an epoch change a read sends what it always did (a get-and-touch of the
/// primary, a touch of the backup copy); after one, also a read of the backup copy,
/// and nothing is counted when the copies agree.
#[tokio::test]
async fn the_backup_copy_is_read_only_after_an_epoch_change() {
    let (store, a1, id) = setup().await;
    assert_eq!(read_costs(&store, &a1, &id, "1").await, 2);
    assert_eq!(read_costs(&store, &a1, &id, "1").await, 2);
    // A failover that lost nothing.
    assert!(store.fail_over(&node("n1"), &store.snapshot(&node("n1")).unwrap()));
    assert_eq!(read_costs(&store, &a1, &id, "1").await, 3);
    assert_eq!(a1.stats().older_copies_detected, 0);
}

/// A primary that went back to before the session's logout does not bring it back:
/// the deletion marker beside the backup copy says it ended.
#[tokio::test]
async fn a_primary_from_before_a_logout_does_not_revive_the_session() {
    let (store, a1, id) = setup().await;
    // Another server, running before the failover (the one that ended the session
    // remembers that it did, and reads nothing).
    let other = manager(&store);
    let snapshot = store.snapshot(&node("n1")).unwrap();
    let mut session = a1.load(Some(id.as_str())).await.unwrap();
    session.invalidate();
    a1.commit(session).await.unwrap();
    settle(&a1).await;
    assert!(store.fail_over(&node("n1"), &snapshot));

    let session = other.load(Some(id.as_str())).await.unwrap();
    assert!(session.is_new(), "the ended session came back");
    drop(session);
    assert_eq!(other.stats().older_copies_detected, 1);
    // Ended again on the primary too, once the sweep wrote its tombstone.
    settle(&other).await;
    tokio::time::sleep(Duration::from_millis(120)).await;
    let tombstone = store
        .get(&node("n1"), &other.nonsticky().common.store_key(&id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(tombstone_reason(&tombstone.value), Some(EndReason::Ended));
}

/// The comparison lasts one interval after the change was seen, then reads cost what
/// they did before.
#[tokio::test(start_paused = true)]
async fn the_comparison_ends_one_interval_after_the_change() {
    let clock: Arc<dyn tandem_core::Clock> = Arc::new(TokioClock::new());
    let store = Arc::new(MemoryStore::new([node("n1"), node("n2")]).with_clock(Arc::clone(&clock)));
    let interval = Duration::from_secs(60);
    let a1 = builder(&store)
        .backup_refresh(BackupRefresh::EveryRead)
        .clock(clock)
        .max_inactive(Some(interval))
        .build()
        .unwrap();
    let id = create_on(&a1, "n1", "a", "1").await;
    settle(&a1).await;
    assert!(store.fail_over(&node("n1"), &store.snapshot(&node("n1")).unwrap()));
    let step = Duration::from_secs(20);
    for _ in 0..3 {
        assert_eq!(read_costs(&store, &a1, &id, "1").await, 3);
        tokio::time::advance(step).await;
    }
    assert_eq!(read_costs(&store, &a1, &id, "1").await, 2);
}

/// With `ReplicatedCopies::Skip` there is no second copy: an older primary after a
/// failover cannot be detected, and is served as the session.
#[tokio::test]
async fn without_a_backup_copy_an_older_primary_goes_undetected() {
    let store = Arc::new(MemoryStore::new([node("n1"), node("n2")]).with_replication(true));
    let a1 = builder(&store)
        .copies_for_replicated_nodes(ReplicatedCopies::Skip)
        .build()
        .unwrap();
    let id = create_on(&a1, "n1", "a", "1").await;
    settle(&a1).await;
    let snapshot = store.snapshot(&node("n1")).unwrap();
    change(&a1, &id, "2").await;
    assert!(store.fail_over(&node("n1"), &snapshot));
    assert_eq!(read_costs(&store, &a1, &id, "1").await, 1);
    assert_eq!(a1.stats().older_copies_detected, 0);
}
