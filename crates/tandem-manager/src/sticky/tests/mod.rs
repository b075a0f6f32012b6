//! Unit tests of sticky mode's logic over the in-process store, white-box where they
//! need to be.
//!
//! The behaviour a session manager shows over any store (backups, shutdown, takeover,
//! relocation, failover nodes, every node down, expiry, locks and merges) is
//! `tandem-behaviour`'s suite, written once and run over the in-process store and real
//! memcached; a test of such behaviour belongs there, not here. What stays here:
//!
//! - what needs the manager's internals: the local tier's entries, the dirty set, the
//!   tombstone's recorded reason, the size of the request path's futures;
//! - what needs the in-process store's own view or its faults: operation and item
//!   counts, a node that fails every operation at once (`set_node_up`);
//! - request edge cases and settings the suite does not exercise: untouched new
//!   sessions, malformed and unknown ids, the size limit, last writer wins, lock
//!   timeouts, lock scopes, a session moving away from a node and back;
//! - in `misbehaving`, a store that hangs or drops answers on request, and the tests
//!   that need one, with further white-box tests; in `paused`, expiry and retries on
//!   paused time ([`TokioClock`]), which cannot drive a real server.

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
async fn a_late_expiry_report_never_deletes_the_live_session_under_the_same_key() {
    let store = store(&["n1"]);
    let manager = new_manager(&store);
    let id = create(&manager, &[("user", "ann")]).await;
    settle(&manager).await;
    let key = local_key(&id);
    let old = manager.sticky().local.get(&key).unwrap();
    // The key is filled again (a reload) before the cache reports the old value's
    // expiry.
    let session = old.state.lock().session.session();
    let remote = old.state.lock().remote();
    let live = Arc::new(LocalEntry::new(
        session,
        remote,
        false,
        manager.sticky().common.now_ms(),
    ));
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
    // Its first copy is on its node: the move back meets it there, since that node
    // was down when the move away had its tombstone to write.
    settle(&manager).await;
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
    settle(&manager).await;
    assert_eq!(get(&manager, &id, "a").await.as_deref(), Some("2"));
    assert_eq!(manager.stats().relocated, 2);
    assert_eq!(manager.stats().ownership_lost, 0);
    // What another server loads is the newest state too.
    let other = builder(&store)
        .route(Route::new("other").unwrap())
        .build()
        .unwrap();
    assert_eq!(get(&other, &id, "a").await.as_deref(), Some("2"));
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

mod interleaved;
mod misbehaving;
mod paused;
