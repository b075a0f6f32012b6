//! Non-sticky backup copies that outlive their primary never bring a session back,
//! whatever ended it: its expiry, a logout or an id change. And with the backup copy's
//! expiry slid at most once per period (`BackupRefresh::Throttled`, the default), a
//! session in use still has a backup copy that takes over when its primary node dies.

use std::time::{Duration, Instant};

use tandem::manager::BackupRefresh;
use tandem::model::{KeySpace, Ttl};
use tandem::{RemoteStore, SessionId};
use tandem_testkit::MemcachedCluster;

use crate::common::*;
use crate::support::*;

/// A backup copy repaired late (its node hung while the session changed, and answered
/// again 4 s later) lives as long as the primary has left, not a whole interval from
/// the repair. Interval 8 s; the session is read on another server 9.5 s after its
/// last change: its primary expired, and the repaired copy must not revive it. Before
/// the fix, the repair gave the copy 8 s from the repair (about 12 s after the
/// change), and the read restored the session from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_late_repaired_backup_copy_does_not_revive_an_expired_session() {
    let cluster = MemcachedCluster::start(2);
    let store = connect(&cluster).await;
    let interval = Some(Duration::from_secs(8));
    let a = non_sticky(&store).max_inactive(interval).build().unwrap();
    let b = non_sticky(&store).max_inactive(interval).build().unwrap();
    let x = create_on(&a, "n1", 1).await;
    settle(&a).await;
    let backup_node = ring_successor(&cluster, "n1");
    cluster.node(&backup_node).pause();
    mark_down(&store, &backup_node).await;
    write_n(&a, &x, 2).await;
    let changed = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    cluster.node(&backup_node).resume();
    wait_up(&store, &backup_node).await;
    let repaired = wait_until(Duration::from_secs(3), || {
        a.stats().backup_copies_repaired >= 1
    })
    .await;
    let mut checks = Checks::default();
    checks.check(repaired.is_some(), || {
        "precondition: the backup copy was never repaired".into()
    });
    let primary_left = cluster
        .node("n1")
        .remaining_ttl(key(KeySpace::Session, &x).as_str());
    let copy_left = cluster
        .node(&backup_node)
        .remaining_ttl(key(KeySpace::Backup, &x).as_str());
    checks.check(
        matches!((primary_left, copy_left), (Some(p), Some(c)) if c <= p + 1),
        || format!("the repaired copy lives {copy_left:?} s, its primary {primary_left:?} s"),
    );
    tokio::time::sleep(
        (changed + Duration::from_millis(9500)).saturating_duration_since(Instant::now()),
    )
    .await;
    let n = read_n(&b, &x).await;
    checks.check(n.is_none(), || {
        format!("a session expired 1.5 s ago loads again from its repaired copy: n = {n:?}")
    });
    checks.finish();
}

/// How a session ends in [`an_ended_session_does_not_come_back_from_a_copy_that_outlives_it`].
#[derive(Debug, Clone, Copy)]
enum Ending {
    Logout,
    CycledId,
}

/// X ends on server A (a logout, or an id change at login); then its primary node
/// restarts empty (the tombstone over X is gone) and a copy of X's last state is put
/// back as its backup copy with a whole interval to live, as a write that was late or
/// a node that comes back with old data would. Server B loads X: a new session, never
/// X's state. The deletion marker written beside the backup copies at the end says
/// so; the copy's time to live cannot.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_ended_session_does_not_come_back_from_a_copy_that_outlives_it() {
    let cluster = MemcachedCluster::start(2);
    let store = connect(&cluster).await;
    let a = non_sticky(&store).build().unwrap();
    let b = non_sticky(&store).build().unwrap();
    let mut checks = Checks::default();
    for ending in [Ending::Logout, Ending::CycledId] {
        let x = create_on(&a, "n1", 7).await;
        settle(&a).await;
        let backup_node = node(&ring_successor(&cluster, "n1"));
        let backup_key = key(KeySpace::Backup, &x);
        let copy = store.get(&backup_node, &backup_key).await.unwrap();
        checks.check(copy.is_some(), || {
            format!("{ending:?}: precondition: X has no backup copy")
        });
        match ending {
            Ending::Logout => logout(&a, &x).await,
            Ending::CycledId => {
                login(&a, &x).await;
            }
        }
        settle(&a).await;
        cluster.node("n1").restart();
        wait_up(&store, "n1").await;
        if let Some(copy) = copy {
            let ttl = Ttl::After(Duration::from_secs(1800));
            store
                .set(&backup_node, &backup_key, &copy.value, ttl)
                .await
                .unwrap();
        }
        let session = b.load(Some(x.as_str())).await.unwrap();
        let n = session.get::<u32>("n").unwrap();
        checks.check(session.is_new() && n.is_none(), || {
            format!("{ending:?}: X loads again from a copy that outlived it: n = {n:?}")
        });
    }
    checks.finish();
}

