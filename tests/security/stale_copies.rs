//! Copies a server or node kept from before a logout or a change must not be served
//! as the live session: M2 (the old owner's local copy after a takeover), M4 (a late
//! backup write after an invalidation), M6 (the copy left on a node that was down
//! during a relocation), L5 (a failed read is not a missing session); and a change
//! made into a copy dropped meanwhile is not reported saved.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tandem::{BackupMode, BackupStatus, CookieUpdate, LoadError, SessionId};
use tandem_testkit::MemcachedCluster;

use crate::common::*;
use crate::support::*;

/// How long the old owner has to notice that its copy is stale.
const NOTICE: Duration = Duration::from_secs(5);

/// A session X.a1 held by A, taken over by B (the client was moved there: B's commit
/// sets X.b1). Returns A, B and both ids.
async fn taken_over(
    store: &std::sync::Arc<tandem::memcached::MemcachedStore>,
) -> (Manager, Manager, tandem::SessionId, tandem::SessionId) {
    let a = server(store, "a1").build().unwrap();
    let b = server(store, "b1").build().unwrap();
    let on_a = create(&a, 1).await;
    settle(&a).await;
    let session = b.load(Some(on_a.as_str())).await.unwrap();
    assert_eq!(session.get::<u32>("n").unwrap(), Some(1));
    let on_b = new_id(b.commit(session).await.unwrap().cookie);
    assert_eq!(on_b.route(), Some("b1"));
    (a, b, on_a, on_b)
}

/// M2: sticky servers A and B share memcached; B takes X over (X.a1 becomes X.b1) and
/// the user logs out on B. 5 s later a request with X.a1 (a stolen or replayed
/// cookie, or one of the user's own in flight) on A gets a new session. Today A
/// serves its stale local copy, with no remote check, for as long as it is used.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn m2_the_old_owner_does_not_serve_a_session_logged_out_elsewhere() {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let (a, b, on_a, on_b) = taken_over(&store).await;
    logout(&b, &on_b).await;
    settle(&b).await;
    tokio::time::sleep(NOTICE).await;
    let session = a.load(Some(on_a.as_str())).await.unwrap();
    assert!(
        session.is_new(),
        "A still serves X.a1 (n = {:?}) after the logout on B",
        session.get::<u32>("n").unwrap()
    );
}

/// M2 (variant): B takes X over and changes `n` from 1 to 2. 5 s later a request with
/// X.a1 on A gets either a new session or n = 2, never the old n = 1. Today A serves
/// its stale copy (and its next backup would overwrite B's).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn m2_the_old_owner_does_not_serve_a_value_changed_elsewhere() {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let (a, b, on_a, on_b) = taken_over(&store).await;
    write_n(&b, &on_b, 2).await;
    settle(&b).await;
    tokio::time::sleep(NOTICE).await;
    let session = a.load(Some(on_a.as_str())).await.unwrap();
    let n = session.get::<u32>("n").unwrap();
    assert!(
        session.is_new() || n == Some(2),
        "A serves X.a1 with the stale n = {n:?} after B changed it to 2"
    );
}

/// M4: a sticky backup write that is already on its way (held 300 ms by a wrapper
/// store, after the manager sent it) when the session is invalidated must not bring
/// the remote copy back: after the background work, another server loading X gets a
/// new session. Today the delete runs first, then the late write stores the session
/// again with a full TTL. Three sessions, each must stay gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn m4_a_late_backup_write_does_not_revive_an_invalidated_session() {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let slow_writes = Faulty::new(&store);
    let a = sticky_over(slow_writes.clone(), "a1").build().unwrap();
    let b = server(&store, "b1").build().unwrap();
    let mut revived = Vec::new();
    for round in 0..3 {
        let x = create(&a, 1).await;
        settle(&a).await;
        slow_writes.delay_writes(Duration::from_millis(300));
        let started = slow_writes.writes_started();
        let mut session = a.load(Some(x.as_str())).await.unwrap();
        session.insert("n", &2u32).unwrap();
        a.commit(session).await.unwrap();
        // The backup write is now inside the wrapper, on its way to memcached.
        let sent = wait_until(Duration::from_secs(2), || {
            slow_writes.writes_started() > started
        })
        .await;
        assert!(
            sent.is_some(),
            "precondition: the backup write was not sent"
        );
        logout(&a, &x).await;
        settle(&a).await;
        slow_writes.delay_writes(Duration::ZERO);
        let session = b.load(Some(x.as_str())).await.unwrap();
        if !session.is_new() {
            revived.push(format!(
                "round {round}: n = {:?}",
                session.get::<u32>("n").unwrap()
            ));
        }
    }
    assert!(
        revived.is_empty(),
        "invalidated sessions load again on another server: {}",
        revived.join(", ")
    );
}

