//! Item 3: cancellation safety. Every future on the request path may be dropped at any
//! await point (a client that hangs up, a timeout layer, hyper dropping the service
//! future). Whatever point it is dropped at, no flag, counter, queue slot, local lock or
//! remote lock may stay taken, a dropped logout or id change must end the old id
//! everywhere or not at all, and `shutdown` must still write every dirty session
//! within its deadline.
//!
//! The harness polls a `load` or `commit` future exactly `k` times, with the task's own
//! waker and a millisecond between polls so that the runtime and the sockets make
//! progress, then drops it; a sweep does so for k = 0, 1, 2, ... until the future
//! completes by itself, so that every point at which it really waits is a drop point.
//! The managers under test run over real memcached through `Faulty`, which delays
//! reads and writes before they are sent and every answer after it arrived: each
//! remote operation then spans several polls, both before it reaches memcached and
//! after it landed but before its caller knows.
//!
//! Each k gets a fresh setup: new managers and new sessions (the memcached processes
//! and the store's connections are shared by the sweeps of one test, since starting
//! memcached for each k would cost more than the rest of the run, and nothing a k
//! leaves behind is read by the next: every session id is new). A sweep's summary
//! (which k dropped where, with which outcome) is printed to stderr.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use tandem::memcached::MemcachedStore;
use tandem::{
    BackupMode, Concurrency, CookieUpdate, KeySpace, LoadError, LockScope, LockTimeoutPolicy,
    RemoteStore, RequestSession, SessionId, SpeedyCodec,
};
use tandem_testkit::MemcachedCluster;

use crate::common::*;
use crate::support::*;

/// The time between two polls of a future under test.
const POLL_GAP: Duration = Duration::from_millis(1);
/// A sweep whose future has not completed after this many polls fails: it hangs.
const MAX_POLLS: usize = 300;
/// The delays `Faulty` adds while a future under test runs: each remote operation
/// then takes a few polls before it is sent and a few after it landed.
const WRITE_DELAY: Duration = Duration::from_millis(3);
const READ_DELAY: Duration = Duration::from_millis(2);
const ANSWER_DELAY: Duration = Duration::from_millis(2);
/// How long a write whose caller may be dropped stays on its way (`on_the_wire`):
/// longer than a read with its answer takes, so that what the dropped caller leaves to
/// the background (a lock's release, the next write's check of the copy) can look
/// before the write lands.
const WIRE_DELAY: Duration = Duration::from_millis(8);
/// Sticky `Concurrency::Lock`: how long a request waits for the session's lock. A lock
/// left taken by a dropped future makes the next request fail with `LockTimeout`.
const STICKY_LOCK_TIMEOUT: Duration = Duration::from_secs(1);
/// Non-sticky `Concurrency::Lock`: the remote lock's TTL, and how long a request waits
/// for it. A remote lock left taken by a dropped future would hold the next request
/// for the TTL (plus memcached's second), so it fails with `LockTimeout` instead.
const LOCK_TTL: Duration = Duration::from_secs(5);
const NS_LOCK_TIMEOUT: Duration = Duration::from_millis(2500);
/// What "the next request gets in" may take at most: far below the lock TTL, and far
/// above what it takes on a busy machine when nothing stayed taken (milliseconds; a
/// remote lock released in the background adds the next request's retry backoff).
const NEXT_REQUEST_BOUND: Duration = Duration::from_millis(1500);
/// How long the background work of one k may take to drain once nothing is delayed.
const DRAIN_BOUND: Duration = Duration::from_secs(5);
/// The shutdown deadline. Shutdown gives queued work at most half of it: a counter of
/// work in flight that stays taken keeps it waiting that long, so it must return
/// before the half.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(4);
/// How long a second server may still load a dropped logout's id, or a server still
/// serve its own stale copy of it: the tombstone is written at once by a task of its
/// own, and the peer feed (read every 100 ms by the server that checks it) tells the
/// others; both land within milliseconds when nothing is stuck.
const END_BOUND: Duration = Duration::from_secs(3);

type Request = RequestSession<SpeedyCodec>;

/// Polls `future` exactly `polls` times (fewer if it completes first) with the calling
/// task's waker, sleeping [`POLL_GAP`] between polls so that the runtime, its timers
/// and the sockets make progress, then drops it. Returns its output if it completed.
async fn poll_then_drop<F: Future>(future: F, polls: usize) -> Option<F::Output> {
    let mut future = pin!(future);
    for poll in 0..polls {
        if poll > 0 {
            tokio::time::sleep(POLL_GAP).await;
        }
        let polled = std::future::poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx))).await;
        if let Poll::Ready(output) = polled {
            return Some(output);
        }
    }
    None
}

/// One sweep over k: the failures and the outcome of each k.
struct Sweep {
    name: String,
    failures: Vec<String>,
    outcomes: Vec<String>,
    started: Instant,
}

impl Sweep {
    fn new(name: impl Into<String>) -> Sweep {
        Sweep {
            name: name.into(),
            failures: Vec::new(),
            outcomes: Vec::new(),
            started: Instant::now(),
        }
    }

    fn check(&mut self, k: usize, ok: bool, failure: impl FnOnce() -> String) {
        if !ok {
            self.failures.push(format!("k={k}: {}", failure()));
        }
    }

    /// Records what run `k` produced (runs are recorded in order).
    fn outcome(&mut self, k: usize, outcome: impl Into<String>) {
        assert_eq!(self.outcomes.len(), k, "outcomes recorded out of order");
        self.outcomes.push(outcome.into());
    }

    /// Whether the sweep is over: run `k` completed by itself.
    fn over(&self, k: usize, completed: bool) -> bool {
        assert!(
            k < MAX_POLLS,
            "{}: the future did not complete within {MAX_POLLS} polls",
            self.name
        );
        completed
    }

