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
    BackupMode, Concurrency, CookieUpdate, LoadError, RemoteStore, RequestSession, SessionId,
    SpeedyCodec,
    manager::{LockScope, LockTimeoutPolicy},
    model::KeySpace,
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

mod nonsticky;
mod shutdown;
mod sticky;
