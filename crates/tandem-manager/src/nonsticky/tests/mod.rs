//! Unit tests of non-sticky mode over the in-process store, white-box where they need
//! to be.
//!
//! The behaviour a session manager shows over any store (two servers seeing each
//! other's changes, remote locks, merges and their conflicts, a primary lost or
//! unavailable, every node down) is `tandem-behaviour`'s suite, written once and run
//! over the in-process store and real memcached; a test of such behaviour belongs
//! there, not here. What stays here:
//!
//! - what needs the manager's internals: the transit copies, the backup-copy repairs
//!   and their queue, the deletion markers and the tombstones' recorded reasons, the
//!   wait after a lost race;
//! - what needs the in-process store's own view or its faults: operation counts
//!   (round trips, lock scopes), item counts (a session's two copies and nothing
//!   else), a node that restarts empty (`clear_node`);
//! - settings the suite does not exercise: lock timeouts, lock scopes;
//! - expiry on paused time ([`TokioClock`](crate::TokioClock)), which cannot drive a
//!   real server;
//! - in `replicated`, nodes that replicate themselves or fail over to an older state
//!   (`with_replication`, `fail_over`), which real memcached cannot do.

use std::sync::Arc;
use std::time::Duration;

use super::repair::{MAX_PENDING, Stale};
use crate::common::ends::{EndReason, tombstone_reason};
use crate::testing::TextCodec;
use crate::{
    BackupMode, BackupStatus, Concurrency, CookieUpdate, LoadError, LockScope, LockTimeoutPolicy,
    ManagerBuilder, Mode, RequestInfo, SessionManager, WriteFailure,
};
use tandem_core::MemoryStore;
use tandem_core::Ttl;
use tandem_core::{NodeId, RemoteStore, SessionId};

mod epochs;
mod refresh;
mod replicated;

type Manager = SessionManager<TextCodec>;

fn node(id: &str) -> NodeId {
    NodeId::new(id).unwrap()
}

fn store(nodes: &[&str]) -> Arc<MemoryStore> {
    Arc::new(MemoryStore::new(nodes.iter().map(|id| node(id))))
}

fn builder(store: &Arc<MemoryStore>) -> ManagerBuilder<TextCodec> {
    Manager::builder(Arc::clone(store) as Arc<dyn RemoteStore>)
        .mode(Mode::NonSticky)
        .retry_interval(Duration::from_millis(50))
}

fn manager(store: &Arc<MemoryStore>) -> Manager {
    builder(store).build().unwrap()
}

async fn create(manager: &Manager, name: &str, value: &str) -> SessionId {
    let mut session = manager.load(None).await.unwrap();
    session.insert(name, value).unwrap();
    match manager.commit(session).await.unwrap().cookie {
        CookieUpdate::Set { id, .. } => id,
        other => panic!("expected a new cookie, got {other:?}"),
    }
}

async fn read(manager: &Manager, id: &SessionId, name: &str) -> Option<String> {
    let session = manager.load(Some(id.as_str())).await.unwrap();
    let value = session.get::<String>(name).unwrap();
    manager.commit(session).await.unwrap();
    value
}

async fn write(manager: &Manager, id: &SessionId, name: &str, value: &str) -> CookieUpdate {
    let mut session = manager.load(Some(id.as_str())).await.unwrap();
    assert!(!session.is_new());
    session.insert(name, value).unwrap();
    manager.commit(session).await.unwrap().cookie
}

/// Creates sessions until one lands on `on` (its primary node).
async fn create_on(manager: &Manager, on: &str, name: &str, value: &str) -> SessionId {
    loop {
        let id = create(manager, name, value).await;
        if id.node() == on {
            return id;
        }
    }
}