/// The throttled refresh keeps a session in use backed: interval 4 s (a refresh at
/// most every 0.5 s per server), read-only requests every 100 ms for 10 s (two and a
/// half intervals, without any write after the first), then the primary node dies.
/// Server B moves the session to its backup copy with the state it had. Meanwhile far
/// fewer touches than reads went to the backup copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_session_in_use_keeps_a_backup_copy_while_its_refreshes_are_throttled() {
    let cluster = MemcachedCluster::start(2);
    let store = connect(&cluster).await;
    let interval = Some(Duration::from_secs(4));
    let a = non_sticky(&store).max_inactive(interval).build().unwrap();
    let b = non_sticky(&store).max_inactive(interval).build().unwrap();
    let x = create_on(&a, "n1", 5).await;
    settle(&a).await;
    let started = Instant::now();
    let mut reads = 0u64;
    while started.elapsed() < Duration::from_secs(10) {
        assert_eq!(read_n(&a, &x).await, Some(5), "read {reads} lost X");
        reads += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    settle(&a).await;
    let stats = a.stats();
    let mut checks = Checks::default();
    checks.check(stats.touches <= reads / 3, || {
        format!("{} touches for {reads} reads", stats.touches)
    });
    checks.check(stats.backup_refreshes_skipped >= reads / 2, || {
        format!(
            "{} refreshes skipped of {reads}",
            stats.backup_refreshes_skipped
        )
    });
    cluster.node("n1").kill();
    mark_down(&store, "n1").await;
    let session = b.load(Some(x.as_str())).await.unwrap();
    let n = session.get::<u32>("n").unwrap();
    checks.check(!session.is_new() && n == Some(5), || {
        format!(
            "after its primary node died, X is new = {}, n = {n:?}",
            session.is_new()
        )
    });
    checks.finish();
}

/// With `BackupRefresh::EveryRead` every unchanged request touches the backup copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_read_refreshes_the_backup_copy_when_asked_to() {
    let cluster = MemcachedCluster::start(2);
    let store = connect(&cluster).await;
    let a = non_sticky(&store)
        .backup_refresh(BackupRefresh::EveryRead)
        .build()
        .unwrap();
    let x: SessionId = create(&a, 1).await;
    settle(&a).await;
    for _ in 0..10 {
        assert_eq!(read_n(&a, &x).await, Some(1));
    }
    settle(&a).await;
    let stats = a.stats();
    assert_eq!(
        (stats.touches, stats.backup_refreshes_skipped),
        (10, 0),
        "{stats:?}"
    );
}

/// A logout on server A races 16 concurrent read loops of the same session on server
/// B, whose every unchanged read touches the backup copy (`EveryRead`, the most
/// touches a logout can race). Once they stop, X's primary node restarts empty (its
/// tombstone gone), and neither B nor a fresh server C loads X: no touch or repair
/// that ran around the logout brought a copy back. No racing read failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_logout_racing_reads_on_another_server_stays_final() {
    let cluster = MemcachedCluster::start(2);
    let store = connect(&cluster).await;
    let a = non_sticky(&store).build().unwrap();
    let b = non_sticky(&store)
        .backup_refresh(BackupRefresh::EveryRead)
        .build()
        .unwrap();
    let x = create_on(&a, "n1", 3).await;
    settle(&a).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..16)
        .map(|_| {
            let (b, x, stop) = (b.clone(), x.clone(), std::sync::Arc::clone(&stop));
            tokio::spawn(async move {
                let mut errors = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match b.load(Some(x.as_str())).await {
                        Ok(session) => {
                            if let Err(error) = b.commit(session).await {
                                errors.push(format!("commit: {error:?}"));
                            }
                        }
                        Err(error) => errors.push(format!("load: {error:?}")),
                    }
                    // Once the id ended, a load is answered in process without an
                    // await that yields: let the other tasks (the logout) run.
                    tokio::task::yield_now().await;
                }
                errors
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    logout(&a, &x).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut errors = Vec::new();
    for reader in readers {
        errors.extend(reader.await.unwrap());
    }
    settle(&a).await;
    settle(&b).await;
    cluster.node("n1").restart();
    wait_up(&store, "n1").await;
    let c = non_sticky(&store).build().unwrap();
    let mut checks = Checks::default();
    checks.check(errors.is_empty(), || {
        format!(
            "{} reads racing the logout failed: {:?}",
            errors.len(),
            &errors[..errors.len().min(3)]
        )
    });
    for (name, server) in [("B", &b), ("C", &c)] {
        let session = server.load(Some(x.as_str())).await.unwrap();
        let n = session.get::<u32>("n").unwrap();
        checks.check(session.is_new() && n.is_none(), || {
            format!("{name} loads the logged-out session again: n = {n:?}")
        });
    }
    checks.finish();
}
