//! H1: `cycle_id` (session-fixation protection) must end the old id for every request
//! but the one that cycled it. An attacker plants X in the victim's browser and keeps
//! requests with X in flight; the victim logs in (`user` stored, id cycled to Y). No
//! request carrying X may then be told Y, see `user`, or write into Y.

use tandem::{CommitError, CommitOutcome, Concurrency, SessionId};
use tandem_testkit::MemcachedCluster;

use crate::common::*;
use crate::support::*;

/// What one attacker request that carried X saw and got.
struct Seen {
    new: bool,
    user: bool,
    commit: Result<CommitOutcome, CommitError>,
}

/// A whole request with `id` that waits (if it must) for the session, then writes
/// `cart` if `write`.
async fn request(manager: Manager, id: SessionId, write: bool) -> Seen {
    let mut session = manager.load(Some(id.as_str())).await.unwrap();
    let (new, user) = (session.is_new(), session.contains("user"));
    if write {
        session.insert("cart", &7u32).unwrap();
    }
    let commit = manager.commit(session).await;
    Seen { new, user, commit }
}

/// The expectations on the two requests that were in flight with X when the login
/// committed: the read-only one commits without being handed Y, the writing one
/// fails with `SessionEnded`.
async fn check_in_flight(
    checks: &mut Checks,
    manager: &Manager,
    reader: tandem::RequestSession<tandem::SpeedyCodec>,
    writer: tandem::RequestSession<tandem::SpeedyCodec>,
    y: &SessionId,
) {
    let read = manager.commit(reader).await;
    checks.check(
        matches!(&read, Ok(outcome) if !names(&outcome.cookie, y)),
        || {
            format!(
                "read-only request in flight with X: expected Ok without Y, got {}",
                describe(&read)
            )
        },
    );
    let written = manager.commit(writer).await;
    checks.check(matches!(written, Err(CommitError::SessionEnded)), || {
        format!(
            "writing request in flight with X: expected SessionEnded, got {}",
            describe(&written)
        )
    });
}

/// Whether Y holds the attacker's `cart`, read on `manager`.
async fn check_y_clean(checks: &mut Checks, manager: &Manager, y: &SessionId) {
    let session = manager.load(Some(y.as_str())).await.unwrap();
    checks.check(!session.is_new(), || {
        "the victim's session Y is gone".into()
    });
    checks.check(!session.contains("cart"), || {
        "the attacker's write with X landed in Y".into()
    });
    drop(session);
}

/// A request with X started after the login: a new session without `user`, never
/// told Y.
async fn check_later(
    checks: &mut Checks,
    manager: &Manager,
    x: &SessionId,
    y: &SessionId,
    at: &str,
) {
    let seen = request(manager.clone(), x.clone(), false).await;
    checks.check(seen.new, || {
        format!("a load of X started after the login on {at} is not new")
    });
    checks.check(!seen.user, || {
        format!("a load of X on {at} sees the victim's `user`")
    });
    checks.check(
        !matches!(&seen.commit, Ok(outcome) if names(&outcome.cookie, y)),
        || {
            format!(
                "a later request with X on {at} got {}",
                describe(&seen.commit)
            )
        },
    );
}

/// Sticky, one server: requests with X in flight (one read-only, one writing
/// `cart`) while the login cycles X to Y.
async fn sticky_in_flight(concurrency: Concurrency) {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let a = server(&store, "a1")
        .concurrency(concurrency)
        .build()
        .unwrap();
    let x = create(&a, 1).await;
    settle(&a).await;
    let mut checks = Checks::default();
    let reader = a.load(Some(x.as_str())).await.unwrap();
    let mut writer = a.load(Some(x.as_str())).await.unwrap();
    writer.insert("cart", &7u32).unwrap();
    let y = login(&a, &x).await;
    check_in_flight(&mut checks, &a, reader, writer, &y).await;
    check_y_clean(&mut checks, &a, &y).await;
    check_later(&mut checks, &a, &x, &y, "the same server").await;
    settle(&a).await;
    let b = server(&store, "b1").build().unwrap();
    check_later(&mut checks, &b, &x, &y, "another server").await;
    checks.finish();
}

/// H1, sticky `Concurrency::Merge`: a read-only request with X in flight during the
/// login commits Ok without being handed Y (today: `Set{Y}`); a writing one fails with
/// `SessionEnded` (today: Ok, its change merged into Y and `Set{Y}`); later loads of
/// X, here and on another server, are new.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn h1_sticky_merge_requests_in_flight_with_the_old_id_never_get_the_new_one() {
    sticky_in_flight(Concurrency::Merge).await;
}