/// M6, sticky: X lives on node n1 and is held by A; n1 hangs, and a request moves X to
/// n2 (new id, `Set`); the user logs out with the new id; n1 answers again. 3 s later
/// (past the probe and the negative cache) the old id X@n1 loads as a new session on
/// server B. Today the copy left on n1 is taken over as a live session.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn m6_sticky_the_copy_left_on_a_node_that_was_down_does_not_come_back() {
    let cluster = MemcachedCluster::start(2);
    let store = connect(&cluster).await;
    let a = server(&store, "a1").build().unwrap();
    let x = create_on(&a, "n1", 1).await;
    settle(&a).await;
    cluster.node("n1").pause();
    mark_down(&store, "n1").await;
    let session = a.load(Some(x.as_str())).await.unwrap();
    assert!(!session.is_new());
    let moved = new_id(a.commit(session).await.unwrap().cookie);
    assert_eq!(moved.node(), "n2", "precondition: the session moved to n2");
    logout(&a, &moved).await;
    settle(&a).await;
    cluster.node("n1").resume();
    wait_up(&store, "n1").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let b = server(&store, "b1").build().unwrap();
    let session = b.load(Some(x.as_str())).await.unwrap();
    assert!(
        session.is_new(),
        "the pre-relocation copy X@n1 loads as a live session (n = {:?}) after the logout",
        session.get::<u32>("n").unwrap()
    );
}

/// M6, non-sticky: X's primary is on n1; n1 hangs, a request moves X to n2 (new id);
/// the user logs out with the new id; n1 answers again. 3 s later the old id X@n1
/// loads as a new session on another server. Today the old primary on n1 is served
/// (and its TTL slid).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn m6_non_sticky_the_primary_left_on_a_node_that_was_down_does_not_come_back() {
    let cluster = MemcachedCluster::start(2);
    let store = connect(&cluster).await;
    let a = non_sticky(&store).build().unwrap();
    let x = create_on(&a, "n1", 1).await;
    settle(&a).await;
    cluster.node("n1").pause();
    mark_down(&store, "n1").await;
    let session = a.load(Some(x.as_str())).await.unwrap();
    assert!(!session.is_new());
    let moved = new_id(a.commit(session).await.unwrap().cookie);
    assert_eq!(moved.node(), "n2", "precondition: the session moved to n2");
    logout(&a, &moved).await;
    settle(&a).await;
    cluster.node("n1").resume();
    wait_up(&store, "n1").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let b = non_sticky(&store).build().unwrap();
    let session = b.load(Some(x.as_str())).await.unwrap();
    assert!(
        session.is_new(),
        "the pre-relocation primary X@n1 loads as a live session (n = {:?}) after the logout",
        session.get::<u32>("n").unwrap()
    );
}

/// L5: sticky server B does not hold X (A, which did, is gone; B has the same route).
/// The node hangs; a load of X on B fails with `LoadError::Unavailable`, so that the
/// web layer answers 503 and the cookie stays. Today the load gives a new session
/// whose commit clears the cookie: a blip logs the user out.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn l5_a_failed_remote_read_does_not_clear_the_cookie() {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let a = server(&store, "a1").build().unwrap();
    let x = create(&a, 1).await;
    settle(&a).await;
    drop(a);
    let b = server(&store, "a1").build().unwrap();
    cluster.node("n1").pause();
    let loaded = b.load(Some(x.as_str())).await;
    cluster.node("n1").resume();
    match loaded {
        Err(LoadError::Unavailable) => {}
        Err(other) => panic!("expected Unavailable, got {other:?}"),
        Ok(session) => {
            let new = session.is_new();
            let outcome = b.commit(session).await;
            let cleared = matches!(&outcome, Ok(o) if o.cookie == CookieUpdate::Clear);
            panic!(
                "expected Unavailable, got a session (new: {new}) whose commit answers {} (cookie cleared: {cleared})",
                describe(&outcome)
            );
        }
    }
}