    /// Prints the outcomes, runs of equal ones folded, and hands the failures on.
    fn finish(self, failures: &mut Vec<String>) {
        let mut folded: Vec<(usize, usize, &str)> = Vec::new();
        for (k, outcome) in self.outcomes.iter().enumerate() {
            match folded.last_mut() {
                Some((_, last, previous)) if *previous == outcome.as_str() => *last = k,
                _ => folded.push((k, k, outcome)),
            }
        }
        let summary: Vec<String> = folded
            .iter()
            .map(|(first, last, outcome)| {
                if first == last {
                    format!("k={first}: {outcome}")
                } else {
                    format!("k={first}..={last}: {outcome}")
                }
            })
            .collect();
        eprintln!(
            "[drops] {}: k = 0..={} in {:.1?}, {} failure(s); {}",
            self.name,
            self.outcomes.len().saturating_sub(1),
            self.started.elapsed(),
            self.failures.len(),
            summary.join("; ")
        );
        failures.extend(
            self.failures
                .into_iter()
                .map(|failure| format!("{}: {failure}", self.name)),
        );
    }
}

/// Fails the test with every sweep's failures.
#[track_caller]
fn assert_none(failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Delays every operation while a future under test runs; with `on_the_wire`, writes
/// are sent from tasks of their own, so that one whose caller is dropped during its
/// delay still lands, after the drop (as a request already sent does).
fn delay_everything(faulty: &Faulty, on_the_wire: bool) {
    faulty.delay_writes(if on_the_wire { WIRE_DELAY } else { WRITE_DELAY });
    faulty.delay_reads(READ_DELAY);
    faulty.delay_answers(ANSWER_DELAY);
    faulty.detach_writes(on_the_wire);
}

fn delay_nothing(faulty: &Faulty) {
    faulty.detach_writes(false);
    faulty.delay_writes(Duration::ZERO);
    faulty.delay_reads(Duration::ZERO);
    faulty.delay_answers(Duration::ZERO);
}

/// What a dropped-or-completed run says about itself.
fn ran(completed: bool) -> &'static str {
    if completed { "completed" } else { "dropped" }
}

/// Loads `id` on `manager`; the time it took, and the session if it loaded.
async fn timed_load(manager: &Manager, id: &SessionId) -> (Result<Request, LoadError>, Duration) {
    let started = Instant::now();
    let loaded = manager.load(Some(id.as_str())).await;
    (loaded, started.elapsed())
}

/// Attribute `n` of a loaded session (`None` for a new one).
fn n_of(session: &Request) -> Option<u32> {
    if session.is_new() {
        None
    } else {
        session.get::<u32>("n").unwrap()
    }
}

/// (a) The next request of `id` on `manager` gets in (its lock, local or remote, is
/// free) well within [`NEXT_REQUEST_BOUND`]. Returns the session, or `None` (recorded)
/// if it did not.
async fn next_request(
    sweep: &mut Sweep,
    k: usize,
    manager: &Manager,
    id: &SessionId,
    what: &str,
) -> Option<Request> {
    let (loaded, took) = timed_load(manager, id).await;
    match loaded {
        Ok(session) => {
            sweep.check(k, took < NEXT_REQUEST_BOUND, || {
                format!("the next request on {what} took {took:?} to load (a lock left taken?)")
            });
            Some(session)
        }
        Err(error) => {
            sweep.check(k, false, || {
                format!("the next request on {what} failed after {took:?}: {error:?}")
            });
            None
        }
    }
}

/// Writes `n` in a request of its own that must get in at once and commit: the newest
/// acknowledged state.
async fn acknowledged_write(
    sweep: &mut Sweep,
    k: usize,
    manager: &Manager,
    id: &SessionId,
    n: u32,
    what: &str,
) {
    let Some(mut session) = next_request(sweep, k, manager, id, what).await else {
        return;
    };
    if session.is_new() {
        sweep.check(k, false, || format!("the session is gone on {what}"));
        return;
    }
    session.insert("n", &n).unwrap();
    let outcome = manager.commit(session).await;
    sweep.check(k, outcome.is_ok(), || {
        format!("the follow-up commit on {what}: {}", describe(&outcome))
    });
}

/// (b) Every background job of `manager` finishes within [`DRAIN_BOUND`], nothing
/// delayed any more.
async fn drained(sweep: &mut Sweep, k: usize, manager: &Manager) {
    let done = wait_until(DRAIN_BOUND, || {
        manager.pending_backups() == 0 && manager.pending_ends() == 0
    })
    .await;
    sweep.check(k, done.is_some(), || {
        format!(
            "pending_backups() = {} ({} unsaved), pending_ends() = {} after {DRAIN_BOUND:?}",
            manager.pending_backups(),
            manager.unsaved_sessions(),
            manager.pending_ends()
        )
    });
}

/// (c) `shutdown` writes everything, and returns before the half of its deadline that
/// queued work gets (a job counted in flight for good would keep it waiting there).
async fn shuts_down(sweep: &mut Sweep, k: usize, manager: &Manager) {
    let started = Instant::now();
    let report = manager.shutdown(SHUTDOWN_DEADLINE).await;
    let took = started.elapsed();
    sweep.check(k, report.unsaved == 0 && report.ends_unwritten == 0, || {
        format!("shutdown left {report:?}")
    });
    sweep.check(k, took < SHUTDOWN_DEADLINE / 2, || {
        format!("shutdown took {took:?} of its {SHUTDOWN_DEADLINE:?}")
    });
}

// ---------------------------------------------------------------------------------
// Sticky mode
// ---------------------------------------------------------------------------------

/// How a sticky sweep's managers are configured.
#[derive(Clone, Copy, Debug)]
struct Sticky {
    concurrency: Concurrency,
    backup: BackupMode,
    /// A one-slot backup queue and one writer, so that a changed commit waits for room.
    small_queue: bool,
    /// Writes whose caller is dropped still land, after the drop.
    on_the_wire: bool,
}

impl Sticky {
    fn label(self) -> String {
        let backup = match self.backup {
            BackupMode::Async if self.small_queue => "async, queue of 1",
            BackupMode::Async => "async",
            BackupMode::Sync { .. } => "sync",
        };
        let wire = if self.on_the_wire {
            ", writes land after drops"
        } else {
            ""
        };
        format!("sticky {:?}, {backup}{wire}", self.concurrency)
    }

