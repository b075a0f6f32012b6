//! Non-sticky `Concurrency::Lock` with many truly concurrent requests of one session:
//! this process's requests queue for the session lock and hand the remote lock from
//! one to the next, and the remote lock still excludes the other servers. Real
//! memcached processes throughout.

#[path = "../common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tandem::{CommitError, Concurrency, LoadError, RemoteStore, manager::LockTimeoutPolicy};
use tandem_testkit::MemcachedCluster;

use common::*;

/// A non-sticky server in lock mode over `store`.
fn locking(store: &Arc<tandem::memcached::MemcachedStore>, timeout: Duration) -> Arc<Manager> {
    Arc::new(
        non_sticky_over(Arc::clone(store) as Arc<dyn RemoteStore>)
            .concurrency(Concurrency::Lock)
            .lock_timeout(timeout, LockTimeoutPolicy::Fail)
            .build()
            .unwrap(),
    )
}

/// One increment of `n` in a request of its own; whether it was accepted.
async fn increment(manager: &Manager, id: &tandem::SessionId) -> bool {
    let Ok(mut session) = manager.load(Some(id.as_str())).await else {
        return false;
    };
    assert!(!session.is_new(), "the session vanished");
    let n = session.get::<u32>("n").unwrap().unwrap_or(0);
    // A yield between the read and the write: without the lock, another request
    // reads the same value meanwhile.
    tokio::task::yield_now().await;
    session.insert("n", &(n + 1)).unwrap();
    manager.commit(session).await.is_ok()
}

/// 48 concurrent increments on server A (they queue there and share one remote lock)
/// and 16 on server B, all of one session: every accepted increment is in the final
/// value, and A's requests used far fewer memcached operations than one remote lock
/// per request would take (`add`, and a read and a delete to release it).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_on_two_servers_lose_no_update() {
    let cluster = MemcachedCluster::start(1);
    let store_a = connect(&cluster).await;
    let store_b = connect(&cluster).await;
    let a = locking(&store_a, Duration::from_secs(10));
    let b = locking(&store_b, Duration::from_secs(10));
    let id = create(&a, 0).await;
    let before = operations(&store_a);

    let mut tasks = Vec::new();
    for round in 0..64 {
        let manager = Arc::clone(if round % 4 == 3 { &b } else { &a });
        let id = id.clone();
        tasks.push(tokio::spawn(async move { increment(&manager, &id).await }));
    }
    let mut accepted = 0;
    for task in tasks {
        accepted += u32::from(task.await.unwrap());
    }
    let per_request_a = (operations(&store_a) - before) as f64 / 48.0;

    assert_eq!(
        accepted, 64,
        "every increment waits its turn and is accepted"
    );
    assert_eq!(
        read_n(&a, &id).await,
        Some(accepted),
        "an accepted increment was lost"
    );
    assert_eq!(read_n(&b, &id).await, Some(accepted));
    // A read and a write per request, and the lock now and then: without the
    // hand-over, each request also takes and releases the lock (3 more operations).
    assert!(
        per_request_a < 4.0,
        "server A sent {per_request_a:.2} memcached operations per request"
    );
}

/// While server A's requests hand the lock from one to the next, a request on server
/// B waits, and gets its turn within the hand-over bound (A releases the lock after a
/// bounded time even though its queue never empties).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_busy_server_does_not_starve_another() {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let a = locking(&store, Duration::from_secs(10));
    let b = locking(&store, Duration::from_secs(10));
    let id = create(&a, 0).await;

    // Server A: 8 clients incrementing back to back for 1.5 s.
    let stop = Instant::now() + Duration::from_millis(1500);
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (a, id) = (Arc::clone(&a), id.clone());
        clients.push(tokio::spawn(async move {
            let mut accepted = 0;
            while Instant::now() < stop {
                accepted += u32::from(increment(&a, &id).await);
            }
            accepted
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let b_accepted = increment(&b, &id).await;
    let waited = started.elapsed();
    let mut accepted = u32::from(b_accepted);
    for client in clients {
        accepted += client.await.unwrap();
    }
    assert!(b_accepted, "server B's increment failed");
    assert!(
        waited < Duration::from_millis(1200),
        "server B waited {waited:?}, until server A's clients stopped"
    );
    assert_eq!(
        read_n(&a, &id).await,
        Some(accepted),
        "an accepted increment was lost"
    );
}

/// Requests dropped at their await points (waiting for their turn, holding the lock
/// before their commit, in the middle of their commit) leave nothing taken: the next
/// request of the session, on this server and on another one with a short lock
/// timeout, gets the lock at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dropped_requests_leave_nothing_taken() {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let a = locking(&store, Duration::from_secs(5));
    let b = locking(&store, Duration::from_millis(300));
    let id = create(&a, 0).await;

    for cut in [0u64, 1, 2, 5, 10, 50, 200, 500, 1000, 3000] {
        // A holder that never commits (dropped later), waiters behind it, and
        // requests cut short after `cut` microseconds wherever they are.
        let holder = a.load(Some(id.as_str())).await.unwrap();
        let mut waiters = Vec::new();
        for _ in 0..6 {
            let (a, id) = (Arc::clone(&a), id.clone());
            waiters.push(tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_micros(cut), increment(&a, &id)).await;
            }));
        }
        let mut queued = Vec::new();
        for _ in 0..4 {
            let (a, id) = (Arc::clone(&a), id.clone());
            queued.push(tokio::spawn(async move { increment(&a, &id).await }));
        }
        tokio::time::sleep(Duration::from_micros(cut)).await;
        drop(holder);
        for waiter in waiters {
            waiter.await.unwrap();
        }
        for request in queued {
            assert!(
                request.await.unwrap(),
                "a queued request failed (cut {cut} µs)"
            );
        }
        // Nothing left taken: server B (300 ms lock timeout) gets the lock at once.
        let started = Instant::now();
        let session = b.load(Some(id.as_str())).await;
        assert!(
            session.is_ok(),
            "server B did not get the lock after the drops (cut {cut} µs): {:?}",
            session.err()
        );
        assert!(started.elapsed() < Duration::from_millis(250));
        b.commit(session.unwrap()).await.unwrap();
        // Nor in this process: its queue moves on.
        let again = tokio::time::timeout(Duration::from_secs(1), a.load(Some(id.as_str())))
            .await
            .expect("server A's queue is stuck");
        a.commit(again.unwrap()).await.unwrap();
    }
}

/// A waiter queued here longer than the lock timeout gets the defined outcome
/// (`Fail`: a lock timeout), and the queue moves on afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_waiter_beyond_the_lock_timeout_fails_and_the_queue_moves_on() {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let a = locking(&store, Duration::from_millis(300));
    let id = create(&a, 0).await;

    let mut holder = a.load(Some(id.as_str())).await.unwrap();
    let started = Instant::now();
    let waiter = a.load(Some(id.as_str())).await;
    assert!(
        matches!(waiter, Err(LoadError::LockTimeout { .. })),
        "expected a lock timeout, got {:?}",
        waiter.map(|session| session.is_new())
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(started.elapsed() < Duration::from_millis(1000));
    holder.insert("n", &7u32).unwrap();
    assert!(a.commit(holder).await.is_ok());
    assert_eq!(read_n(&a, &id).await, Some(7));
    let next = a.load(Some(id.as_str())).await;
    assert!(next.is_ok(), "the queue is stuck after a timeout");
    let committed: Result<_, CommitError> = a.commit(next.unwrap()).await;
    assert!(committed.is_ok());
}
