//! M1: the non-sticky remote session lock must belong to the request that took it.

use std::time::{Duration, Instant};

use tandem::{CommitError, Concurrency, LoadError, manager::LockTimeoutPolicy};
use tandem_testkit::MemcachedCluster;

use crate::common::*;
use crate::support::*;

/// M1: non-sticky `Concurrency::Lock` with the shortest lock TTL (1 s). A lock is
/// renewed while its request runs; R1 on A cannot renew it (A's node fails the
/// renewals), so it expires under R1, and R2 on B takes it and holds it (renewing it).
/// R1 then commits its change, and R3 on C (lock timeout 500 ms, `Fail`) loads while
/// R2 still holds the lock. R1's commit must fail with `Conflict` (it no longer holds
/// its lock; today it succeeds), and must not release R2's lock: R3 must time out
/// (today R1's commit deletes R2's lock, and R3 gets in).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn m1_a_request_that_outlived_its_lock_does_not_release_the_next_holders() {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let failing = Faulty::new(&store);
    let locking = |store: std::sync::Arc<dyn tandem::RemoteStore>, timeout: Duration| {
        non_sticky_over(store)
            .concurrency(Concurrency::Lock)
            .lock_ttl(Duration::from_secs(1))
            .lock_timeout(timeout, LockTimeoutPolicy::Fail)
            .build()
            .unwrap()
    };
    let a = locking(failing.clone(), Duration::from_secs(5));
    let b = locking(store.clone(), Duration::from_secs(5));
    let c = locking(store.clone(), Duration::from_millis(500));
    let x = create(&a, 1).await;
    settle(&a).await;

    failing.fail_lock_renewals(true);
    let mut r1 = a.load(Some(x.as_str())).await.unwrap();
    r1.insert("n", &2u32).unwrap();
    // R1's lock lives its TTL (and memcached's second of slack), then R2 gets it.
    let started = Instant::now();
    let r2 = b
        .load(Some(x.as_str()))
        .await
        .expect("precondition: R2 takes the lock once R1's expired");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "precondition: R2 waited for R1's lock ({:?})",
        started.elapsed()
    );
    // R2 holds it past its TTL: renewed.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let mut checks = Checks::default();
    let r1_outcome = a.commit(r1).await;
    checks.check(
        matches!(r1_outcome, Err(CommitError::Conflict { .. })),
        || {
            format!(
                "R1's commit after its lock expired: expected Conflict, got {}",
                describe(&r1_outcome)
            )
        },
    );
    // R1's lock release runs in the background.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r3 = c.load(Some(x.as_str())).await;
    checks.check(matches!(r3, Err(LoadError::LockTimeout { .. })), || {
        format!(
            "R3 loaded while R2 held the lock: expected LockTimeout, got {}",
            match &r3 {
                Ok(session) => format!("a session (new: {})", session.is_new()),
                Err(error) => format!("{error:?}"),
            }
        )
    });
    drop(r3);
    checks.check(b.commit(r2).await.is_ok(), || "R2's commit failed".into());
    checks.finish();
}

/// M2: a lock `add` that lands but whose answer is lost (a timeout while it queued, a
/// connection dropped on the way back) leaves this request's own token in the lock.
/// Its retry must recognise the lock as its own and go on, instead of waiting for the
/// whole TTL for a lock nobody releases (then failing with `LockTimeout`, and leaving
/// every later request of the session waiting too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m2_a_lock_add_whose_answer_was_lost_is_recognised_as_taken() {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let faulty = Faulty::new(&store);
    let manager = non_sticky_over(faulty.clone())
        .concurrency(Concurrency::Lock)
        .lock_ttl(Duration::from_secs(5))
        .lock_timeout(Duration::from_secs(2), LockTimeoutPolicy::Fail)
        .build()
        .unwrap();
    let x = create(&manager, 1).await;
    settle(&manager).await;

    faulty.lose_lock_add_answers(1);
    let started = Instant::now();
    let mut request = manager
        .load(Some(x.as_str()))
        .await
        .expect("the retry finds its own lock");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the load waited {:?}",
        started.elapsed()
    );
    request.insert("n", &2u32).unwrap();
    manager
        .commit(request)
        .await
        .expect("the commit holds the lock");

    // The lock was released: the next request gets in at once.
    let started = Instant::now();
    let next = manager.load(Some(x.as_str())).await.expect("the next load");
    assert_eq!(next.get::<u32>("n").unwrap(), Some(2));
    assert!(started.elapsed() < Duration::from_secs(1));
    manager.commit(next).await.unwrap();
}