    fn server(
        self,
        store: Arc<dyn RemoteStore>,
        route: &str,
    ) -> tandem::ManagerBuilder<SpeedyCodec> {
        let builder = sticky_over(store, route)
            .concurrency(self.concurrency)
            .lock_timeout(STICKY_LOCK_TIMEOUT, LockTimeoutPolicy::Fail)
            .backup(self.backup);
        if self.small_queue {
            builder.backup_queue(1).backup_concurrency(1)
        } else {
            builder
        }
    }
}

const STICKY_MERGE: Sticky = Sticky {
    concurrency: Concurrency::Merge,
    backup: BackupMode::Async,
    small_queue: false,
    on_the_wire: false,
};
const STICKY_LOCK: Sticky = Sticky {
    concurrency: Concurrency::Lock,
    backup: BackupMode::Async,
    small_queue: false,
    on_the_wire: false,
};
const SYNC: BackupMode = BackupMode::Sync {
    timeout: Duration::from_secs(1),
};

/// (c) after the shutdown: a server that never held the session reads the newest
/// acknowledged state from memcached.
async fn remote_holds(
    sweep: &mut Sweep,
    k: usize,
    store: &Arc<MemcachedStore>,
    id: &SessionId,
    expected: u32,
) {
    let reader = server(store, "c1").build().unwrap();
    let seen = match reader.load(Some(id.as_str())).await {
        Ok(session) => n_of(&session),
        Err(error) => {
            sweep.check(k, false, || {
                format!(
                    "another server cannot load the session: {error:?} (memcached: {})",
                    health(store)
                )
            });
            return;
        }
    };
    sweep.check(k, seen == Some(expected), || {
        format!("another server reads n = {seen:?} from memcached, not the acknowledged {expected}")
    });
}