/// H1, sticky `Concurrency::LastWriterWins`: as for Merge.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn h1_sticky_last_writer_wins_requests_in_flight_with_the_old_id_never_get_the_new_one() {
    sticky_in_flight(Concurrency::LastWriterWins).await;
}

/// H1, sticky `Concurrency::Lock`: requests with X that were already waiting for the
/// session lock when the login committed get a new session without `user` and are
/// never told Y (today they snapshot the post-login state, `user` included, and get
/// `Set{Y}`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn h1_sticky_lock_requests_waiting_with_the_old_id_get_a_new_session() {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let a = server(&store, "a1")
        .concurrency(Concurrency::Lock)
        .build()
        .unwrap();
    let x = create(&a, 1).await;
    settle(&a).await;
    let mut victim = a.load(Some(x.as_str())).await.unwrap();
    victim.insert("user", &42u32).unwrap();
    victim.cycle_id();
    let reader = tokio::spawn(request(a.clone(), x.clone(), false));
    let writer = tokio::spawn(request(a.clone(), x.clone(), true));
    let waiting = wait_until(std::time::Duration::from_secs(3), || {
        a.stats().lock_waits >= 2
    })
    .await;
    assert!(
        waiting.is_some(),
        "the attacker's requests are not waiting for the lock"
    );
    let y = new_id(a.commit(victim).await.unwrap().cookie);
    let mut checks = Checks::default();
    for (what, seen) in [
        ("read-only", reader.await.unwrap()),
        ("writing", writer.await.unwrap()),
    ] {
        checks.check(seen.new, || {
            format!("{what} request waiting with X got the session, not a new one")
        });
        checks.check(!seen.user, || {
            format!("{what} request waiting with X sees the victim's `user`")
        });
        checks.check(
            !matches!(&seen.commit, Ok(outcome) if names(&outcome.cookie, &y)),
            || {
                format!(
                    "{what} request waiting with X got {}",
                    describe(&seen.commit)
                )
            },
        );
    }
    check_y_clean(&mut checks, &a, &y).await;
    checks.finish();
}

/// Non-sticky, one server: requests with X in flight while the login cycles X to Y on
/// the same server, and a new load of X there while they still are.
async fn non_sticky_in_flight(concurrency: Concurrency) {
    let cluster = MemcachedCluster::start(2);
    let store = connect(&cluster).await;
    let a = non_sticky(&store).concurrency(concurrency).build().unwrap();
    let b = non_sticky(&store).build().unwrap();
    let x = create(&a, 1).await;
    settle(&a).await;
    let mut checks = Checks::default();
    let reader = a.load(Some(x.as_str())).await.unwrap();
    let mut writer = a.load(Some(x.as_str())).await.unwrap();
    writer.insert("cart", &7u32).unwrap();
    let y = login(&a, &x).await;
    // The attacker's requests are still in flight: a new one must not find Y through
    // the copy they share.
    check_later(
        &mut checks,
        &a,
        &x,
        &y,
        "the same server, requests with X in flight",
    )
    .await;
    check_in_flight(&mut checks, &a, reader, writer, &y).await;
    settle(&a).await;
    check_y_clean(&mut checks, &b, &y).await;
    check_later(&mut checks, &b, &x, &y, "another server").await;
    checks.finish();
}

/// H1, non-sticky `Concurrency::Merge`, one server: a new load of X while requests
/// with X are in flight is new (today it gets Y's state, `user` included, from the
/// shared transit copy, and `Set{Y}`); the in-flight read-only request is not told Y;
/// the in-flight writer fails with `SessionEnded` and its change is not in Y.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn h1_non_sticky_merge_the_shared_copy_never_hands_out_the_new_id() {
    non_sticky_in_flight(Concurrency::Merge).await;
}

/// H1, non-sticky `Concurrency::LastWriterWins`, one server: as for Merge.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn h1_non_sticky_last_writer_wins_the_shared_copy_never_hands_out_the_new_id() {
    non_sticky_in_flight(Concurrency::LastWriterWins).await;
}

