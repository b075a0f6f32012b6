//! Unit tests of the manager's logic over the in-process store. The same behaviour is
//! tested against real memcached processes in the facade package's `tests/`.

use std::sync::Arc;
use std::time::Duration;

use tandem_core::{
    AttributeValue, Codec, MemoryStore, NodeId, RemoteStore, Route, SessionId, StoreError,
    StoreKey, Ttl,
};

use std::sync::atomic::{AtomicBool, Ordering};

use super::entry::{LocalEntry, RemoteCopy, slide_step};
use crate::common::digest;
use crate::common::ends;
use crate::common::local_key::local_key;
use crate::testing::TextCodec;
use crate::*;

fn node(id: &str) -> NodeId {
    NodeId::new(id).unwrap()
}

fn store(nodes: &[&str]) -> Arc<MemoryStore> {
    Arc::new(MemoryStore::new(nodes.iter().map(|id| node(id))))
}

fn builder(store: &Arc<MemoryStore>) -> ManagerBuilder<TextCodec> {
    SessionManager::<TextCodec>::builder(Arc::clone(store) as Arc<dyn RemoteStore>)
        .retry_interval(Duration::from_millis(50))
}

fn new_manager(store: &Arc<MemoryStore>) -> SessionManager<TextCodec> {
    builder(store).build().unwrap()
}

/// Creates a session holding `attributes` and returns its id.
async fn create(manager: &SessionManager<TextCodec>, attributes: &[(&str, &str)]) -> SessionId {
    let mut session = manager.load(None).await.unwrap();
    for (name, value) in attributes {
        session.insert(name, *value).unwrap();
    }
    match manager.commit(session).await.unwrap().cookie {
        CookieUpdate::Set { id, .. } => id,
        other => panic!("expected a new cookie, got {other:?}"),
    }
}

async fn get(manager: &SessionManager<TextCodec>, id: &SessionId, name: &str) -> Option<String> {
    let session = manager.load(Some(id.as_str())).await.unwrap();
    let value = session.get::<String>(name).unwrap();
    manager.commit(session).await.unwrap();
    value
}

