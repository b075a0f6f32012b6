//! Remote work on its way when a request changes the session (a backup of it, the
//! tombstone of its move away from a node), pinned down with a store that holds one
//! read or write until the test lets it go (`Misbehaving`'s gate).

use super::misbehaving::Misbehaving;
use super::*;

/// A login (`cycle_id`) committed while a backup of the old id, refused because
/// another server took the session over, reads the copy under the old id: what that
/// read finds there (the login's tombstone) says nothing of the session under its new
/// id. The session and the login's change survive, and the login's synchronous
/// backup reports them written. (The fault matrix's sticky `LoginUnderLoad` row lost
/// the victim's new session this way: the refused backup dropped the entry, already
/// re-keyed to the new id, as no longer this server's.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_during_a_refused_backup_of_the_old_id_keeps_the_session() {
    let memory = store(&["n1"]);
    let gated = Misbehaving::over(&memory);
    let sync = BackupMode::Sync {
        timeout: Duration::from_secs(10),
    };
    let a1 = SessionManager::<TextCodec>::builder(Arc::clone(&gated) as Arc<dyn RemoteStore>)
        .route(Route::new("a1").unwrap())
        .backup(sync)
        .peer_feed_interval(None)
        .build()
        .unwrap();
    let a2 = builder(&memory)
        .route(Route::new("a2").unwrap())
        .backup(sync)
        .peer_feed_interval(None)
        .build()
        .unwrap();
    let x = create(&a1, &[("n", "1")]).await;
    let x_key = a1.sticky().common.store_key(&x);
    // Two requests of the session on a1: one that writes an attribute, and the login.
    let mut request = a1.load(Some(x.as_str())).await.unwrap();
    request.insert("cart", "1").unwrap();
    let mut login = a1.load(Some(x.as_str())).await.unwrap();
    // The other server takes the session over: a1's next write of X is refused.
    let taken = a2.load(Some(x.as_str())).await.unwrap();
    assert!(!taken.is_new());
    a2.commit(taken).await.unwrap();
    // The request's backup is refused; the read of the copy that follows waits.
    gated.hold_next_read(x_key.clone());
    let committing = {
        let a1 = a1.clone();
        tokio::spawn(async move { a1.commit(request).await })
    };
    gated.reached.notified().await;
    // Meanwhile the login cycles the id; its backup waits behind the one on its way.
    login.insert("user", "victim").unwrap();
    login.cycle_id();
    let logging_in = {
        let a1 = a1.clone();
        tokio::spawn(async move { a1.commit(login).await })
    };
    // The read goes on once the login's tombstone is over X.
    for _ in 0..5_000 {
        let stored = memory.get(&node("n1"), &x_key).await.unwrap();
        if stored.is_some_and(|item| ends::tombstone_reason(&item.value).is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    gated.release.notify_one();
    committing.await.unwrap().unwrap();
    let outcome = logging_in.await.unwrap().unwrap();
    let y = match outcome.cookie {
        CookieUpdate::Set { id, .. } if id.random() != x.random() => id,
        other => panic!("the login answered {other:?}"),
    };
    assert!(
        matches!(outcome.backup, BackupStatus::Written),
        "the login's backup: {:?}",
        outcome.backup
    );
    assert_eq!(
        get(&a1, &y, "user").await.as_deref(),
        Some("victim"),
        "the session under its new id is lost"
    );
    let y_key = a1.sticky().common.store_key(&y);
    let stored = memory.get(&node("n1"), &y_key).await.unwrap();
    assert!(
        stored.is_some_and(|item| ends::tombstone_reason(&item.value).is_none()),
        "the new id has no copy in the remote tier"
    );
}

/// A session that moves back to a node it left, while the tombstone of its move away
/// is being written there (the node answers again, and the sweep's retry of the
/// tombstone is on its way), keeps its copy there: the tombstone, landing after the
/// session's own write, replaced it, and the next backup was refused and dropped the
/// session as another server's (the sticky `AllNodesDown` row of the fault matrix lost
/// a session this way, its changes reported written).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_back_while_the_tombstone_of_the_move_away_lands_keeps_the_session() {
    let memory = store(&["n1", "n2"]);
    let gated = Misbehaving::over(&memory);
    let (n1, n2) = (node("n1"), node("n2"));
    let sync = BackupMode::Sync {
        timeout: Duration::from_secs(10),
    };
    let a1 = SessionManager::<TextCodec>::builder(Arc::clone(&gated) as Arc<dyn RemoteStore>)
        .route(Route::new("a1").unwrap())
        .backup(sync)
        .retry_interval(Duration::from_millis(20))
        .peer_feed_interval(None)
        .build()
        .unwrap();
    memory.set_node_up(&n2, false);
    let first = create(&a1, &[("n", "1")]).await;
    assert_eq!(first.node(), "n1");
    // n1 goes down: the session moves to n2, the tombstone over its n1 copy waits.
    memory.set_node_up(&n2, true);
    memory.set_node_up(&n1, false);
    let second = set(&a1, &first, "n", "2").await;
    assert_eq!(second.node(), "n2");
    // n1 answers again, restarted empty, and n2 goes down: the sweep's retry of the
    // tombstone is held on its way to n1.
    let first_key = a1.sticky().common.store_key(&first);
    gated.hold_next_write(first_key.clone());
    memory.clear_node(&n1);
    memory.set_node_up(&n1, true);
    memory.set_node_up(&n2, false);
    gated.reached.notified().await;
    // The session moves back to n1 meanwhile.
    let moving_back = {
        let (a1, second) = (a1.clone(), second.clone());
        tokio::spawn(async move { set(&a1, &second, "n", "3").await })
    };
    // Its copy lands on n1 before the tombstone does (or waits for it).
    for _ in 0..300 {
        if moving_back.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    gated.release.notify_one();
    let third = moving_back.await.unwrap();
    assert_eq!(third.node(), "n1");
    // The retry's write of the tombstone is done.
    for _ in 0..1_000 {
        if !a1.sticky().common.ends.is_writing(&n1, &first_key) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(!a1.sticky().common.ends.is_writing(&n1, &first_key));
    let fourth = set(&a1, &third, "n", "4").await;
    assert_eq!(get(&a1, &fourth, "n").await.as_deref(), Some("4"));
    assert_eq!(a1.stats().ownership_lost, 0, "the session was dropped");
    let stored = memory
        .get(&n1, &a1.sticky().common.store_key(&fourth))
        .await;
    assert!(
        stored
            .unwrap()
            .is_some_and(|item| ends::tombstone_reason(&item.value).is_none()),
        "the session's copy on n1 is a tombstone"
    );
}

/// Sets `name` in a request of its own; its synchronous backup must be written.
/// Returns the id the client holds afterwards.
async fn set(
    manager: &SessionManager<TextCodec>,
    id: &SessionId,
    name: &str,
    value: &str,
) -> SessionId {
    let mut session = manager.load(Some(id.as_str())).await.unwrap();
    assert!(!session.is_new(), "{name} = {value}: the session is lost");
    session.insert(name, value).unwrap();
    let outcome = manager.commit(session).await.unwrap();
    assert!(
        matches!(outcome.backup, BackupStatus::Written),
        "{name} = {value}: {:?}",
        outcome.backup
    );
    match outcome.cookie {
        CookieUpdate::Set { id, .. } => id,
        _ => id.clone(),
    }
}