/// One owner's requests on A for `for_how_long`: each reads `n` and writes `n + 1`
/// with a synchronous backup. Returns every load that found `n` below a change whose
/// commit reported its backup written (or queued): a loss the commit did not report.
async fn owner_increments(manager: Manager, id: SessionId, for_how_long: Duration) -> Vec<String> {
    let mut id = id;
    let mut unreported = 0u32;
    let mut losses = Vec::new();
    let until = std::time::Instant::now() + for_how_long;
    while std::time::Instant::now() < until {
        let Ok(mut session) = manager.load(Some(id.as_str())).await else {
            continue;
        };
        if session.is_new() {
            losses.push(format!("{id} was found new"));
            break;
        }
        let found = session.get::<u32>("n").unwrap().unwrap_or(0);
        if found < unreported {
            losses.push(format!(
                "{id}: n = {found} after {unreported} was reported saved"
            ));
            unreported = found;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
        session.insert("n", &(found + 1)).unwrap();
        if let Ok(outcome) = manager.commit(session).await {
            if !matches!(outcome.backup, BackupStatus::Failed(_)) {
                unreported = found + 1;
            }
            if let CookieUpdate::Set { id: set, .. } = outcome.cookie
                && set.random() == id.random()
            {
                id = set;
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    losses
}

/// A thief's requests with the stolen `id` on `manager` until `stop`: each loads the
/// session and, if `writes`, stores `cart`.
async fn thief(manager: Manager, id: SessionId, writes: bool, stop: Arc<AtomicBool>) {
    let mut value = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if let Ok(mut session) = manager.load(Some(id.as_str())).await {
            tokio::time::sleep(Duration::from_millis(2)).await;
            if writes && !session.is_new() {
                value += 1;
                session.insert("cart", &value).unwrap();
            }
            let _ = manager.commit(session).await;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Found by the fault matrix's `LoginUnderLoad` row: with synchronous backups, an
/// owner increments `n` on A while thieves use the stolen id on both A and B (each of
/// B's requests takes the session over; A's writes are then refused and A drops its
/// copy). A commit whose changes went into A's copy just before A dropped it must not
/// report its backup written: no later load may find `n` below a value whose commit
/// did not report its backup failed. Before the fix, the dropped copy's backup
/// counted as done, and several sessions per run lost a change reported saved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m2_a_sync_commit_into_a_copy_dropped_meanwhile_is_not_reported_saved() {
    let cluster = MemcachedCluster::start(3);
    let store = connect(&cluster).await;
    let sync = BackupMode::Sync { timeout: TIMEOUT };
    let a = server(&store, "a1").backup(sync).build().unwrap();
    let b = server(&store, "a2").backup(sync).build().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut owners = Vec::new();
    let mut thieves = Vec::new();
    for _ in 0..8 {
        let id = create(&a, 0).await;
        for (at, writes) in [(&a, false), (&a, true), (&b, false), (&b, true)] {
            let task = thief(at.clone(), id.clone(), writes, Arc::clone(&stop));
            thieves.push(tokio::spawn(task));
        }
        let task = owner_increments(a.clone(), id, Duration::from_secs(2));
        owners.push(tokio::spawn(task));
    }
    let mut losses = Vec::new();
    for owner in owners {
        losses.extend(owner.await.unwrap());
    }
    stop.store(true, Ordering::Relaxed);
    for thief in thieves {
        thief.await.unwrap();
    }
    assert!(
        losses.is_empty(),
        "{} changes reported saved were lost: {}",
        losses.len(),
        losses.join("; ")
    );
}

/// A request in flight on A when B takes its session over: A drops its copy (the peer
/// feed announces the takeover), and the request's commit then merges its change into
/// the current copy, read from memcached, rather than failing. Refusing it would let
/// anyone using the same id on another server keep its owner's every commit failing,
/// a login among them (the fault matrix's `LoginUnderLoad` row met that: a victim
/// refused 20 times in a row). Both changes survive; under `Concurrency::Lock`, whose
/// lock was on the dropped copy, the commit is refused as the session ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn m2_a_commit_whose_copy_was_taken_over_meanwhile_merges_into_the_current_one() {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    for concurrency in [tandem::Concurrency::Merge, tandem::Concurrency::Lock] {
        let a = server(&store, "a1")
            .concurrency(concurrency)
            .build()
            .unwrap();
        let b = server(&store, "b1")
            .concurrency(concurrency)
            .build()
            .unwrap();
        let id = create(&a, 1).await;
        settle(&a).await;
        let mut in_flight = a.load(Some(id.as_str())).await.unwrap();
        let mut on_b = b.load(Some(id.as_str())).await.unwrap();
        on_b.insert("cart", &7u32).unwrap();
        b.commit(on_b).await.unwrap();
        settle(&b).await;
        let dropped = wait_until(NOTICE, || a.stats().stale_copies_dropped > 0).await;
        assert!(
            dropped.is_some(),
            "A never dropped its copy ({concurrency:?})"
        );
        in_flight.insert("user", &42u32).unwrap();
        let committed = a.commit(in_flight).await;
        settle(&a).await;
        let c = server(&store, "c1").build().unwrap();
        let seen = c.load(Some(id.as_str())).await.unwrap();
        let (cart, user) = (
            seen.get::<u32>("cart").unwrap(),
            seen.get::<u32>("user").unwrap(),
        );
        match concurrency {
            tandem::Concurrency::Lock => {
                assert!(
                    matches!(committed, Err(tandem::CommitError::SessionEnded)),
                    "Lock: {}",
                    describe(&committed)
                );
                assert_eq!((cart, user), (Some(7), None));
            }
            _ => {
                assert!(committed.is_ok(), "Merge: {}", describe(&committed));
                assert_eq!((cart, user), (Some(7), Some(42)), "both changes survive");
            }
        }
    }
}