async fn settle(manager: &SessionManager<TextCodec>) {
    for _ in 0..200 {
        if manager.pending_backups() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("backups still pending: {}", manager.pending_backups());
}

#[tokio::test]
async fn a_local_hit_makes_no_store_operation() {
    let store = store(&["n1"]);
    let manager = new_manager(&store);
    let id = create(&manager, &[("user", "ann")]).await;
    settle(&manager).await;
    let operations = store.operations();
    for _ in 0..100 {
        assert_eq!(get(&manager, &id, "user").await.as_deref(), Some("ann"));
    }
    assert_eq!(store.operations(), operations);
    let stats = manager.stats();
    assert_eq!(stats.loaded_local, 100);
    assert_eq!(stats.backups_skipped_unchanged, 100);
    assert_eq!(stats.backups_written, 1);
}

#[tokio::test]
async fn an_untouched_new_session_is_never_created() {
    let store = store(&["n1"]);
    let manager = new_manager(&store);
    let session = manager.load(None).await.unwrap();
    assert!(session.is_new());
    let outcome = manager.commit(session).await.unwrap();
    assert_eq!(outcome.cookie, CookieUpdate::Keep);
    assert_eq!(store.operations(), 0);
    assert_eq!(manager.local_sessions(), 0);
    assert_eq!(manager.stats().sessions_created, 0);
}

#[tokio::test]
async fn malformed_ids_are_no_session_and_touch_nothing() {
    let store = store(&["n1"]);
    let manager = new_manager(&store);
    let forged = [
        "",
        "x",
        "../../etc/passwd",
        "abcdefghijABCDEFGHIJ01-n9", // unknown node
        "abcdefghijABCDEFGHIJ01-n1 flush_all",
        "abcdefghijABCDEFGHIJ01-n1\r\nset",
    ];
    for text in forged {
        let session = manager.load(Some(text)).await.unwrap();
        assert!(session.is_new(), "{text:?}");
        let outcome = manager.commit(session).await.unwrap();
        assert_eq!(outcome.cookie, CookieUpdate::Clear, "{text:?}");
    }
    assert_eq!(store.operations(), 0);
    assert_eq!(manager.stats().invalid_ids, forged.len() as u64);
}

#[tokio::test]
async fn unknown_ids_are_remembered_by_the_negative_cache() {
    let store = store(&["n1"]);
    let manager = new_manager(&store);
    let unknown = "abcdefghijABCDEFGHIJ01-n1";
    for _ in 0..10 {
        let session = manager.load(Some(unknown)).await.unwrap();
        assert!(session.is_new());
    }
    assert_eq!(
        store.operations(),
        1,
        "one remote read, then the negative cache"
    );
    let stats = manager.stats();
    assert_eq!(stats.unknown_ids, 10);
    assert_eq!(stats.negative_cache_hits, 9);
}

#[tokio::test]
async fn changes_are_backed_up_and_unchanged_sessions_are_not_rewritten() {
    let store = store(&["n1"]);
    let manager = new_manager(&store);
    let id = create(&manager, &[("a", "1")]).await;
    settle(&manager).await;
    let mut session = manager.load(Some(id.as_str())).await.unwrap();
    session.insert("a", "1").unwrap(); // same bytes: no change
    assert!(!session.is_modified());
    assert_eq!(
        manager.commit(session).await.unwrap().backup,
        BackupStatus::NotNeeded
    );
    let mut session = manager.load(Some(id.as_str())).await.unwrap();
    session.insert("a", "2").unwrap();
    assert_eq!(
        manager.commit(session).await.unwrap().backup,
        BackupStatus::Queued
    );
    settle(&manager).await;
    assert_eq!(manager.stats().backups_written, 2);

    // Another server (no shared local tier) sees the backup.
    let other = new_manager(&store);
    assert_eq!(get(&other, &id, "a").await.as_deref(), Some("2"));
    assert_eq!(other.stats().loaded_remote, 1);
}

#[tokio::test]
async fn sync_backup_is_written_before_the_commit_returns() {
    let store = store(&["n1"]);
    let manager = builder(&store)
        .backup(BackupMode::Sync {
            timeout: Duration::from_secs(1),
        })
        .build()
        .unwrap();
    let mut session = manager.load(None).await.unwrap();
    session.insert("a", "1").unwrap();
    let outcome = manager.commit(session).await.unwrap();
    assert_eq!(outcome.backup, BackupStatus::Written);
    assert_eq!(store.item_count(&node("n1")), 1);

    // A down node does not fail the commit: counted, retried later.
    store.set_node_up(&node("n1"), false);
    let CookieUpdate::Set { id, .. } = outcome.cookie else {
        unreachable!()
    };
    let mut session = manager.load(Some(id.as_str())).await.unwrap();
    session.insert("a", "2").unwrap();
    let outcome = manager.commit(session).await.unwrap();
    assert!(
        matches!(outcome.backup, BackupStatus::Failed(_)),
        "{outcome:?}"
    );
    assert_eq!(manager.stats().backups_failed, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_keeps_changes_to_different_attributes() {
    let store = store(&["n1"]);
    let manager = new_manager(&store);
    let id = create(&manager, &[("seed", "0")]).await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let (manager, id) = (manager.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            let mut session = manager.load(Some(id.as_str())).await.unwrap();
            tokio::task::yield_now().await;
            session.insert(&format!("attr{i}"), &i.to_string()).unwrap();
            manager.commit(session).await.unwrap();
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let session = manager.load(Some(id.as_str())).await.unwrap();
    assert_eq!(session.names().count(), 51);
    assert_eq!(manager.stats().conflicts, 0);
}

#[tokio::test]
async fn merge_reports_a_change_of_the_same_attribute_as_a_conflict() {
    let store = store(&["n1"]);
    let manager = new_manager(&store);
    let id = create(&manager, &[("count", "0"), ("other", "x")]).await;
    let mut first = manager.load(Some(id.as_str())).await.unwrap();
    let mut second = manager.load(Some(id.as_str())).await.unwrap();
    let mut third = manager.load(Some(id.as_str())).await.unwrap();
    first.insert("count", "1").unwrap();
    second.insert("other", "y").unwrap();
    // Both derived "1" from the "0" they read: the second increment would be lost.
    third.insert("count", "1").unwrap();
    manager.commit(first).await.unwrap();
    manager.commit(second).await.unwrap();
    assert!(matches!(
        manager.commit(third).await,
        Err(CommitError::Conflict { .. })
    ));

    let mut stale = manager.load(Some(id.as_str())).await.unwrap();
    let mut fresh = manager.load(Some(id.as_str())).await.unwrap();
    fresh.insert("count", "2").unwrap();
    manager.commit(fresh).await.unwrap();
    stale.insert("count", "5").unwrap();
    stale.insert("unrelated", "z").unwrap();
    let error = manager.commit(stale).await.unwrap_err();
    assert_eq!(
        error,
        CommitError::Conflict {
            attributes: vec!["count".into()]
        }
    );
    // All or nothing: the unrelated attribute of the refused commit is not applied.
    assert_eq!(get(&manager, &id, "count").await.as_deref(), Some("2"));
    assert_eq!(get(&manager, &id, "unrelated").await, None);
    assert_eq!(get(&manager, &id, "other").await.as_deref(), Some("y"));
    assert_eq!(manager.stats().conflicts, 2);
}

#[tokio::test]
async fn last_writer_wins_overwrites_without_conflict() {
    let store = store(&["n1"]);
    let manager = builder(&store)
        .concurrency(Concurrency::LastWriterWins)
        .build()
        .unwrap();
    let id = create(&manager, &[("count", "0")]).await;
    let mut stale = manager.load(Some(id.as_str())).await.unwrap();
    let mut fresh = manager.load(Some(id.as_str())).await.unwrap();
    fresh.insert("count", "2").unwrap();
    manager.commit(fresh).await.unwrap();
    stale.insert("count", "5").unwrap();
    manager.commit(stale).await.unwrap();
    assert_eq!(get(&manager, &id, "count").await.as_deref(), Some("5"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_mode_serializes_read_modify_write() {
    let store = store(&["n1"]);
    let manager = builder(&store)
        .concurrency(Concurrency::Lock)
        .build()
        .unwrap();
    let id = create(&manager, &[("count", "0")]).await;
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (manager, id) = (manager.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            let mut session = manager.load(Some(id.as_str())).await.unwrap();
            let count: u32 = session.get("count").unwrap().unwrap();
            tokio::task::yield_now().await;
            session.insert("count", &(count + 1).to_string()).unwrap();
            manager.commit(session).await.unwrap();
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(get(&manager, &id, "count").await.as_deref(), Some("32"));
    assert!(manager.stats().lock_waits > 0);
}

#[tokio::test]
async fn a_lock_not_acquired_in_time_is_an_error_or_proceeds_as_configured() {
    let store = store(&["n1"]);
    for policy in [LockTimeoutPolicy::Fail, LockTimeoutPolicy::ProceedUnlocked] {
        let manager = builder(&store)
            .concurrency(Concurrency::Lock)
            .lock_timeout(Duration::from_millis(50), policy)
            .build()
            .unwrap();
        let id = create(&manager, &[("count", "0")]).await;
        let holder = manager.load(Some(id.as_str())).await.unwrap();
        let second = manager.load(Some(id.as_str())).await;
        match policy {
            LockTimeoutPolicy::Fail => assert_eq!(
                second.unwrap_err(),
                LoadError::LockTimeout {
                    waited: Duration::from_millis(50)
                }
            ),
            LockTimeoutPolicy::ProceedUnlocked => assert!(second.is_ok()),
        }
        drop(holder);
        assert_eq!(manager.stats().lock_timeouts, 1);
    }
}

#[tokio::test]
async fn cycle_id_gives_a_new_id_and_the_old_one_loads_nowhere() {
    let store = store(&["n1"]);
    let manager = new_manager(&store);
    let old = create(&manager, &[("user", "ann")]).await;
    settle(&manager).await;
    let mut session = manager.load(Some(old.as_str())).await.unwrap();
    session.cycle_id();
    let CookieUpdate::Set { id: new, .. } = manager.commit(session).await.unwrap().cookie else {
        panic!("cycle_id must set a new cookie");
    };
    assert_ne!(new.random(), old.random());
    settle(&manager).await;
    assert_eq!(get(&manager, &new, "user").await.as_deref(), Some("ann"));
    assert!(manager.load(Some(old.as_str())).await.unwrap().is_new());
    // Not on another server either: the remote copy under the old id is gone.
    let other = new_manager(&store);
    assert!(other.load(Some(old.as_str())).await.unwrap().is_new());
    assert_eq!(get(&other, &new, "user").await.as_deref(), Some("ann"));
}

#[tokio::test]
async fn invalidate_removes_the_session_everywhere_and_clears_the_cookie() {
    let store = store(&["n1"]);
    // Without the peer feed, whose announcement of the end (written by the task that
    // writes the tombstone) would be a second item on the node.
    let manager = builder(&store).peer_feed_interval(None).build().unwrap();
    let id = create(&manager, &[("user", "ann")]).await;
    settle(&manager).await;
    let mut session = manager.load(Some(id.as_str())).await.unwrap();
    session.invalidate();
    assert_eq!(
        manager.commit(session).await.unwrap().cookie,
        CookieUpdate::Clear
    );
    settle(&manager).await;
    // The commit waited for the tombstone: the copy says the id ended.
    let stored = store
        .get(&node("n1"), &manager.engine.common().store_key(&id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        ends::tombstone_reason(&stored.value),
        Some(ends::EndReason::Ended)
    );
    assert!(manager.load(Some(id.as_str())).await.unwrap().is_new());
    // Not on another server either, also one that takes it over.
    let other = builder(&store)
        .route(Route::new("elsewhere").unwrap())
        .build()
        .unwrap();
    let session = other.load(Some(id.as_str())).await.unwrap();
    assert!(session.is_new());
    assert_eq!(
        other.commit(session).await.unwrap().cookie,
        CookieUpdate::Clear
    );
    assert_eq!(other.stats().ended_ids_presented, 1);
}

#[tokio::test]
async fn a_session_over_the_size_limit_is_refused_and_the_old_state_stays() {
    let store = store(&["n1"]);
    let manager = builder(&store).max_session_size(200).build().unwrap();
    let id = create(&manager, &[("a", "small")]).await;
    settle(&manager).await;
    let mut session = manager.load(Some(id.as_str())).await.unwrap();
    session.insert("a", &"x".repeat(500)).unwrap();
    let error = manager.commit(session).await.unwrap_err();
    assert!(
        matches!(error, CommitError::TooLarge { limit: 200, .. }),
        "{error:?}"
    );
    assert_eq!(get(&manager, &id, "a").await.as_deref(), Some("small"));
    let other = new_manager(&store);
    assert_eq!(get(&other, &id, "a").await.as_deref(), Some("small"));
    assert_eq!(manager.stats().too_large, 1);
}

#[tokio::test]
async fn a_session_on_a_down_node_moves_to_a_live_one() {
    let store = store(&["n1", "n2"]);
    let manager = new_manager(&store);
    let id = create(&manager, &[("user", "ann")]).await;
    settle(&manager).await;
    let (down, live) = if id.node() == "n1" {
        ("n1", "n2")
    } else {
        ("n2", "n1")
    };
    store.set_node_up(&node(down), false);
    let session = manager.load(Some(id.as_str())).await.unwrap();
    assert_eq!(session.id().node(), live);
    assert_eq!(
        session.get::<String>("user").unwrap().as_deref(),
        Some("ann")
    );
    let CookieUpdate::Set { id: moved, .. } = manager.commit(session).await.unwrap().cookie else {
        panic!("the client must learn the new id");
    };
    assert_eq!(moved.random(), id.random());
    settle(&manager).await;
    assert_eq!(store.item_count(&node(live)), 1);
    // A request still carrying the old id follows the session.
    assert_eq!(get(&manager, &id, "user").await.as_deref(), Some("ann"));
    assert_eq!(manager.stats().relocated, 1);
}

#[tokio::test]
async fn failover_nodes_are_used_only_when_every_regular_node_is_down() {
    let store = store(&["n1", "n2", "n3"]);
    let manager = builder(&store)
        .failover_nodes([node("n3")])
        .build()
        .unwrap();
    for _ in 0..30 {
        assert_ne!(create(&manager, &[("a", "1")]).await.node(), "n3");
    }
    store.set_node_up(&node("n1"), false);
    store.set_node_up(&node("n2"), false);
    assert_eq!(create(&manager, &[("a", "1")]).await.node(), "n3");
}

#[tokio::test]
async fn with_every_node_down_sessions_are_served_locally_and_backed_up_later() {
    let store = store(&["n1"]);
    let manager = new_manager(&store);
    store.set_node_up(&node("n1"), false);
    let id = create(&manager, &[("user", "ann")]).await;
    assert_eq!(get(&manager, &id, "user").await.as_deref(), Some("ann"));
    assert!(manager.stats().degraded > 0);
    assert_eq!(store.item_count(&node("n1")), 0);
    store.set_node_up(&node("n1"), true);
    settle(&manager).await;
    assert_eq!(store.item_count(&node("n1")), 1);
}

#[tokio::test]
async fn a_takeover_rewrites_the_route_and_distrusts_a_stale_local_copy() {
    let store = store(&["n1"]);
    let a1 = builder(&store)
        .route(Route::new("a1").unwrap())
        .build()
        .unwrap();
    let a2 = builder(&store)
        .route(Route::new("a2").unwrap())
        .build()
        .unwrap();
    let id = create(&a1, &[("cart", "1")]).await;
    assert_eq!(id.route(), Some("a1"));
    settle(&a1).await;

    let mut session = a2.load(Some(id.as_str())).await.unwrap();
    assert_eq!(session.id().route(), Some("a2"));
    session.insert("cart", "2").unwrap();
    let CookieUpdate::Set { id: on_a2, .. } = a2.commit(session).await.unwrap().cookie else {
        panic!("a takeover must tell the client the new route");
    };
    settle(&a2).await;
    assert_eq!(a2.stats().taken_over, 1);

    // a1 still holds cart=1; an id routed to a2 makes it reload.
    let session = a1.load(Some(on_a2.as_str())).await.unwrap();
    assert_eq!(session.get::<String>("cart").unwrap().as_deref(), Some("2"));
    assert_eq!(session.id().route(), Some("a1"));
    a1.commit(session).await.unwrap();

    // A second request with the old route right after the takeover keeps a2's copy:
    // the remote copy is the one a2 read, so a2's local copy is current.
    let mut on_a2_again = a2
        .load(Some(
            on_a2.with_route(Some(&Route::new("a1").unwrap())).as_str(),
        ))
        .await
        .unwrap();
    on_a2_again.insert("note", "kept").unwrap();
    a2.commit(on_a2_again).await.unwrap();
    assert_eq!(get(&a2, &on_a2, "note").await.as_deref(), Some("kept"));
}

#[tokio::test]
async fn shutdown_flushes_pending_backups() {
    let store = store(&["n1"]);
    let manager = new_manager(&store);
    let mut ids = Vec::new();
    for i in 0..50 {
        ids.push(create(&manager, &[("i", &i.to_string())]).await);
    }
    let report = manager.shutdown(Duration::from_secs(5)).await;
    assert_eq!(report.unsaved, 0);
    drop(manager);
    let next = new_manager(&store);
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(get(&next, id, "i").await, Some(i.to_string()));
    }
}

#[tokio::test]
async fn a_late_expiry_report_never_deletes_the_live_session_under_the_same_key() {
    let store = store(&["n1"]);
    let manager = new_manager(&store);
    let id = create(&manager, &[("user", "ann")]).await;
    settle(&manager).await;
    let key = local_key(&id);
    let old = manager.sticky().local.get(&key).unwrap();
    // The key is filled again (a reload) before the cache reports the old value's
    // expiry.
    let session = old.state.lock().session.clone();
    let remote = old.state.lock().remote;
    let live = Arc::new(LocalEntry::new(session, remote, false));
    manager
        .sticky()
        .local
        .insert(key.clone(), Arc::clone(&live));
    manager
        .sticky()
        .expire(super::backup::Expired {
            key: key.clone(),
            entry: old,
        })
        .await;
    assert_eq!(
        store.item_count(&node("n1")),
        1,
        "the live session's copy was deleted"
    );
    assert_eq!(manager.stats().tombstones_written, 0);
    assert!(!live.is_retired());
    assert_eq!(get(&manager, &id, "user").await.as_deref(), Some("ann"));

    // Without a live entry the same report ends the remote copy with a tombstone:
    // another server presenting the id finds it ended.
    let expired = manager.sticky().local.remove(&key).unwrap();
    manager
        .sticky()
        .expire(super::backup::Expired {
            key,
            entry: expired,
        })
        .await;
    assert_eq!(manager.stats().tombstones_written, 1);
    let other = builder(&store)
        .route(Route::new("a2").unwrap())
        .build()
        .unwrap();
    let session = other.load(Some(id.as_str())).await.unwrap();
    assert!(session.is_new());
    assert_eq!(other.stats().ended_ids_presented, 1);
}

#[tokio::test]
async fn a_session_can_move_away_from_a_node_and_back() {
    let store = store(&["n1", "n2"]);
    let manager = new_manager(&store);
    let mut id = create(&manager, &[("a", "0")]).await;
    let (first, second) = if id.node() == "n1" {
        ("n1", "n2")
    } else {
        ("n2", "n1")
    };
    // Down goes its node (it moves), then the other one (it moves back).
    for (step, down, up) in [(1, first, second), (2, second, first)] {
        store.set_node_up(&node(down), false);
        store.set_node_up(&node(up), true);
        let mut session = manager.load(Some(id.as_str())).await.unwrap();
        assert!(!session.is_new(), "lost at step {step}");
        assert_eq!(session.id().node(), up);
        session.insert("a", &step.to_string()).unwrap();
        id = match manager.commit(session).await.unwrap().cookie {
            CookieUpdate::Set { id, .. } => id,
            other => panic!("the client must learn the new id, got {other:?}"),
        };
    }
    assert_eq!(id.node(), first);
    assert_eq!(get(&manager, &id, "a").await.as_deref(), Some("2"));
    assert_eq!(manager.stats().relocated, 2);
}

/// The futures every request awaits keep their rare, large paths (remote reads,
/// takeovers, relocation, backups) behind boxes: a request's whole future is moved
/// and often boxed by the web stack, and above about a kilobyte the allocator leaves
/// its fast path. (Before the rare paths were boxed: 2,120 and 2,200 bytes; 376 and
/// 440 now.) Half a kilobyte each: the web layer's commit step holds the commit's
/// future with the response, and must stay under the kilobyte; a non-sticky read
/// carried in every request's session once pushed the write path over it.
#[tokio::test]
async fn request_path_futures_stay_small() {
    let store = store(&["n1"]);
    let manager = new_manager(&store);
    let id = create(&manager, &[("a", "b")]).await;
    let load = manager.load_for(Some(id.as_str()), None);
    let load_size = std::mem::size_of_val(&load);
    let session = load.await.unwrap();
    let commit = manager.commit(session);
    let commit_size = std::mem::size_of_val(&commit);
    commit.await.unwrap();
    assert!(load_size <= 512, "load_for's future is {load_size} bytes");
    assert!(commit_size <= 512, "commit's future is {commit_size} bytes");
}

#[tokio::test]
async fn only_per_pattern_lock_scopes_use_the_request_info() {
    let store = store(&["n1"]);
    let build = |mode, concurrency, scope| {
        builder(&store)
            .mode(mode)
            .concurrency(concurrency)
            .lock_scope(scope)
            .build()
            .unwrap()
            .uses_request_info()
    };
    let paths = || LockScope::Paths(regex::Regex::new("^/cart").unwrap());
    assert!(!build(Mode::Sticky, Concurrency::Lock, paths()));
    assert!(!build(Mode::NonSticky, Concurrency::Merge, paths()));
    assert!(!build(Mode::NonSticky, Concurrency::Lock, LockScope::All));
    assert!(build(Mode::NonSticky, Concurrency::Lock, paths()));
    assert!(build(Mode::NonSticky, Concurrency::Lock, LockScope::Auto));
}

/// The memory store, misbehaving on demand: reads never answer while `hang` is set,
/// conditional writes never answer while `hang_writes` is, and writes get no answer
/// while `drop_answers` is (`write_many` answers no item, a single `write` fails).
struct Misbehaving {
    inner: Arc<MemoryStore>,
    hang: AtomicBool,
    drop_answers: AtomicBool,
    hang_writes: AtomicBool,
}

impl Misbehaving {
    fn over(inner: &Arc<MemoryStore>) -> Arc<Misbehaving> {
        Arc::new(Misbehaving {
            inner: Arc::clone(inner),
            hang: AtomicBool::new(false),
            drop_answers: AtomicBool::new(false),
            hang_writes: AtomicBool::new(false),
        })
    }
}

#[async_trait::async_trait]
impl RemoteStore for Misbehaving {
    async fn get(
        &self,
        node: &NodeId,
        key: &StoreKey,
    ) -> Result<Option<tandem_core::Item>, StoreError> {
        if self.hang.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        self.inner.get(node, key).await
    }

    async fn set(
        &self,
        node: &NodeId,
        key: &StoreKey,
        value: &[u8],
        ttl: Ttl,
    ) -> Result<(), StoreError> {
        self.inner.set(node, key, value, ttl).await
    }

    async fn set_many(
        &self,
        node: &NodeId,
        items: &[tandem_core::SetItem<'_>],
    ) -> Vec<Result<(), StoreError>> {
        if self.drop_answers.load(Ordering::SeqCst) {
            return Vec::new();
        }
        self.inner.set_many(node, items).await
    }

    async fn add(
        &self,
        node: &NodeId,
        key: &StoreKey,
        value: &[u8],
        ttl: Ttl,
    ) -> Result<tandem_core::AddOutcome, StoreError> {
        self.inner.add(node, key, value, ttl).await
    }

    async fn cas(
        &self,
        node: &NodeId,
        key: &StoreKey,
        value: &[u8],
        ttl: Ttl,
        cas: tandem_core::CasToken,
    ) -> Result<tandem_core::CasOutcome, StoreError> {
        self.inner.cas(node, key, value, ttl, cas).await
    }

    async fn delete(&self, node: &NodeId, key: &StoreKey) -> Result<bool, StoreError> {
        self.inner.delete(node, key).await
    }

    async fn touch(&self, node: &NodeId, key: &StoreKey, ttl: Ttl) -> Result<bool, StoreError> {
        self.inner.touch(node, key, ttl).await
    }

    async fn write(
        &self,
        node: &NodeId,
        key: &StoreKey,
        value: &[u8],
        ttl: Ttl,
        precondition: tandem_core::Precondition,
    ) -> Result<tandem_core::WriteOutcome, StoreError> {
        if self.hang_writes.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if self.drop_answers.load(Ordering::SeqCst) {
            return Err(StoreError::Server {
                node: node.clone(),
                message: "no answer".into(),
            });
        }
        self.inner.write(node, key, value, ttl, precondition).await
    }

    async fn write_many(
        &self,
        node: &NodeId,
        items: &[tandem_core::WriteItem<'_>],
    ) -> Vec<Result<tandem_core::WriteOutcome, StoreError>> {
        if self.drop_answers.load(Ordering::SeqCst) {
            return Vec::new();
        }
        self.inner.write_many(node, items).await
    }

    async fn delete_if(
        &self,
        node: &NodeId,
        key: &StoreKey,
        cas: tandem_core::CasToken,
    ) -> Result<tandem_core::CasOutcome, StoreError> {
        self.inner.delete_if(node, key, cas).await
    }

    async fn append(
        &self,
        node: &NodeId,
        key: &StoreKey,
        value: &[u8],
        ttl: Ttl,
    ) -> Result<(), StoreError> {
        self.inner.append(node, key, value, ttl).await
    }

    async fn get_with_ttl(
        &self,
        node: &NodeId,
        key: &StoreKey,
    ) -> Result<Option<(tandem_core::Item, Ttl)>, StoreError> {
        if self.hang.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        self.inner.get_with_ttl(node, key).await
    }

    fn nodes(&self) -> Vec<NodeId> {
        self.inner.nodes()
    }

    fn is_available(&self, node: &NodeId) -> bool {
        self.inner.is_available(node)
    }
}

#[tokio::test]
async fn a_remote_load_abandoned_by_every_request_leaves_nothing_behind() {
    let memory = store(&["n1"]);
    let hanging = Misbehaving::over(&memory);
    // a1 restarted as a2 (same route) holds nothing: a load reads the remote tier.
    let a1 = builder(&memory)
        .route(Route::new("a1").unwrap())
        .build()
        .unwrap();
    let id = create(&a1, &[("user", "ann")]).await;
    settle(&a1).await;
    let a2 = SessionManager::<TextCodec>::builder(Arc::clone(&hanging) as Arc<dyn RemoteStore>)
        .route(Route::new("a1").unwrap())
        .build()
        .unwrap();
    hanging.hang.store(true, Ordering::SeqCst);
    // Two requests share the hung load; both go away (the client hung up).
    let first = tokio::time::timeout(Duration::from_millis(20), a2.load(Some(id.as_str())));
    let second = tokio::time::timeout(Duration::from_millis(20), a2.load(Some(id.as_str())));
    let (first, second) = tokio::join!(first, second);
    assert!(
        first.is_err() && second.is_err(),
        "the loads should have hung"
    );
    assert_eq!(
        a2.sticky().loading.lock().len(),
        0,
        "an abandoned load stayed in the map"
    );
    // The next request loads the session for real.
    hanging.hang.store(false, Ordering::SeqCst);
    let session = a2.load(Some(id.as_str())).await.unwrap();
    assert_eq!(
        session.get::<String>("user").unwrap().as_deref(),
        Some("ann")
    );
    a2.commit(session).await.unwrap();
    assert_eq!(a2.sticky().loading.lock().len(), 0);
}

#[tokio::test]
async fn backups_a_store_leaves_unanswered_fail_and_are_retried() {
    let memory = store(&["n1"]);
    let misbehaving = Misbehaving::over(&memory);
    misbehaving.drop_answers.store(true, Ordering::SeqCst);
    // A long linger: the five backups go out as one batch.
    let manager =
        SessionManager::<TextCodec>::builder(Arc::clone(&misbehaving) as Arc<dyn RemoteStore>)
            .retry_interval(Duration::from_millis(50))
            .backup_linger(Duration::from_millis(100))
            .build()
            .unwrap();
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(create(&manager, &[("n", &i.to_string())]).await);
    }
    let n1 = node("n1");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(manager.stats().backups_failed >= 5, "{:?}", manager.stats());
    assert_eq!(manager.stats().backups_written, 0);
    assert_eq!(memory.item_count(&n1), 0);
    assert!(manager.pending_backups() >= 5, "the sessions stay dirty");

    // Once the store answers again, the retries write every session.
    misbehaving.drop_answers.store(false, Ordering::SeqCst);
    for _ in 0..100 {
        if manager.pending_backups() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(manager.pending_backups(), 0);
    assert_eq!(memory.item_count(&n1), ids.len());
}

/// A commit marks its entry dirty after raising the revision, so a writer that sent
/// that revision meanwhile can clean the entry before the commit marks it: the entry
/// is then in the dirty set with nothing left to send. The next backup job (the
/// commit's own, or a sweep's retry) must take it out, not leave it counted as
/// unsaved for the rest of its life.
#[tokio::test]
async fn an_entry_marked_dirty_after_its_backup_landed_is_cleaned_by_the_next_job() {
    let store = store(&["n1"]);
    let manager = new_manager(&store);
    let id = create(&manager, &[("user", "ann")]).await;
    settle(&manager).await;
    let entry = manager.sticky().local.get(&local_key(&id)).unwrap();
    // The race's outcome: backed up, yet marked dirty again.
    manager.sticky().backups.mark_dirty(&entry);
    assert_eq!(manager.unsaved_sessions(), 1);
    let written = manager.stats().backups_written;
    settle(&manager).await;
    assert_eq!(manager.unsaved_sessions(), 0);
    assert!(!entry.in_dirty.load(Ordering::Acquire));
    assert_eq!(
        manager.stats().backups_written,
        written,
        "nothing newer to send: no write"
    );
}

/// `commit_now` does the commits that need nothing to wait for exactly as `commit`
/// would, and hands every other request back untouched.
#[tokio::test]
async fn commit_now_does_unchanged_local_commits_and_hands_back_the_rest() {
    let store = store(&["n1"]);
    let manager = builder(&store)
        .max_inactive(Some(Duration::from_secs(2)))
        .build()
        .unwrap();
    // A new session has to be stored.
    let mut session = manager.load(None).await.unwrap();
    session.insert("user", "ann").unwrap();
    let session = manager.commit_now(session).unwrap_err();
    assert_eq!(
        session.get::<String>("user").unwrap().as_deref(),
        Some("ann")
    );
    let CookieUpdate::Set { id, .. } = manager.commit(session).await.unwrap().cookie else {
        panic!("a new session gets a cookie");
    };
    settle(&manager).await;
    let before = manager.stats();
    // Unchanged: done here and now.
    let session = manager.load(Some(id.as_str())).await.unwrap();
    assert_eq!(
        manager.commit_now(session).unwrap(),
        CommitOutcome {
            cookie: CookieUpdate::Keep,
            backup: BackupStatus::NotNeeded,
        }
    );
    let after = manager.stats();
    assert_eq!(after.commits, before.commits + 1);
    assert_eq!(
        after.backups_skipped_unchanged,
        before.backups_skipped_unchanged + 1
    );
    // Changed, cycled or invalidated: handed back with the change, for `commit`.
    let mut session = manager.load(Some(id.as_str())).await.unwrap();
    session.insert("user", "bob").unwrap();
    let session = manager.commit_now(session).unwrap_err();
    assert_eq!(
        session.get::<String>("user").unwrap().as_deref(),
        Some("bob")
    );
    manager.commit(session).await.unwrap();
    settle(&manager).await;
    assert_eq!(get(&manager, &id, "user").await.as_deref(), Some("bob"));
    let mut session = manager.load(Some(id.as_str())).await.unwrap();
    session.cycle_id();
    let session = manager.commit_now(session).unwrap_err();
    let CookieUpdate::Set { id, .. } = manager.commit(session).await.unwrap().cookie else {
        panic!("a cycled id gets a cookie");
    };
    settle(&manager).await;
    let mut session = manager.load(Some(id.as_str())).await.unwrap();
    session.invalidate();
    let session = manager.commit_now(session).unwrap_err();
    assert_eq!(
        manager.commit(session).await.unwrap().cookie,
        CookieUpdate::Clear
    );
}

/// An unchanged commit that is due to extend the remote copy's expiry goes through
/// `commit`, which queues the touch.
#[tokio::test]
async fn commit_now_hands_back_a_commit_that_is_due_to_touch() {
    let store = store(&["n1"]);
    // An interval of 2 s: a slack of 1 s, a touch due after half of it.
    let manager = builder(&store)
        .max_inactive(Some(Duration::from_secs(2)))
        .build()
        .unwrap();
    let id = create(&manager, &[("user", "ann")]).await;
    settle(&manager).await;
    let session = manager.load(Some(id.as_str())).await.unwrap();
    assert!(manager.commit_now(session).is_ok(), "not due yet");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let session = manager.load(Some(id.as_str())).await.unwrap();
    let session = manager.commit_now(session).unwrap_err();
    manager.commit(session).await.unwrap();
    settle(&manager).await;
    assert_eq!(manager.stats().touches, 1);
}

/// The local expiry slides in steps (see `SessionExpiry`): a session read more often
/// than its interval stays, and one left alone expires between its interval and its
/// interval plus one step, never before.
#[tokio::test]
async fn the_local_expiry_slides_in_steps_and_never_expires_early() {
    let store = store(&["n1"]);
    let interval = Duration::from_millis(800);
    let manager = builder(&store)
        .max_inactive(Some(interval))
        .build()
        .unwrap();
    let id = create(&manager, &[("user", "ann")]).await;
    let held =
        |manager: &SessionManager<TextCodec>| manager.sticky().local.contains_key(id.storage_id());
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(get(&manager, &id, "user").await.as_deref(), Some("ann"));
    }
    assert_eq!(manager.stats().loaded_remote, 0, "every read was local");
    let last_read = std::time::Instant::now();
    tokio::time::sleep(interval - Duration::from_millis(100)).await;
    assert!(held(&manager), "expired before its interval");
    tokio::time::sleep(Duration::from_millis(150) + slide_step(interval)).await;
    assert!(
        !held(&manager),
        "still held {:?} after the last read",
        last_read.elapsed()
    );
}

/// A shorter interval set by a request takes effect at the next read, not one old
/// interval later.
#[tokio::test]
async fn a_shortened_interval_takes_effect_at_the_next_read() {
    let store = store(&["n1"]);
    let manager = builder(&store)
        .max_inactive(Some(Duration::from_secs(60)))
        .build()
        .unwrap();
    let id = create(&manager, &[("user", "ann")]).await;
    let mut session = manager.load(Some(id.as_str())).await.unwrap();
    session.set_max_inactive(Some(Duration::from_millis(300)));
    manager.commit(session).await.unwrap();
    assert_eq!(get(&manager, &id, "user").await.as_deref(), Some("ann"));
    tokio::time::sleep(Duration::from_millis(300 + 50)).await;
    assert!(!manager.sticky().local.contains_key(id.storage_id()));
}

/// The takeover check compares digests of stored bytes: equal bytes must give equal
/// digests, a change anywhere (here one byte of a session-sized value) a different
/// one, and no digest may be 0, which stands for "no known remote copy".
#[test]
fn digests_tell_stored_bytes_apart() {
    let stored: Vec<u8> = (0..500u32).map(|i| (i * 7 % 251) as u8).collect();
    assert_eq!(digest(&stored), digest(&stored.clone()));
    for position in [0, 1, 250, 499] {
        let mut changed = stored.clone();
        changed[position] ^= 1;
        assert_ne!(digest(&stored), digest(&changed), "byte {position}");
    }
    assert_ne!(digest(&stored[..499]), digest(&stored));
    for bytes in [&b""[..], b"x", &stored] {
        assert_ne!(digest(bytes), 0);
    }
}

/// L2: while the remote tier is unreachable, changed sessions wait in memory; past
/// `max_unsaved_bytes` a commit that would add another is refused (and counted), one
/// that changes a session already waiting goes on, and once the node is back and the
/// backups land, new sessions are taken again.
#[tokio::test]
async fn unsaved_sessions_are_bounded_while_the_remote_tier_is_down() {
    let store = store(&["n1"]);
    let manager = builder(&store).max_unsaved_bytes(4096).build().unwrap();
    let waiting = create(&manager, &[("a", "1")]).await;
    settle(&manager).await;
    store.set_node_up(&node("n1"), false);
    let mut refused = None;
    for _ in 0..100 {
        let mut session = manager.load(None).await.unwrap();
        session.insert("payload", &"x".repeat(200)).unwrap();
        match manager.commit(session).await {
            Ok(_) => {}
            Err(error) => {
                refused = Some(error);
                break;
            }
        }
    }
    assert!(
        matches!(refused, Some(CommitError::Unavailable { .. })),
        "{refused:?}"
    );
    assert_eq!(manager.stats().unsaved_limit_hits, 1);
    assert!(manager.unsaved_sessions() < 100);
    // A session already waiting may keep changing; one not waiting may not.
    let mut session = manager.load(None).await.unwrap();
    session.insert("a", "new").unwrap();
    assert!(manager.commit(session).await.is_err());
    let mut first_unsaved = manager.load(Some(waiting.as_str())).await.unwrap();
    first_unsaved.insert("a", "2").unwrap();
    assert!(
        manager.commit(first_unsaved).await.is_err(),
        "a saved session becoming unsaved is one more"
    );

    store.set_node_up(&node("n1"), true);
    settle(&manager).await;
    assert_eq!(manager.unsaved_sessions(), 0);
    let fresh = create(&manager, &[("a", "3")]).await;
    assert_eq!(get(&manager, &fresh, "a").await.as_deref(), Some("3"));
}

/// M5: `LockScope::Auto` learns per request pattern; a client that sends many long
/// distinct paths evicts patterns (counted) instead of growing the cache, and the
/// learned part of a path is capped.
#[tokio::test]
async fn learned_lock_patterns_are_bounded_in_bytes() {
    let store = store(&["n1"]);
    let manager = builder(&store)
        .mode(Mode::NonSticky)
        .concurrency(Concurrency::Lock)
        .lock_scope(LockScope::Auto)
        .build()
        .unwrap();
    let id = create(&manager, &[("a", "1")]).await;
    // Requests with long paths learn capped patterns.
    let long = "p".repeat(100_000);
    for n in 0..3 {
        let path = format!("/{n}/{long}");
        let request = RequestInfo {
            method: "GET",
            path: &path,
        };
        let session = manager
            .load_for(Some(id.as_str()), Some(&request))
            .await
            .unwrap();
        manager.commit(session).await.unwrap();
    }
    let patterns = &manager.nonsticky().read_only_streaks;
    patterns.run_pending_tasks();
    assert_eq!(patterns.entry_count(), 3);
    assert!(
        patterns.iter().all(|(pattern, _)| pattern.len() <= 4 + 256),
        "a pattern longer than its cap"
    );
    // Many more distinct patterns (as many requests would learn) stay within the
    // cache's bytes, the rest evicted and counted.
    for n in 0..20_000 {
        patterns.insert(format!("GET /{n}/{}", &long[..250]).into(), 1);
    }
    patterns.run_pending_tasks();
    assert!(
        patterns.weighted_size() <= nonsticky::MAX_PATTERN_BYTES,
        "{} bytes of patterns",
        patterns.weighted_size()
    );
    assert!(manager.stats().lock_patterns_evicted > 0);
}

/// L7: a commit waits for the earlier commits of its session in this process at most
/// the lock timeout (here they hang on a node that does not answer), then fails with
/// `CommitError::LockTimeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_waits_for_earlier_commits_at_most_the_lock_timeout() {
    let memory = store(&["n1"]);
    let misbehaving = Misbehaving::over(&memory);
    let manager =
        SessionManager::<TextCodec>::builder(Arc::clone(&misbehaving) as Arc<dyn RemoteStore>)
            .mode(Mode::NonSticky)
            .lock_timeout(Duration::from_millis(200), LockTimeoutPolicy::Fail)
            .build()
            .unwrap();
    let id = create(&manager, &[("a", "1")]).await;
    let mut first = manager.load(Some(id.as_str())).await.unwrap();
    let mut second = manager.load(Some(id.as_str())).await.unwrap();
    first.insert("a", "2").unwrap();
    second.insert("b", "3").unwrap();
    misbehaving.hang_writes.store(true, Ordering::SeqCst);
    let hanging = {
        let manager = manager.clone();
        tokio::spawn(async move { manager.commit(first).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    let waited = manager.commit(second).await;
    assert!(
        matches!(waited, Err(CommitError::LockTimeout { waited }) if waited == Duration::from_millis(200)),
        "{waited:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    hanging.abort();
}

/// L6: a request that waited for its session's lock (`Concurrency::Lock`) while the copy
/// it found was replaced by a newer one (a takeover check) gets the newer copy, not a
/// new session with its cookie cleared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_waiting_for_a_replaced_copy_gets_the_new_copy() {
    let store = store(&["n1"]);
    let manager = builder(&store)
        .route(Route::new("a1").unwrap())
        .concurrency(Concurrency::Lock)
        .build()
        .unwrap();
    let id = create(&manager, &[("a", "1")]).await;
    let first = manager.load(Some(id.as_str())).await.unwrap();
    let waiting = {
        let (manager, id) = (manager.clone(), id.clone());
        tokio::spawn(async move { manager.load(Some(id.as_str())).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    // What a takeover check does when the remote copy changed: a new entry under the
    // key, the old one retired.
    let key = local_key(&id);
    let old = manager.sticky().local.get(&key).unwrap();
    let mut session = old.state.lock().session.clone();
    session
        .apply(
            "a",
            Some(AttributeValue::new(TextCodec::ID, b"2".as_slice())),
        )
        .unwrap();
    session.mark_unchanged();
    let newer = Arc::new(LocalEntry::new(session, RemoteCopy::Absent, true));
    manager.sticky().local.insert(key.clone(), newer);
    manager.sticky().discard(&key, &old);
    drop(first);
    let waited = waiting.await.unwrap().unwrap();
    assert!(!waited.is_new(), "the waiting request lost its session");
    assert_eq!(waited.get::<String>("a").unwrap().as_deref(), Some("2"));
}

/// L8: at shutdown, ends that waited for their node (a logout while the node was down)
/// are written once it answers, within the deadline.
#[tokio::test]
async fn shutdown_writes_the_ends_that_waited_for_their_node() {
    let store = store(&["n1"]);
    let manager = builder(&store)
        .retry_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    let id = create(&manager, &[("a", "1")]).await;
    settle(&manager).await;
    store.set_node_up(&node("n1"), false);
    let mut session = manager.load(Some(id.as_str())).await.unwrap();
    session.invalidate();
    assert_eq!(
        manager.commit(session).await.unwrap().cookie,
        CookieUpdate::Clear
    );
    assert_eq!(manager.pending_ends(), 1);
    store.set_node_up(&node("n1"), true);
    let report = manager.shutdown(Duration::from_secs(2)).await;
    assert_eq!(report.ends_unwritten, 0);
    assert_eq!(manager.pending_ends(), 0);
    let stored = store
        .get(&node("n1"), &manager.engine.common().store_key(&id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        ends::tombstone_reason(&stored.value),
        Some(ends::EndReason::Ended)
    );
}