/// The store's view of its nodes, for failure messages.
fn health(store: &MemcachedStore) -> String {
    store
        .health()
        .iter()
        .map(|node| {
            format!(
                "{} up={} marked_down={} last_error={:?}",
                node.id, node.up, node.marked_down, node.last_error
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// No server wrote the session but the one under test: it must never conclude that
/// another one did, and drop its own copy (with whatever it held that memcached had
/// not).
fn kept_ownership(sweep: &mut Sweep, k: usize, manager: &Manager) {
    let lost = manager.stats().ownership_lost;
    sweep.check(k, lost == 0, || {
        format!("the server dropped its own copy {lost} time(s) as written by another server")
    });
}

/// A sticky `load` dropped at every point: a server that does not hold the session
/// takes it over (a remote read, then a write back under its ownership). After each
/// drop that server's next request of the session gets in at once and changes it,
/// its backups drain, its shutdown saves everything, and memcached holds the change.
async fn sticky_takeover_load(
    store: &Arc<MemcachedStore>,
    setup: Sticky,
    failures: &mut Vec<String>,
) {
    let mut sweep = Sweep::new(format!("{}: takeover load", setup.label()));
    for k in 0.. {
        let faulty = Faulty::new(store);
        let a = setup.server(store.clone(), "a1").build().unwrap();
        let x = create(&a, 1).await;
        settle(&a).await;
        let b = setup.server(faulty.clone(), "b1").build().unwrap();
        delay_everything(&faulty, setup.on_the_wire);
        let loaded = poll_then_drop(b.load(Some(x.as_str())), k).await;
        delay_nothing(&faulty);
        let completed = loaded.is_some();
        if let Some(loaded) = loaded {
            let n = loaded.as_ref().ok().and_then(n_of);
            sweep.check(k, n == Some(1), || {
                format!("the load completed with n = {n:?}")
            });
        }
        acknowledged_write(&mut sweep, k, &b, &x, 2, "the taking-over server").await;
        drained(&mut sweep, k, &b).await;
        shuts_down(&mut sweep, k, &b).await;
        kept_ownership(&mut sweep, k, &b);
        remote_holds(&mut sweep, k, store, &x, 2).await;
        sweep.outcome(k, ran(completed));
        if sweep.over(k, completed) {
            break;
        }
    }
    sweep.finish(failures);
}

/// Sticky `Concurrency::Lock`: a `load` dropped at every point while it waits for the
/// session's lock (another request holds it for 15 ms, then commits). The next
/// request gets the lock at once.
async fn sticky_lock_wait_load(store: &Arc<MemcachedStore>, failures: &mut Vec<String>) {
    let setup = STICKY_LOCK;
    let mut sweep = Sweep::new(format!("{}: load waiting for the lock", setup.label()));
    for k in 0.. {
        let a = setup.server(store.clone(), "a1").build().unwrap();
        let x = create(&a, 1).await;
        settle(&a).await;
        let mut holder = a.load(Some(x.as_str())).await.unwrap();
        holder.insert("n", &2u32).unwrap();
        let holder = tokio::spawn({
            let a = a.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(15)).await;
                a.commit(holder).await
            }
        });
        let loaded = poll_then_drop(a.load(Some(x.as_str())), k).await;
        let completed = loaded.is_some();
        if let Some(loaded) = loaded {
            let n = loaded.as_ref().ok().and_then(n_of);
            sweep.check(k, n == Some(2), || {
                format!("the waiting load completed with n = {n:?}, not the holder's 2")
            });
        }
        let held = holder.await.unwrap();
        sweep.check(k, held.is_ok(), || {
            format!("the lock holder's commit: {}", describe(&held))
        });
        acknowledged_write(&mut sweep, k, &a, &x, 3, "the same server").await;
        drained(&mut sweep, k, &a).await;
        shuts_down(&mut sweep, k, &a).await;
        remote_holds(&mut sweep, k, store, &x, 3).await;
        sweep.outcome(k, ran(completed));
        if sweep.over(k, completed) {
            break;
        }
    }
    sweep.finish(failures);
}

/// A sticky commit of a change dropped at every point. With the one-slot queue, other
/// sessions' backups (their writes delayed 20 ms) first fill the writer, the
/// dispatcher's hand and the queue, so that the commit waits for room; with `Sync` it
/// waits for its own write.
/// After each drop: the next request gets in at once and changes the session again
/// (the newest acknowledged state), backups drain, shutdown saves everything, and
/// memcached holds that state.
async fn sticky_commit(store: &Arc<MemcachedStore>, setup: Sticky, failures: &mut Vec<String>) {
    let mut sweep = Sweep::new(format!("{}: commit of a change", setup.label()));
    for k in 0.. {
        let faulty = Faulty::new(store);
        let a = setup.server(faulty.clone(), "a1").build().unwrap();
        let x = create(&a, 1).await;
        let mut fillers = Vec::new();
        if setup.small_queue {
            for n in 0..8 {
                fillers.push(create(&a, n).await);
            }
        }
        settle(&a).await;
        delay_everything(&faulty, setup.on_the_wire);
        let mut request = a.load(Some(x.as_str())).await.unwrap();
        request.insert("n", &2u32).unwrap();
        // The fillers changed, whose backups must land too.
        let mut changed = Vec::new();
        if setup.small_queue {
            faulty.delay_writes(Duration::from_millis(20));
            // Changes until one cannot queue its backup within five polls: the
            // queue is then stuck behind the slow writer, not just full for the
            // dispatcher's linger (that commit is dropped there, its change applied).
            let mut full = false;
            for filler in &fillers {
                let mut session = a.load(Some(filler.as_str())).await.unwrap();
                session.insert("n", &10u32).unwrap();
                changed.push(filler.clone());
                if poll_then_drop(a.commit(session), 5).await.is_none() {
                    full = true;
                    break;
                }
            }
            assert!(full, "precondition: the backup queue never filled");
        }
        let committed = poll_then_drop(a.commit(request), k).await;
        delay_nothing(&faulty);
        let completed = committed.is_some();
        if let Some(committed) = &committed {
            sweep.check(k, committed.is_ok(), || {
                format!("the commit completed with {}", describe(committed))
            });
        }
        acknowledged_write(&mut sweep, k, &a, &x, 3, "the same server").await;
        drained(&mut sweep, k, &a).await;
        shuts_down(&mut sweep, k, &a).await;
        kept_ownership(&mut sweep, k, &a);
        remote_holds(&mut sweep, k, store, &x, 3).await;
        for filler in &changed {
            remote_holds(&mut sweep, k, store, filler, 10).await;
        }
        sweep.outcome(k, ran(completed));
        if sweep.over(k, completed) {
            break;
        }
    }
    if setup.small_queue {
        // Without a wait for room the sweep would end at k = 1 and prove nothing
        // about the queue; a wait of one poll could be the dispatcher's linger.
        sweep.check(0, sweep.outcomes.len() > 3, || {
            "precondition: the commit never waited for room in the queue".into()
        });
    }
    sweep.finish(failures);
}

/// How a request ends its session id.
#[derive(Clone, Copy, Debug)]
enum Ending {
    Invalidate,
    Cycle,
}

/// A sticky logout or id change on server A dropped at every point. Before it, server
/// B took the session over (its copy stays on A, which reads the peer feed only every
/// 30 s), so that B holds a copy of its own under its route, which only the peer feed
/// makes it drop. After each drop the old id is either still valid on A and on a third
/// server C, or ended on A, on C (it finds the tombstone) and on B (which reads the
/// feed every 100 ms) within [`END_BOUND`]: never ended on one server and loadable on
/// another.
async fn sticky_end(
    store: &Arc<MemcachedStore>,
    setup: Sticky,
    ending: Ending,
    failures: &mut Vec<String>,
) {
    let mut sweep = Sweep::new(format!("{}: {ending:?} commit", setup.label()));
    for k in 0.. {
        let faulty = Faulty::new(store);
        let a = setup
            .server(faulty.clone(), "a1")
            .peer_feed_interval(Some(Duration::from_secs(30)))
            .build()
            .unwrap();
        let b = setup
            .server(store.clone(), "b1")
            .peer_feed_interval(Some(Duration::from_millis(100)))
            .build()
            .unwrap();
        let x = create(&a, 1).await;
        settle(&a).await;
        let taken = b.load(Some(x.as_str())).await.unwrap();
        assert!(!taken.is_new(), "precondition: B takes the session over");
        let x_on_b = new_id(b.commit(taken).await.unwrap().cookie);
        settle(&b).await;

        delay_everything(&faulty, setup.on_the_wire);
        let mut request = a.load(Some(x.as_str())).await.unwrap();
        assert!(!request.is_new(), "precondition: A still holds its copy");
        match ending {
            Ending::Invalidate => request.invalidate(),
            Ending::Cycle => {
                request.insert("user", &42u32).unwrap();
                request.cycle_id();
            }
        }
        let committed = poll_then_drop(a.commit(request), k).await;
        delay_nothing(&faulty);
        let completed = committed.is_some();
        if let Some(committed) = &committed {
            let expected = match (ending, committed) {
                (Ending::Invalidate, Ok(outcome)) => outcome.cookie == CookieUpdate::Clear,
                (Ending::Cycle, Ok(outcome)) => {
                    matches!(&outcome.cookie, CookieUpdate::Set { id, .. } if id.random() != x.random())
                }
                (_, Err(_)) => false,
            };
            sweep.check(k, expected, || {
                format!("the commit completed with {}", describe(committed))
            });
        }

        // A's view decides which outcome this k had; everyone else must agree.
        let Some(on_a) = next_request(&mut sweep, k, &a, &x, "A").await else {
            sweep.outcome(k, format!("A failed ({})", ran(completed)));
            if sweep.over(k, completed) {
                break;
            }
            continue;
        };
        let ended = on_a.is_new();
        if !ended {
            let n = n_of(&on_a);
            sweep.check(k, n == Some(1), || {
                format!("the old id is still valid on A but holds n = {n:?}, not 1")
            });
        }
        sweep.check(k, ended || !completed, || {
            "the commit completed but the old id is still valid on A".into()
        });
        drop(on_a);
        if ended {
            // B's own copy under its route: dropped once the feed tells it.
            let b_agrees = wait_until_async(END_BOUND, || async {
                let session = b.load(Some(x_on_b.as_str())).await;
                session.is_ok_and(|session| session.is_new())
            })
            .await;
            sweep.check(k, b_agrees.is_some(), || {
                format!("ended on A, but B still serves its copy after {END_BOUND:?}")
            });
        }
        // A third server reads memcached.
        let c = setup.server(store.clone(), "c1").build().unwrap();
        let c_agrees = wait_until_async(END_BOUND, || async {
            let session = c.load(Some(x.as_str())).await;
            session.is_ok_and(|session| session.is_new() == ended)
        })
        .await;
        sweep.check(k, c_agrees.is_some(), || {
            format!(
                "{} on A, but not on a third server after {END_BOUND:?}",
                if ended { "ended" } else { "valid" }
            )
        });
        drained(&mut sweep, k, &a).await;
        shuts_down(&mut sweep, k, &a).await;
        sweep.outcome(
            k,
            format!(
                "{} ({})",
                if ended { "ended" } else { "valid" },
                ran(completed)
            ),
        );
        if sweep.over(k, completed) {
            break;
        }
    }
    sweep.finish(failures);
}

/// Polls an async `condition` every 20 ms until it holds or `limit` passes.
async fn wait_until_async<F, Fut>(limit: Duration, mut condition: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if condition().await {
            return Some(started.elapsed());
        }
        if started.elapsed() >= limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Scenario 1, loads: a takeover load dropped at every point (Merge with asynchronous
/// and synchronous backups, Lock), and, under Lock, a load dropped while it waits for
/// the session's lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn sticky_loads_dropped_at_every_point_leave_nothing_taken() {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let mut failures = Vec::new();
    sticky_takeover_load(&store, STICKY_MERGE, &mut failures).await;
    // The write back of a takeover is then part of the load.
    let sync = Sticky {
        backup: SYNC,
        ..STICKY_MERGE
    };
    sticky_takeover_load(&store, sync, &mut failures).await;
    let sync_on_the_wire = Sticky {
        on_the_wire: true,
        ..sync
    };
    sticky_takeover_load(&store, sync_on_the_wire, &mut failures).await;
    sticky_takeover_load(&store, STICKY_LOCK, &mut failures).await;
    sticky_lock_wait_load(&store, &mut failures).await;
    assert_none(failures);
}

/// Scenario 1, commits of a change: asynchronous backups through a one-slot queue, and
/// synchronous backups, under Merge and Lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn sticky_commits_dropped_at_every_point_leave_nothing_taken() {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let mut failures = Vec::new();
    for concurrency in [Concurrency::Merge, Concurrency::Lock] {
        for (backup, small_queue) in [(BackupMode::Async, true), (SYNC, false)] {
            let setup = Sticky {
                concurrency,
                backup,
                small_queue,
                on_the_wire: false,
            };
            sticky_commit(&store, setup, &mut failures).await;
        }
        // A synchronous backup write dropped on its way lands after the drop.
        let setup = Sticky {
            concurrency,
            backup: SYNC,
            small_queue: false,
            on_the_wire: true,
        };
        sticky_commit(&store, setup, &mut failures).await;
    }
    assert_none(failures);
}

/// Scenario 1 (d): logouts and id changes dropped at every point, under Merge and Lock,
/// with asynchronous and synchronous backups (the id change writes the session under
/// its new id).
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn sticky_ends_dropped_at_every_point_end_everywhere_or_nowhere() {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let mut failures = Vec::new();
    for setup in [STICKY_MERGE, STICKY_LOCK] {
        for backup in [BackupMode::Async, SYNC] {
            for ending in [Ending::Invalidate, Ending::Cycle] {
                let setup = Sticky { backup, ..setup };
                sticky_end(&store, setup, ending, &mut failures).await;
            }
        }
    }
    // The write of the session under its new id, dropped on its way, lands after the
    // drop.
    let setup = Sticky {
        backup: SYNC,
        on_the_wire: true,
        ..STICKY_MERGE
    };
    sticky_end(&store, setup, Ending::Cycle, &mut failures).await;
    assert_none(failures);
}

// ---------------------------------------------------------------------------------
// Non-sticky mode
// ---------------------------------------------------------------------------------

/// How a non-sticky sweep's managers are configured.
#[derive(Clone, Copy, Debug)]
struct NonSticky {
    concurrency: Concurrency,
    backup: BackupMode,
    /// Writes whose caller is dropped still land, after the drop.
    on_the_wire: bool,
}

impl NonSticky {
    fn label(self) -> String {
        let backup = match self.backup {
            BackupMode::Async => "async",
            BackupMode::Sync { .. } => "sync",
        };
        let wire = if self.on_the_wire {
            ", writes land after drops"
        } else {
            ""
        };
        format!("non-sticky {:?}, {backup}{wire}", self.concurrency)
    }

    fn server(self, store: Arc<dyn RemoteStore>) -> Manager {
        non_sticky_over(store)
            .concurrency(self.concurrency)
            .lock_scope(LockScope::All)
            .lock_ttl(LOCK_TTL)
            .lock_timeout(NS_LOCK_TIMEOUT, LockTimeoutPolicy::Fail)
            .backup(self.backup)
            .build()
            .unwrap()
    }
}

/// The bytes memcached holds for `id` in `space` on `node_id`.
async fn stored(
    store: &MemcachedStore,
    node_id: &str,
    space: KeySpace,
    id: &SessionId,
) -> Option<Vec<u8>> {
    store
        .get(&node(node_id), &key(space, id))
        .await
        .ok()
        .flatten()
        .map(|item| item.value)
}

/// The backup copy holds what the primary holds, within [`DRAIN_BOUND`] (a copy that
/// a dropped commit left behind is repaired by then): a primary lost now would not
/// take a state that requests already read with it.
async fn copies_agree(
    sweep: &mut Sweep,
    k: usize,
    cluster: &MemcachedCluster,
    store: &MemcachedStore,
    id: &SessionId,
) {
    let primary_node = id.node().to_owned();
    let backup_node = ring_successor(cluster, &primary_node);
    let started = Instant::now();
    loop {
        let primary = stored(store, &primary_node, KeySpace::Session, id).await;
        let backup = stored(store, &backup_node, KeySpace::Backup, id).await;
        if primary.is_some() && primary == backup {
            return;
        }
        if started.elapsed() >= DRAIN_BOUND {
            sweep.check(k, false, || {
                format!(
                    "the backup copy ({} bytes) differs from the primary ({} bytes) after {DRAIN_BOUND:?}",
                    backup.map_or(0, |bytes| bytes.len()),
                    primary.map_or(0, |bytes| bytes.len()),
                )
            });
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A read-only request on `manager`: gets in at once; its `n`.
async fn ns_read(
    sweep: &mut Sweep,
    k: usize,
    manager: &Manager,
    id: &SessionId,
    what: &str,
) -> Option<u32> {
    let session = next_request(sweep, k, manager, id, what).await?;
    let n = n_of(&session);
    let outcome = manager.commit(session).await;
    sweep.check(k, outcome.is_ok(), || {
        format!("a read-only commit on {what}: {}", describe(&outcome))
    });
    n
}

/// What a non-sticky sweep drops.
#[derive(Clone, Copy, Debug)]
enum NsDrop {
    Load,
    Commit,
}

/// A non-sticky `load` (under Lock: the local lock, the remote lock, the read) or
/// commit of a change (the remote lock check, the compare-and-swap write, the backup
/// copy) dropped at every point on server A. After each drop the next request on
/// another server B, then on A, gets in at once (no lock left until its TTL); both
/// read the same state; the backup copy agrees with the primary; an acknowledged
/// change on A is what B then reads; A's background work drains, and its shutdown
/// returns at once.
async fn ns_sweep(
    cluster: &MemcachedCluster,
    store: &Arc<MemcachedStore>,
    setup: NonSticky,
    dropping: NsDrop,
    failures: &mut Vec<String>,
) {
    let what = match dropping {
        NsDrop::Load => "load",
        NsDrop::Commit => "commit of a change",
    };
    let mut sweep = Sweep::new(format!("{}: {what}", setup.label()));
    for k in 0.. {
        let faulty = Faulty::new(store);
        let a = setup.server(faulty.clone());
        let b = setup.server(store.clone());
        let x = create(&a, 1).await;
        settle(&a).await;
        delay_everything(&faulty, setup.on_the_wire);
        let completed = match dropping {
            NsDrop::Load => {
                let loaded = poll_then_drop(a.load(Some(x.as_str())), k).await;
                if let Some(loaded) = &loaded {
                    let n = loaded.as_ref().ok().and_then(n_of);
                    sweep.check(k, n == Some(1), || {
                        format!("the load completed with n = {n:?}")
                    });
                }
                loaded.is_some()
            }
            NsDrop::Commit => {
                let mut request = a.load(Some(x.as_str())).await.unwrap();
                request.insert("n", &2u32).unwrap();
                let committed = poll_then_drop(a.commit(request), k).await;
                if let Some(committed) = &committed {
                    sweep.check(k, committed.is_ok(), || {
                        format!("the commit completed with {}", describe(committed))
                    });
                }
                committed.is_some()
            }
        };
        delay_nothing(&faulty);
        let on_b = ns_read(&mut sweep, k, &b, &x, "another server").await;
        let possible: &[u32] = match dropping {
            NsDrop::Load => &[1],
            NsDrop::Commit if completed => &[2],
            NsDrop::Commit => &[1, 2],
        };
        sweep.check(k, on_b.is_some_and(|n| possible.contains(&n)), || {
            format!("another server reads n = {on_b:?}, expected one of {possible:?}")
        });
        // Not necessarily what B read: a write that was on the wire when its commit
        // was dropped may land in between (nothing can call it back). But once B saw
        // the change, nobody may see the state before it.
        let on_a = ns_read(&mut sweep, k, &a, &x, "the same server").await;
        sweep.check(
            k,
            on_a.is_some_and(|n| possible.contains(&n) && Some(n) >= on_b),
            || format!("the same server reads n = {on_a:?} after another one read {on_b:?}"),
        );
        drained(&mut sweep, k, &a).await;
        copies_agree(&mut sweep, k, cluster, store, &x).await;
        acknowledged_write(&mut sweep, k, &a, &x, 3, "the same server").await;
        let after = ns_read(&mut sweep, k, &b, &x, "another server").await;
        sweep.check(k, after == Some(3), || {
            format!("another server reads n = {after:?} after the acknowledged 3")
        });
        drained(&mut sweep, k, &a).await;
        drained(&mut sweep, k, &b).await;
        copies_agree(&mut sweep, k, cluster, store, &x).await;
        shuts_down(&mut sweep, k, &a).await;
        sweep.outcome(k, ran(completed));
        if sweep.over(k, completed) {
            break;
        }
    }
    sweep.finish(failures);
}

/// A non-sticky logout or id change dropped at every point on server A. After each
/// drop the old id is either valid on A and on another server B (holding its state),
/// or ended on both, with no copy of it left on any node; the next request gets in at
/// once either way.
async fn ns_end(
    cluster: &MemcachedCluster,
    store: &Arc<MemcachedStore>,
    setup: NonSticky,
    ending: Ending,
    failures: &mut Vec<String>,
) {
    let mut sweep = Sweep::new(format!("{}: {ending:?} commit", setup.label()));
    for k in 0.. {
        let faulty = Faulty::new(store);
        let a = setup.server(faulty.clone());
        let b = setup.server(store.clone());
        let x = create(&a, 1).await;
        settle(&a).await;
        delay_everything(&faulty, setup.on_the_wire);
        let mut request = a.load(Some(x.as_str())).await.unwrap();
        match ending {
            Ending::Invalidate => request.invalidate(),
            Ending::Cycle => {
                request.insert("user", &42u32).unwrap();
                request.cycle_id();
            }
        }
        let committed = poll_then_drop(a.commit(request), k).await;
        delay_nothing(&faulty);
        let completed = committed.is_some();
        if let Some(committed) = &committed {
            let expected = match (ending, committed) {
                (Ending::Invalidate, Ok(outcome)) => outcome.cookie == CookieUpdate::Clear,
                (Ending::Cycle, Ok(outcome)) => {
                    matches!(&outcome.cookie, CookieUpdate::Set { id, .. } if id.random() != x.random())
                }
                (_, Err(_)) => false,
            };
            sweep.check(k, expected, || {
                format!("the commit completed with {}", describe(committed))
            });
        }
        let Some(on_a) = next_request(&mut sweep, k, &a, &x, "A").await else {
            sweep.outcome(k, format!("A failed ({})", ran(completed)));
            if sweep.over(k, completed) {
                break;
            }
            continue;
        };
        let ended = on_a.is_new();
        if !ended {
            let n = n_of(&on_a);
            sweep.check(k, n == Some(1), || {
                format!("the old id is still valid on A but holds n = {n:?}, not 1")
            });
        }
        sweep.check(k, ended || !completed, || {
            "the commit completed but the old id is still valid on A".into()
        });
        let outcome = a.commit(on_a).await;
        sweep.check(k, outcome.is_ok(), || {
            format!("A's read-only commit: {}", describe(&outcome))
        });
        let b_agrees = wait_until_async(END_BOUND, || async {
            match timed_load(&b, &x).await {
                (Ok(session), took) if took < NEXT_REQUEST_BOUND => {
                    let agrees = session.is_new() == ended;
                    b.commit(session).await.is_ok() && agrees
                }
                _ => false,
            }
        })
        .await;
        sweep.check(k, b_agrees.is_some(), || {
            format!(
                "{} on A, but not on another server (or it did not get in at once) after {END_BOUND:?}",
                if ended { "ended" } else { "valid" }
            )
        });
        drained(&mut sweep, k, &a).await;
        drained(&mut sweep, k, &b).await;
        if ended {
            for (space, copy) in [(KeySpace::Session, "primary"), (KeySpace::Backup, "backup")] {
                let left = holders(store, cluster, space, &x).await;
                sweep.check(k, left.is_empty(), || {
                    format!("ended, but a {copy} copy of the old id is on {left:?}")
                });
            }
        }
        shuts_down(&mut sweep, k, &a).await;
        sweep.outcome(
            k,
            format!(
                "{} ({})",
                if ended { "ended" } else { "valid" },
                ran(completed)
            ),
        );
        if sweep.over(k, completed) {
            break;
        }
    }
    sweep.finish(failures);
}

const NS_MERGE: NonSticky = NonSticky {
    concurrency: Concurrency::Merge,
    backup: BackupMode::Async,
    on_the_wire: false,
};
const NS_LOCK: NonSticky = NonSticky {
    concurrency: Concurrency::Lock,
    backup: BackupMode::Async,
    on_the_wire: false,
};

/// Scenario 2, loads and commits of a change, under Merge and Lock (`LockScope::All`,
/// a 5 s lock TTL), commits with asynchronous and synchronous backup copies.
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn non_sticky_loads_and_commits_dropped_at_every_point_leave_no_lock() {
    let cluster = MemcachedCluster::start(2);
    let store = connect(&cluster).await;
    let mut failures = Vec::new();
    for setup in [NS_MERGE, NS_LOCK] {
        ns_sweep(&cluster, &store, setup, NsDrop::Load, &mut failures).await;
        for backup in [BackupMode::Async, SYNC] {
            let setup = NonSticky { backup, ..setup };
            ns_sweep(&cluster, &store, setup, NsDrop::Commit, &mut failures).await;
        }
    }
    // Lock adds, primary writes and backup copies dropped on their way land after the
    // drop.
    let on_the_wire = NonSticky {
        on_the_wire: true,
        ..NS_LOCK
    };
    ns_sweep(&cluster, &store, on_the_wire, NsDrop::Load, &mut failures).await;
    for backup in [BackupMode::Async, SYNC] {
        let setup = NonSticky {
            backup,
            ..on_the_wire
        };
        ns_sweep(&cluster, &store, setup, NsDrop::Commit, &mut failures).await;
    }
    assert_none(failures);
}

/// Scenario 2 (d): non-sticky logouts and id changes dropped at every point (id
/// changes with asynchronous and synchronous backup copies of the new id).
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn non_sticky_ends_dropped_at_every_point_end_everywhere_or_nowhere() {
    let cluster = MemcachedCluster::start(2);
    let store = connect(&cluster).await;
    let mut failures = Vec::new();
    for setup in [NS_MERGE, NS_LOCK] {
        ns_end(&cluster, &store, setup, Ending::Invalidate, &mut failures).await;
        for backup in [BackupMode::Async, SYNC] {
            let setup = NonSticky { backup, ..setup };
            ns_end(&cluster, &store, setup, Ending::Cycle, &mut failures).await;
        }
    }
    // The write under the new id, dropped on its way, lands after the drop.
    let setup = NonSticky {
        on_the_wire: true,
        ..NS_LOCK
    };
    ns_end(&cluster, &store, setup, Ending::Cycle, &mut failures).await;
    assert_none(failures);
}

// ---------------------------------------------------------------------------------
// Scenario 3: the shutdown flush while commits are dropped
// ---------------------------------------------------------------------------------

/// How many commits a burst runs: half change existing sessions, half create new ones.
const BURST: u32 = 48;

/// What a burst of commits left: the acknowledged sessions with their committed `n`,
/// the existing sessions whose commit was dropped, and what the shutdown reported.
struct Burst {
    acknowledged: Vec<(SessionId, u32)>,
    dropped: Vec<SessionId>,
    pending_at_shutdown: usize,
    took: Duration,
    report: tandem::ShutdownReport,
}

/// Runs a burst of [`BURST`] concurrent commits on `manager` (whose writes `faulty`
/// delays 10 ms): every third is dropped after 1 to 7 polls, so mostly while it waits
/// for room in the backup queue or for its writes; then, with backups still queued or
/// running, shuts `manager` down.
async fn burst_then_shutdown(manager: &Manager, faulty: &Faulty) -> Burst {
    let mut existing = Vec::new();
    for _ in 0..BURST / 2 {
        existing.push(create(manager, 0).await);
    }
    settle(manager).await;
    faulty.delay_writes(Duration::from_millis(10));
    faulty.delay_answers(Duration::from_millis(1));
    let mut tasks = Vec::new();
    for i in 0..BURST {
        let manager = manager.clone();
        let id = existing.get(i as usize).cloned();
        tasks.push(tokio::spawn(async move {
            let mut session = manager
                .load(id.as_ref().map(SessionId::as_str))
                .await
                .unwrap();
            session.insert("n", &(100 + i)).unwrap();
            let committed = if i % 3 == 0 {
                poll_then_drop(manager.commit(session), 1 + (i as usize / 3) % 7).await
            } else {
                Some(manager.commit(session).await)
            };
            (i, id, committed)
        }));
    }
    let mut acknowledged = Vec::new();
    let mut dropped = Vec::new();
    for task in tasks {
        let (i, id, committed) = task.await.unwrap();
        match committed {
            Some(Ok(outcome)) => {
                let id = match (id, outcome.cookie) {
                    (Some(id), _) => id,
                    (None, cookie) => new_id(cookie),
                };
                acknowledged.push((id, 100 + i));
            }
            Some(Err(error)) => panic!("commit {i} failed: {error:?}"),
            // A dropped commit of a new session leaves an id nobody knows.
            None => dropped.extend(id),
        }
    }
    assert!(
        dropped.len() >= 3,
        "precondition: only {} commits of existing sessions were dropped mid-way",
        dropped.len()
    );
    let pending_at_shutdown = manager.pending_backups();
    let started = Instant::now();
    let report = manager.shutdown(SHUTDOWN_DEADLINE).await;
    let took = started.elapsed();
    delay_nothing(faulty);
    Burst {
        acknowledged,
        dropped,
        pending_at_shutdown,
        took,
        report,
    }
}

impl Burst {
    /// What every burst must show: nothing unsaved, before the deadline.
    fn check_shutdown(&self, checks: &mut Checks) {
        checks.check(
            self.report.unsaved == 0 && self.report.ends_unwritten == 0,
            || {
                format!(
                    "shutdown left {:?} ({} backups were pending)",
                    self.report, self.pending_at_shutdown
                )
            },
        );
        checks.check(self.took < SHUTDOWN_DEADLINE, || {
            format!(
                "shutdown took {:?}, past its {SHUTDOWN_DEADLINE:?}",
                self.took
            )
        });
    }

    fn print(&self, mode: &str) {
        eprintln!(
            "[drops] {mode} shutdown flush: {} acknowledged, {} changes dropped, {} backups pending at shutdown, shutdown took {:.1?}, {:?}",
            self.acknowledged.len(),
            self.dropped.len(),
            self.pending_at_shutdown,
            self.took,
            self.report
        );
    }
}

/// Scenario 3, sticky: a burst of 48 commits (24 changes of existing sessions, 24 new
/// sessions) through a two-slot backup queue with one writer, every write delayed
/// 10 ms; every third commit dropped after 1 to 7 polls; then, with backups still
/// queued, `shutdown`. It reports nothing unsaved, before its deadline; every session
/// whose commit returned Ok is in memcached with its committed state (read by a server
/// that never held it), and every dropped change is in memcached as this server holds
/// it (applied or not, never lost on the way).
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn sticky_shutdown_saves_every_acknowledged_commit_while_others_are_dropped() {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let faulty = Faulty::new(&store);
    let a = sticky_over(faulty.clone(), "a1")
        .backup_queue(2)
        .backup_concurrency(1)
        .build()
        .unwrap();
    let burst = burst_then_shutdown(&a, &faulty).await;
    let mut checks = Checks::default();
    burst.check_shutdown(&mut checks);
    checks.check(a.stats().ownership_lost == 0, || {
        "the server dropped its own copies as another server's".into()
    });
    // What this server holds of the dropped changes, before another server takes
    // them over.
    let mut held = Vec::new();
    for id in &burst.dropped {
        held.push(read_n(&a, id).await);
    }
    let reader = server(&store, "c1").build().unwrap();
    for (id, n) in &burst.acknowledged {
        let seen = read_n(&reader, id).await;
        checks.check(seen == Some(*n), || {
            format!("acknowledged session {id} holds n = {seen:?} in memcached, not {n}")
        });
    }
    for (id, here) in burst.dropped.iter().zip(held) {
        let seen = read_n(&reader, id).await;
        checks.check(seen == here, || {
            format!("dropped commit's session {id}: memcached holds {seen:?}, the server {here:?}")
        });
    }
    burst.print("sticky");
    checks.finish();
}

/// Scenario 3, non-sticky (asynchronous backup copies): the same burst over two nodes,
/// then `shutdown`. Right after it returns, every session whose commit returned Ok is
/// read with its committed state by another server, and for it and for every session
/// whose change was dropped mid-way the backup copy holds exactly what the primary
/// holds: the shutdown wrote the copies still on their way, and repaired those that a
/// dropped commit left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn non_sticky_shutdown_writes_every_copy_while_commits_are_dropped() {
    let cluster = MemcachedCluster::start(2);
    let store = connect(&cluster).await;
    let faulty = Faulty::new(&store);
    let a = non_sticky_over(faulty.clone()).build().unwrap();
    let burst = burst_then_shutdown(&a, &faulty).await;
    let mut checks = Checks::default();
    burst.check_shutdown(&mut checks);
    let b = non_sticky(&store).build().unwrap();
    let copies = |id: &SessionId| {
        let (store, cluster, id) = (&store, &cluster, id.clone());
        async move {
            let primary_node = id.node().to_owned();
            let backup_node = ring_successor(cluster, &primary_node);
            (
                stored(store, &primary_node, KeySpace::Session, &id).await,
                stored(store, &backup_node, KeySpace::Backup, &id).await,
            )
        }
    };
    for (id, _) in &burst.acknowledged {
        let (primary, backup) = copies(id).await;
        checks.check(primary.is_some() && primary == backup, || {
            format!("acknowledged session {id}: the backup copy differs from the primary after the shutdown")
        });
    }
    for id in &burst.dropped {
        let (primary, backup) = copies(id).await;
        checks.check(primary.is_some() && primary == backup, || {
            format!("dropped commit's session {id}: the backup copy differs from the primary after the shutdown")
        });
    }
    for (id, n) in &burst.acknowledged {
        let seen = read_n(&b, id).await;
        checks.check(seen == Some(*n), || {
            format!("acknowledged session {id}: another server reads n = {seen:?}, not {n}")
        });
    }
    burst.print("non-sticky");
    checks.finish();
}