/// Whether the manager counts `repairs` repaired backup copies within a second.
async fn repaired(manager: &Manager, repairs: u64) -> bool {
    for _ in 0..100 {
        if manager.stats().backup_copies_repaired >= repairs {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// Lets background writes (spawned tasks) run.
async fn settle(manager: &Manager) {
    for _ in 0..200 {
        tokio::task::yield_now().await;
        if manager.pending_backups() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("background work still running");
}

#[tokio::test]
async fn two_servers_see_each_others_changes() {
    let store = store(&["n1", "n2"]);
    let (a1, a2) = (manager(&store), manager(&store));
    let id = create(&a1, "step", "1").await;
    for step in 2..=10 {
        let (reader, writer) = if step % 2 == 0 {
            (&a1, &a2)
        } else {
            (&a2, &a1)
        };
        assert_eq!(
            read(reader, &id, "step").await,
            Some((step - 1).to_string())
        );
        assert_eq!(
            write(writer, &id, "step", &step.to_string()).await,
            CookieUpdate::Keep
        );
    }
    assert_eq!(read(&a1, &id, "step").await.as_deref(), Some("10"));
    settle(&a1).await;
    settle(&a2).await;
    // Both copies exist: the primary on the id's node, the backup on the other.
    assert_eq!(store.item_count(&node("n1")), 1);
    assert_eq!(store.item_count(&node("n2")), 1);
}

#[tokio::test]
async fn round_trips_on_the_request_path_are_one_for_a_read_and_two_for_a_change() {
    let store = store(&["n1", "n2"]);
    let a1 = manager(&store);
    let id = create(&a1, "a", "1").await;
    settle(&a1).await;

    let before = store.operations();
    let session = a1.load(Some(id.as_str())).await.unwrap();
    assert_eq!(
        store.operations() - before,
        1,
        "a load is one get-and-touch"
    );
    a1.commit(session).await.unwrap();
    assert_eq!(
        store.operations() - before,
        1,
        "an unchanged commit waits for nothing"
    );
    settle(&a1).await;

    let before = store.operations();
    let mut session = a1.load(Some(id.as_str())).await.unwrap();
    session.insert("a", "2").unwrap();
    a1.commit(session).await.unwrap();
    assert_eq!(
        store.operations() - before,
        2,
        "get-and-touch, compare-and-swap"
    );
}

#[tokio::test]
async fn the_transit_copy_lives_only_while_requests_are_in_flight() {
    let store = store(&["n1"]);
    let (a1, a2) = (manager(&store), manager(&store));
    let id = create(&a1, "a", "1").await;
    let first = a1.load(Some(id.as_str())).await.unwrap();
    // Written on another server while `first` is in flight here: the next request
    // here reads it (its own read, not the shared copy), and slides the expiry.
    write(&a2, &id, "a", "2").await;
    let operations = store.operations();
    let second = a1.load(Some(id.as_str())).await.unwrap();
    assert_eq!(store.operations(), operations + 1, "every load reads");
    assert_eq!(second.get::<String>("a").unwrap().as_deref(), Some("2"));
    assert_eq!(a1.nonsticky().transit.lock().len(), 1);
    a1.commit(first).await.unwrap();
    assert_eq!(a1.nonsticky().transit.lock().len(), 1);
    drop(second); // a request may end without a commit
    assert!(a1.nonsticky().transit.lock().is_empty());
}

#[tokio::test]
async fn a_lock_not_acquired_in_time_fails_or_proceeds_as_configured() {
    let store = store(&["n1"]);
    let holder_server = builder(&store)
        .concurrency(Concurrency::Lock)
        .build()
        .unwrap();
    let id = create(&holder_server, "a", "1").await;
    let holder = holder_server.load(Some(id.as_str())).await.unwrap();
    for policy in [LockTimeoutPolicy::Fail, LockTimeoutPolicy::ProceedUnlocked] {
        let other = builder(&store)
            .concurrency(Concurrency::Lock)
            .lock_timeout(Duration::from_millis(30), policy)
            .build()
            .unwrap();
        let result = other.load(Some(id.as_str())).await;
        match policy {
            LockTimeoutPolicy::Fail => {
                assert!(
                    matches!(result, Err(LoadError::LockTimeout { .. })),
                    "{result:?}"
                )
            }
            LockTimeoutPolicy::ProceedUnlocked => assert!(result.is_ok()),
        }
        assert_eq!(other.stats().lock_timeouts, 1);
    }
    holder_server.commit(holder).await.unwrap();
}

#[tokio::test]
async fn auto_lock_scope_learns_read_only_patterns() {
    let store = store(&["n1"]);
    let a1 = builder(&store)
        .concurrency(Concurrency::Lock)
        .lock_scope(LockScope::Auto)
        .build()
        .unwrap();
    let id = create(&a1, "a", "1").await;
    let get = RequestInfo {
        method: "GET",
        path: "/cart",
    };
    let ops = |store: &MemoryStore| store.operations();
    let mut per_request = Vec::new();
    for _ in 0..(crate::AUTO_LOCK_LEARN_AFTER + 2) {
        settle(&a1).await; // background writes and lock releases are not counted
        let before = ops(&store);
        let session = a1.load_for(Some(id.as_str()), Some(&get)).await.unwrap();
        per_request.push(ops(&store) - before);
        a1.commit(session).await.unwrap();
    }
    // Locked: lock add + get-and-touch; learned: get-and-touch only.
    assert_eq!(per_request[0], 2);
    assert_eq!(*per_request.last().unwrap(), 1);

    // A request of that pattern that changes the session locks the pattern again.
    let mut session = a1.load_for(Some(id.as_str()), Some(&get)).await.unwrap();
    session.insert("a", "2").unwrap();
    a1.commit(session).await.unwrap();
    settle(&a1).await;
    let before = ops(&store);
    let session = a1.load_for(Some(id.as_str()), Some(&get)).await.unwrap();
    assert_eq!(ops(&store) - before, 2);
    a1.commit(session).await.unwrap();
}

#[tokio::test]
async fn a_path_lock_scope_locks_only_matching_requests() {
    let store = store(&["n1"]);
    let a1 = builder(&store)
        .concurrency(Concurrency::Lock)
        .lock_scope(LockScope::Paths(regex::Regex::new("^/cart").unwrap()))
        .build()
        .unwrap();
    let id = create(&a1, "a", "1").await;
    for (path, expected) in [("/cart/items", 2), ("/static/app.css", 1)] {
        settle(&a1).await;
        let before = store.operations();
        let info = RequestInfo {
            method: "POST",
            path,
        };
        let session = a1.load_for(Some(id.as_str()), Some(&info)).await.unwrap();
        assert_eq!(store.operations() - before, expected, "{path}");
        a1.commit(session).await.unwrap();
    }
}

#[tokio::test]
async fn a_down_backup_node_does_not_stop_the_primary_and_the_backup_comes_back() {
    let store = store(&["n1", "n2"]);
    let a1 = manager(&store);
    let id = create(&a1, "a", "1").await;
    settle(&a1).await;
    let primary = node(id.node());
    let backup = node(if id.node() == "n1" { "n2" } else { "n1" });
    store.set_node_up(&backup, false);
    write(&a1, &id, "a", "2").await;
    store.set_node_up(&backup, true);
    store.clear_node(&backup);
    // The next (unchanged) request finds no backup copy: it is repaired from the
    // primary (never rewritten from the request's snapshot).
    assert_eq!(read(&a1, &id, "a").await.as_deref(), Some("2"));
    settle(&a1).await;
    assert!(repaired(&a1, 1).await);
    assert_eq!(store.item_count(&backup), 1);
    store.set_node_up(&primary, false);
    assert_eq!(
        read(&a1, &id, "a").await.as_deref(),
        Some("2"),
        "served from the backup"
    );
}

/// A change whose backup copy failed, then a primary that goes down: without the
/// repair the read would move the session to the older copy and lose the change.
#[tokio::test]
async fn a_backup_copy_that_failed_is_repaired_from_the_primary() {
    for backup_mode in [
        BackupMode::Async,
        BackupMode::Sync {
            timeout: Duration::from_millis(200),
        },
    ] {
        let store = store(&["n1", "n2"]);
        let a1 = builder(&store).backup(backup_mode).build().unwrap();
        let id = create(&a1, "a", "1").await;
        settle(&a1).await;
        let primary = node(id.node());
        let backup = node(if id.node() == "n1" { "n2" } else { "n1" });
        store.set_node_up(&backup, false);
        let mut session = a1.load(Some(id.as_str())).await.unwrap();
        session.insert("a", "2").unwrap();
        let outcome = a1.commit(session).await.unwrap();
        if matches!(backup_mode, BackupMode::Sync { .. }) {
            assert!(
                matches!(outcome.backup, BackupStatus::Failed(_)),
                "{outcome:?}"
            );
        }
        settle(&a1).await;
        store.set_node_up(&backup, true);
        assert!(repaired(&a1, 1).await, "{backup_mode:?}: {:?}", a1.stats());
        assert_eq!(a1.stats().backup_copies_repaired, 1);
        store.set_node_up(&primary, false);
        let a2 = manager(&store);
        assert_eq!(
            read(&a2, &id, "a").await.as_deref(),
            Some("2"),
            "{backup_mode:?}: the backup copy holds the change"
        );
    }
}

/// A copy written to another node while the usual backup node was down leaves an
/// older copy on the usual one; once it is back, the repair replaces it, so that a
/// later failure of the primary does not move the session to the older copy.
#[tokio::test]
async fn an_older_copy_on_the_usual_backup_node_is_repaired_when_it_returns() {
    let store = store(&["n1", "n2", "n3"]);
    let a1 = manager(&store);
    let id = create_on(&a1, "n1", "a", "1").await;
    settle(&a1).await;
    store.set_node_up(&node("n2"), false);
    write(&a1, &id, "a", "2").await;
    settle(&a1).await;
    store.set_node_up(&node("n2"), true);
    assert!(repaired(&a1, 1).await, "{:?}", a1.stats());
    store.set_node_up(&node("n1"), false);
    assert_eq!(read(&manager(&store), &id, "a").await.as_deref(), Some("2"));
}

/// A copy that failed while every other node was down is repaired where reads look as
/// soon as one of them answers, even if the usual backup node stays down.
#[tokio::test]
async fn a_failed_copy_is_repaired_where_reads_look_while_the_usual_node_is_down() {
    let store = store(&["n1", "n2", "n3"]);
    let a1 = manager(&store);
    let id = create_on(&a1, "n1", "a", "1").await;
    settle(&a1).await;
    store.set_node_up(&node("n2"), false);
    store.set_node_up(&node("n3"), false);
    write(&a1, &id, "a", "2").await;
    settle(&a1).await;
    store.set_node_up(&node("n3"), true);
    assert!(repaired(&a1, 1).await, "{:?}", a1.stats());
    store.set_node_up(&node("n1"), false);
    assert_eq!(read(&manager(&store), &id, "a").await.as_deref(), Some("2"));
    // Still waiting for the usual backup node, which keeps the older copy.
    assert_eq!(a1.nonsticky().copy_repairs.pending(), 1);
}

/// With a single node there is no backup copy to write: nothing is remembered for a
/// repair (which could never happen), however many sessions change.
#[tokio::test]
async fn a_single_node_remembers_no_repairs() {
    let store = store(&["n1"]);
    let a1 = manager(&store);
    for n in 0..50 {
        create(&a1, "a", &n.to_string()).await;
    }
    assert_eq!(a1.nonsticky().copy_repairs.pending(), 0);
    assert!(a1.stats().commits >= 50);
}

/// A repair finds a copy at least as new as the primary (the session changed again
/// after the failure) and writes nothing. On paused time: the sweeps come exactly
/// when the test says, never before the writes below, however busy the machine.
#[tokio::test(start_paused = true)]
async fn a_repair_leaves_a_newer_copy_alone() {
    let store = store(&["n1", "n2"]);
    let sweep = Duration::from_secs(10);
    // The first sweep runs at build, the next one a sweep period later: after the
    // writes below, which take no time on paused time.
    let a1 = builder(&store)
        .retry_interval(sweep)
        .clock(Arc::new(crate::TokioClock::new()))
        .build()
        .unwrap();
    let id = create(&a1, "a", "1").await;
    settle(&a1).await;
    let backup = node(if id.node() == "n1" { "n2" } else { "n1" });
    store.set_node_up(&backup, false);
    write(&a1, &id, "a", "2").await;
    settle(&a1).await;
    store.set_node_up(&backup, true);
    assert_eq!(
        a1.nonsticky().copy_repairs.pending(),
        1,
        "the failed copy waits"
    );
    // Written before the sweep gets to the repair.
    write(&a1, &id, "a", "3").await;
    settle(&a1).await;
    let written = a1.stats().backups_written;
    tokio::time::sleep(sweep * 2).await;
    settle(&a1).await;
    assert_eq!(
        a1.nonsticky().copy_repairs.pending(),
        0,
        "the sweep took it"
    );
    assert_eq!(a1.stats().backup_copies_repaired, 0);
    assert_eq!(a1.stats().backup_copy_repairs_abandoned, 0);
    assert_eq!(a1.stats().backups_written, written);
    store.set_node_up(&node(id.node()), false);
    assert_eq!(read(&manager(&store), &id, "a").await.as_deref(), Some("3"));
}

#[tokio::test]
async fn a_restarted_empty_primary_is_refilled_from_the_backup() {
    let store = store(&["n1", "n2"]);
    let a1 = manager(&store);
    let id = create(&a1, "a", "1").await;
    settle(&a1).await;
    let primary = node(id.node());
    store.clear_node(&primary);
    assert_eq!(write(&a1, &id, "a", "2").await, CookieUpdate::Keep);
    assert_eq!(store.item_count(&primary), 1);
    let a2 = manager(&store);
    assert_eq!(read(&a2, &id, "a").await.as_deref(), Some("2"));
}

#[tokio::test]
async fn invalidate_and_cycle_id_end_both_copies_of_the_old_id() {
    let store = store(&["n1", "n2"]);
    let a1 = manager(&store);
    let old = create(&a1, "user", "ann").await;
    settle(&a1).await;
    let mut session = a1.load(Some(old.as_str())).await.unwrap();
    session.cycle_id();
    let CookieUpdate::Set { id: new, .. } = a1.commit(session).await.unwrap().cookie else {
        panic!("cycle_id sets a new cookie");
    };
    settle(&a1).await;
    let a2 = manager(&store);
    assert!(a2.load(Some(old.as_str())).await.unwrap().is_new());
    assert_eq!(read(&a2, &new, "user").await.as_deref(), Some("ann"));
    assert_ended(&store, &a1, &old, EndReason::Cycled).await;

    let mut session = a2.load(Some(new.as_str())).await.unwrap();
    session.invalidate();
    assert_eq!(
        a2.commit(session).await.unwrap().cookie,
        CookieUpdate::Clear
    );
    settle(&a2).await;
    assert_ended(&store, &a2, &new, EndReason::Ended).await;
    assert!(a1.load(Some(new.as_str())).await.unwrap().is_new());
}

/// The copies of `id` are ended: a tombstone over the primary, a deletion marker
/// beside where the backup copy was, and no backup copy.
async fn assert_ended(store: &MemoryStore, manager: &Manager, id: &SessionId, reason: EndReason) {
    let inner = manager.nonsticky();
    let primary = node(id.node());
    let backup = node(if id.node() == "n1" { "n2" } else { "n1" });
    let stored = store
        .get(&primary, &inner.common.store_key(id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(tombstone_reason(&stored.value), Some(reason));
    let marker = store
        .get(&backup, &inner.gone_key(id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(tombstone_reason(&marker.value), Some(reason));
    assert_eq!(
        store.get(&backup, &inner.backup_key(id)).await.unwrap(),
        None
    );
}

/// Once 100,000 sessions wait for a repair, a further failed copy cannot be
/// remembered: it is counted as abandoned (its copy stays older until the session's
/// next change). A session already waiting is not counted again.
#[tokio::test]
async fn a_repair_that_cannot_be_remembered_is_counted_as_abandoned() {
    let store = store(&["n1", "n2"]);
    // No sweep during the test: the table stays full.
    let a1 = builder(&store)
        .retry_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    let n1 = node("n1");
    let ttl = Ttl::After(Duration::from_secs(60));
    let first = SessionId::generate(&n1, None);
    a1.nonsticky()
        .remember_repair(&first, ttl, Stale::WhereReadsLook);
    for _ in 1..MAX_PENDING {
        a1.nonsticky()
            .remember_repair(&SessionId::generate(&n1, None), ttl, Stale::OnUsualNode);
    }
    assert_eq!(a1.nonsticky().copy_repairs.pending(), MAX_PENDING);
    assert_eq!(a1.stats().backup_copy_repairs_abandoned, 0);
    a1.nonsticky()
        .remember_repair(&first, ttl, Stale::WhereReadsLook);
    assert_eq!(
        a1.stats().backup_copy_repairs_abandoned,
        0,
        "already waiting"
    );
    a1.nonsticky()
        .remember_repair(&SessionId::generate(&n1, None), ttl, Stale::WhereReadsLook);
    assert_eq!(a1.stats().backup_copy_repairs_abandoned, 1);
    assert_eq!(a1.nonsticky().copy_repairs.pending(), MAX_PENDING);
}

#[test]
fn the_wait_after_a_lost_race_is_random_grows_and_is_capped() {
    let first: Vec<Duration> = (0..200).map(|_| super::merge_backoff(1)).collect();
    assert!(first.iter().all(|wait| *wait <= Duration::from_millis(2)));
    let fifth: Vec<Duration> = (0..200).map(|_| super::merge_backoff(5)).collect();
    assert!(fifth.iter().all(|wait| *wait <= Duration::from_millis(32)));
    // Half of the waits up to 32 ms are over 16 ms: all 200 under it would be a
    // fixed wait or no growth.
    assert!(fifth.iter().any(|wait| *wait > Duration::from_millis(16)));
    assert!(fifth.iter().any(|wait| *wait < Duration::from_millis(16)));
    let late = (0..200).map(|_| super::merge_backoff(40)).max().unwrap();
    assert!(late <= super::MAX_MERGE_BACKOFF);
}

/// H2: a repair remembered before a logout finds the primary's tombstone and makes no
/// copy of it: the backup node holds no copy of the ended session afterwards, and the
/// id stays ended when the primary's node goes down.
#[tokio::test]
async fn a_repair_never_copies_a_tombstone() {
    let store = store(&["n1", "n2"]);
    let a1 = builder(&store)
        .retry_interval(Duration::from_millis(300))
        .build()
        .unwrap();
    let id = create(&a1, "a", "1").await;
    settle(&a1).await;
    let backup = node(if id.node() == "n1" { "n2" } else { "n1" });
    store.set_node_up(&backup, false);
    write(&a1, &id, "a", "2").await;
    settle(&a1).await;
    assert_eq!(a1.nonsticky().copy_repairs.pending(), 1);
    let mut session = a1.load(Some(id.as_str())).await.unwrap();
    session.invalidate();
    assert_eq!(
        a1.commit(session).await.unwrap().cookie,
        CookieUpdate::Clear
    );
    assert_eq!(
        a1.pending_ends(),
        2,
        "the marker and the delete wait for the node"
    );
    store.set_node_up(&backup, true);
    let mut done = false;
    for _ in 0..200 {
        done = a1.nonsticky().copy_repairs.pending() == 0 && a1.pending_ends() == 0;
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(done, "the repair or the ends never ran");
    assert_eq!(a1.stats().backup_copies_repaired, 0);
    assert_eq!(
        store
            .get(&backup, &a1.nonsticky().backup_key(&id))
            .await
            .unwrap(),
        None
    );
    store.set_node_up(&node(id.node()), false);
    assert!(
        manager(&store)
            .load(Some(id.as_str()))
            .await
            .unwrap()
            .is_new()
    );
}

/// On paused time: a session read just before its interval runs out stays (the read
/// extends its copies), and one left alone for its interval plus the keep-alive slack
/// is gone from both copies: neither its primary nor its backup brings it back.
#[tokio::test(start_paused = true)]
async fn a_session_expires_with_its_remote_copies_on_paused_time() {
    let clock: Arc<dyn tandem_core::Clock> = Arc::new(crate::TokioClock::new());
    let store = Arc::new(MemoryStore::new([node("n1"), node("n2")]).with_clock(Arc::clone(&clock)));
    let interval = Duration::from_secs(30 * 60);
    let margin = Duration::from_secs(2);
    let a1 = builder(&store)
        .max_inactive(Some(interval))
        .clock(clock)
        .build()
        .unwrap();
    let id = create(&a1, "a", "1").await;
    settle(&a1).await;
    assert_eq!(
        store.item_count(&node("n1")) + store.item_count(&node("n2")),
        2
    );
    tokio::time::advance(interval - margin).await;
    assert_eq!(read(&a1, &id, "a").await.as_deref(), Some("1"));
    settle(&a1).await;
    tokio::time::advance(interval - margin).await;
    assert_eq!(read(&a1, &id, "a").await.as_deref(), Some("1"));
    settle(&a1).await;

    tokio::time::advance(interval + crate::keepalive_slack(interval) + margin).await;
    assert_eq!(
        store.item_count(&node("n1")) + store.item_count(&node("n2")),
        0
    );
    assert_eq!(read(&a1, &id, "a").await, None, "expired");
}

/// A session on a single node has no second node for its backup copy. A node that
/// keeps copies by itself (a replicated deployment) needs none, and the commit says
/// so; a lone node that does not is reported as a failed backup, as before.
#[tokio::test]
async fn a_single_replicating_node_needs_no_backup_copy() {
    for (replicates, expected_not_needed) in [(true, true), (false, false)] {
        let store = Arc::new(MemoryStore::new([node("n1")]).with_replication(replicates));
        let a1 = manager(&store);
        let mut session = a1.load(None).await.unwrap();
        session.insert("a", "1").unwrap();
        let backup = a1.commit(session).await.unwrap().backup;
        if expected_not_needed {
            assert_eq!(backup, BackupStatus::NotNeeded);
        } else {
            assert!(
                matches!(backup, BackupStatus::Failed(WriteFailure::NoNode)),
                "{backup:?}"
            );
        }
        assert_eq!(
            a1.nonsticky().copy_repairs.pending(),
            0,
            "nothing to repair"
        );
    }
}
