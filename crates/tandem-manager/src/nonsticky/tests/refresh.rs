//! The backup copy's expiry is slid at most once per period per server
//! ([`BackupRefresh::Throttled`](crate::BackupRefresh::Throttled)), on paused time: what each read costs, and that the
//! copy never outlives its primary.

use super::*;
use crate::TokioClock;
use tandem_core::KeySpace;

/// Operations a read of `id` (load and unchanged commit) sends, background included.
async fn read_costs(store: &MemoryStore, manager: &Manager, id: &SessionId) -> u64 {
    let before = store.operations();
    assert_eq!(read(manager, id, "a").await.as_deref(), Some("1"));
    settle(manager).await;
    store.operations() - before
}

/// How long the copy of `id` under `space` on `node` has left to live.
async fn left(
    store: &MemoryStore,
    node_id: &str,
    space: KeySpace,
    id: &SessionId,
) -> Option<Duration> {
    let key = crate::config::ManagerConfig::default()
        .prefix
        .key(space, id);
    match store.get_with_ttl(&node(node_id), &key).await.unwrap() {
        Some((_, Ttl::After(left))) => Some(left),
        Some((_, Ttl::Never)) => Some(Duration::MAX),
        None => None,
    }
}

/// Interval 80 s, so a period of 10 s. Reads right after the write cost one operation
/// (the write slid the copy); the first read 10 s after the last refresh costs two;
/// the copy never has more time left than its primary, and a session left alone after
/// reads expires with its copy gone no later than the primary.
#[tokio::test(start_paused = true)]
async fn the_backup_copy_is_slid_once_per_period_and_never_outlives_its_primary() {
    let clock: Arc<dyn tandem_core::Clock> = Arc::new(TokioClock::new());
    let store = Arc::new(MemoryStore::new([node("n1"), node("n2")]).with_clock(Arc::clone(&clock)));
    let a1 = builder(&store)
        .clock(clock)
        .max_inactive(Some(Duration::from_secs(80)))
        .build()
        .unwrap();
    let id = create_on(&a1, "n1", "a", "1").await;
    settle(&a1).await;
    let mut costs = Vec::new();
    for _ in 0..12 {
        costs.push(read_costs(&store, &a1, &id).await);
        let primary = left(&store, "n1", KeySpace::Session, &id).await.unwrap();
        let copy = left(&store, "n2", KeySpace::Backup, &id).await.unwrap();
        assert!(
            copy <= primary,
            "the copy has {copy:?} left, its primary {primary:?}"
        );
        tokio::time::advance(Duration::from_secs(3)).await;
    }
    // Reads at 0, 3, ..., 33 s after the write: refreshes at 12 s and 24 s (the first
    // reads at least 10 s after the previous one).
    assert_eq!(costs, [1, 1, 1, 1, 2, 1, 1, 1, 2, 1, 1, 1]);
    assert_eq!(a1.stats().touches, 2);
    assert_eq!(a1.stats().backup_refreshes_skipped, 10);
    // Left alone from 33 s: the copy (slid at 24 s) is gone at 111 s, 2 s before the
    // primary, which expires 80 s after the last read.
    tokio::time::advance(Duration::from_secs(75)).await;
    assert!(left(&store, "n1", KeySpace::Session, &id).await.is_some());
    assert!(left(&store, "n2", KeySpace::Backup, &id).await.is_none());
    tokio::time::advance(Duration::from_secs(3)).await;
    assert!(left(&store, "n1", KeySpace::Session, &id).await.is_none());
    let session = a1.load(Some(id.as_str())).await.unwrap();
    assert!(session.is_new());
}