/// H1, non-sticky `Concurrency::Lock` (`LockScope::All`, which the audit says is not
/// affected): requests with X waiting for the lock during the login, on the same
/// server and on another one, never see `user` or get Y; loads of X after the login
/// are new everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn h1_non_sticky_lock_waiting_requests_never_get_the_new_id() {
    let cluster = MemcachedCluster::start(2);
    let store = connect(&cluster).await;
    let a = non_sticky(&store)
        .concurrency(Concurrency::Lock)
        .build()
        .unwrap();
    let b = non_sticky(&store)
        .concurrency(Concurrency::Lock)
        .build()
        .unwrap();
    let x = create(&a, 1).await;
    settle(&a).await;
    let mut victim = a.load(Some(x.as_str())).await.unwrap();
    victim.insert("user", &42u32).unwrap();
    victim.cycle_id();
    let here = tokio::spawn(request(a.clone(), x.clone(), true));
    let there = tokio::spawn(request(b.clone(), x.clone(), true));
    let waiting = wait_until(std::time::Duration::from_secs(3), || {
        a.stats().lock_waits >= 1 && b.stats().lock_waits >= 1
    })
    .await;
    assert!(
        waiting.is_some(),
        "the attacker's requests are not waiting for the lock"
    );
    let y = new_id(a.commit(victim).await.unwrap().cookie);
    let mut checks = Checks::default();
    for (at, seen) in [
        ("the same server", here.await.unwrap()),
        ("another server", there.await.unwrap()),
    ] {
        checks.check(!seen.user, || {
            format!("a request waiting with X on {at} sees the victim's `user`")
        });
        checks.check(
            !matches!(&seen.commit, Ok(outcome) if names(&outcome.cookie, &y)),
            || {
                format!(
                    "a request waiting with X on {at} got {}",
                    describe(&seen.commit)
                )
            },
        );
    }
    settle(&a).await;
    settle(&b).await;
    check_y_clean(&mut checks, &a, &y).await;
    let c = non_sticky(&store).build().unwrap();
    check_later(&mut checks, &c, &x, &y, "a third server").await;
    checks.finish();
}

/// Non-sticky, two servers sharing memcached: the attacker's requests with X are in
/// flight on B while the victim logs in on A.
async fn non_sticky_two_servers(concurrency: Concurrency) {
    let cluster = MemcachedCluster::start(2);
    let store = connect(&cluster).await;
    let a = non_sticky(&store).concurrency(concurrency).build().unwrap();
    let b = non_sticky(&store).concurrency(concurrency).build().unwrap();
    let x = create(&a, 1).await;
    settle(&a).await;
    let mut checks = Checks::default();
    let reader = b.load(Some(x.as_str())).await.unwrap();
    let mut writer = b.load(Some(x.as_str())).await.unwrap();
    writer.insert("cart", &7u32).unwrap();
    let y = login(&a, &x).await;
    settle(&a).await;
    check_later(
        &mut checks,
        &b,
        &x,
        &y,
        "B, requests with X in flight there",
    )
    .await;
    check_in_flight(&mut checks, &b, reader, writer, &y).await;
    settle(&b).await;
    check_y_clean(&mut checks, &a, &y).await;
    check_later(&mut checks, &a, &x, &y, "A after B's requests ended").await;
    check_later(&mut checks, &b, &x, &y, "B after its requests ended").await;
    checks.finish();
}

/// H1, non-sticky `Concurrency::Merge`, two servers: requests with X in flight on B
/// during the login on A: the read-only one is not told Y, the writing one fails with
/// `SessionEnded`; loads of X afterwards are new on both servers, and Y never holds
/// the attacker's change.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn h1_non_sticky_merge_two_servers_the_old_id_ends_everywhere() {
    non_sticky_two_servers(Concurrency::Merge).await;
}

/// H1, non-sticky `Concurrency::LastWriterWins`, two servers: as for Merge.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn h1_non_sticky_last_writer_wins_two_servers_the_old_id_ends_everywhere() {
    non_sticky_two_servers(Concurrency::LastWriterWins).await;
}

/// L13, non-sticky: the primary's node dies between the load and the commit of a
/// login (`cycle_id`), so the commit moves the session to the next node and cycles
/// its id in one go. Afterwards the old id X loads as a new session on another
/// server. Today the commit deletes the copies of the relocated old id (which never
/// existed) instead of X's, and X loads from its backup copy, pre-login content.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn l13_non_sticky_a_login_that_relocates_still_ends_the_old_id() {
    let cluster = MemcachedCluster::start(2);
    let store = connect(&cluster).await;
    let a = non_sticky(&store).build().unwrap();
    let x = create_on(&a, "n1", 1).await;
    settle(&a).await;
    let mut victim = a.load(Some(x.as_str())).await.unwrap();
    victim.insert("user", &42u32).unwrap();
    victim.cycle_id();
    cluster.node("n1").kill();
    let outcome = a.commit(victim).await;
    let y = match outcome {
        Ok(outcome) => new_id(outcome.cookie),
        Err(error) => panic!("precondition: the login did not move to n2 ({error:?})"),
    };
    assert_eq!(y.node(), "n2", "precondition: the login moved to n2");
    settle(&a).await;
    let b = non_sticky(&store).build().unwrap();
    let seen = request(b.clone(), x.clone(), false).await;
    assert!(
        seen.new,
        "the old id X loads again after a login that relocated (user: {}, commit: {})",
        seen.user,
        describe(&seen.commit)
    );
}
