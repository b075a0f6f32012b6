//! The load of a fault matrix: two app servers that a fault may replace, and clients
//! that each own a session and count what they were acknowledged.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tandem::{BackupStatus, CommitOutcome, CookieUpdate, Mode, SessionId};

use crate::common::Manager;

/// The id a commit sent the client, for the loss reports.
fn cookie_id(outcome: &CommitOutcome) -> &str {
    match &outcome.cookie {
        CookieUpdate::Set { id, .. } => id.as_str(),
        CookieUpdate::Keep => "(same id)",
        CookieUpdate::Clear => "(cleared)",
    }
}

/// What one scenario measured.
#[derive(Default)]
pub struct Outcome {
    pub requests: AtomicU64,
    pub failed: AtomicU64,
    pub lost_sessions: AtomicU64,
    pub lost_updates: AtomicU64,
    /// Losses (of a session, or of updates) that reached back past an update whose
    /// commit did not report its backup copy as failed.
    pub lost_unreported: AtomicU64,
    /// Losses that reached back past the client's [floor](Ledger::set_floors).
    pub lost_past_floor: AtomicU64,
    pub slowest_micros: AtomicU64,
    /// When the last failed request ended.
    pub last_failed: Mutex<Option<Instant>>,
    /// Kill of an app server: the sessions it held whose newest state was not yet
    /// backed up when it died.
    pub unsaved_at_kill: AtomicU64,
    /// Rows of ends: requests refused as an ended or contested id is by design
    /// (`SessionEnded`, `Conflict`, `Unavailable`).
    pub refused: AtomicU64,
    /// Rows of ends: resurrections (logout) or violations (login).
    pub ended_served: AtomicU64,
    /// Every client's acknowledged value, and the floor below which it must not go.
    pub ledger: Ledger,
}

impl Outcome {
    pub fn slowest(&self) -> Duration {
        Duration::from_micros(self.slowest_micros.load(Ordering::Relaxed))
    }
}

/// One client's entry in the [`Ledger`].
#[derive(Default)]
pub struct Entry {
    acknowledged: AtomicU32,
    floor: AtomicU32,
}

/// Every client's newest acknowledged value, so that a test can set floors: what a
/// fault may not take back (for example what a snapshot holds).
#[derive(Default)]
pub struct Ledger {
    entries: Mutex<Vec<Arc<Entry>>>,
}

impl Ledger {
    fn register(&self) -> Arc<Entry> {
        let entry = Arc::new(Entry::default());
        self.entries.lock().push(Arc::clone(&entry));
        entry
    }

    /// Every client's floor becomes its newest acknowledged value: a value that was
    /// acknowledged before this call.
    pub fn set_floors(&self) {
        for entry in self.entries.lock().iter() {
            let acknowledged = entry.acknowledged.load(Ordering::SeqCst);
            entry.floor.store(acknowledged, Ordering::SeqCst);
        }
    }
}

/// The app servers, replaceable while clients run.
pub struct Servers {
    pub slots: Mutex<[Option<Manager>; 2]>,
    build: Box<dyn Fn(usize) -> Manager + Send + Sync>,
}

impl Servers {
    /// Both app servers, `a1` and `a2`, built by `build(index)`.
    pub fn start_both(build: impl Fn(usize) -> Manager + Send + Sync + 'static) -> Arc<Servers> {
        let servers = Arc::new(Servers {
            slots: Mutex::new([None, None]),
            build: Box::new(build),
        });
        servers.start(0);
        servers.start(1);
        servers
    }

    /// The server for a request: in sticky mode the one the id's route names (or the
    /// other, if that one is gone, as a load balancer would); otherwise round robin.
    fn pick(&self, id: Option<&SessionId>, turn: usize, mode: Mode) -> Option<Manager> {
        let slots = self.slots.lock();
        let preferred = match (mode, id.and_then(SessionId::route)) {
            (Mode::Sticky, Some("a2")) => 1,
            (Mode::Sticky, _) => 0,
            (Mode::NonSticky, _) => turn % 2,
        };
        slots[preferred]
            .clone()
            .or_else(|| slots[1 - preferred].clone())
    }

    pub fn take(&self, index: usize) -> Option<Manager> {
        self.slots.lock()[index].take()
    }

    pub fn start(&self, index: usize) {
        let manager = (self.build)(index);
        self.slots.lock()[index] = Some(manager);
    }
}

/// How a client behaves.
#[derive(Clone, Copy)]
pub struct Behaviour {
    /// Every this many requests increments the counter; the others only read it.
    pub write_every: usize,
    /// Every this many requests the client drops its session and starts a new one
    /// (the old one is left to expire); `None`: one session for the whole run.
    pub renew_every: Option<usize>,
    /// The pause between two requests.
    pub think: Duration,
}

/// Starts `count` [`client`]s.
pub fn clients(
    count: usize,
    servers: &Arc<Servers>,
    mode: Mode,
    behaviour: Behaviour,
    outcome: &Arc<Outcome>,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..count)
        .map(|_| {
            tokio::spawn(client(
                Arc::clone(servers),
                mode,
                behaviour,
                Arc::clone(outcome),
                Arc::clone(stop),
            ))
        })
        .collect()
}

/// One client: one session at a time, requests one after another.
pub async fn client(
    servers: Arc<Servers>,
    mode: Mode,
    behaviour: Behaviour,
    outcome: Arc<Outcome>,
    stop: Arc<AtomicBool>,
) {
    let entry = outcome.ledger.register();
    let mut id: Option<SessionId> = None;
    let mut acknowledged = 0u32;
    // The newest acknowledged value whose commit did not report its backup copy as
    // failed, if any since the session started.
    let mut unreported: Option<u32> = None;
    let mut last_backup = BackupStatus::NotNeeded;
    let mut turn = 0usize;
    while !stop.load(Ordering::Relaxed) {
        turn += 1;
        if behaviour
            .renew_every
            .is_some_and(|every| turn.is_multiple_of(every))
        {
            id = None;
            acknowledged = 0;
            unreported = None;
            entry.acknowledged.store(0, Ordering::SeqCst);
            entry.floor.store(0, Ordering::SeqCst);
        }
        let Some(manager) = servers.pick(id.as_ref(), turn, mode) else {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        let started = Instant::now();
        let result = async {
            let mut session = manager
                .load(id.as_ref().map(SessionId::as_str))
                .await
                .ok()?;
            let found = if session.is_new() {
                None
            } else {
                session.get::<u32>("n").ok().flatten()
            };
            let writes = id.is_none() || turn.is_multiple_of(behaviour.write_every);
            let next = found.unwrap_or(0) + u32::from(writes);
            session.insert("n", &next).ok()?;
            let outcome = manager.commit(session).await.ok()?;
            Some((found, next, outcome))
        }
        .await;
        let elapsed = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        outcome.slowest_micros.fetch_max(elapsed, Ordering::Relaxed);
        outcome.requests.fetch_add(1, Ordering::Relaxed);
        let Some((found, next, committed)) = result else {
            outcome.failed.fetch_add(1, Ordering::Relaxed);
            *outcome.last_failed.lock() = Some(Instant::now());
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        let floor = entry.floor.load(Ordering::SeqCst);
        let lost = match found {
            None if id.is_some() => {
                outcome.lost_sessions.fetch_add(1, Ordering::Relaxed);
                outcome
                    .lost_updates
                    .fetch_add(u64::from(acknowledged), Ordering::Relaxed);
                Some((unreported.is_some(), floor > 0))
            }
            Some(found) if found < acknowledged => {
                outcome
                    .lost_updates
                    .fetch_add(u64::from(acknowledged - found), Ordering::Relaxed);
                Some((
                    unreported.is_some_and(|unreported| found < unreported),
                    found < floor,
                ))
            }
            _ => None,
        };
        if let Some((unreported_loss, past_floor)) = lost {
            if unreported_loss {
                outcome.lost_unreported.fetch_add(1, Ordering::Relaxed);
            }
            if past_floor {
                outcome.lost_past_floor.fetch_add(1, Ordering::Relaxed);
            }
            // What a failing row needs to be understood.
            eprintln!(
                "loss: {mode:?}, session {:?} found {found:?} after acknowledging {acknowledged} (the last with backup {last_backup:?}; floor {floor}), now {}",
                id.as_ref().map(SessionId::as_str),
                cookie_id(&committed),
            );
        }
        if found.is_none() {
            // A new session: nothing of it is older than its first request.
            entry.floor.store(0, Ordering::SeqCst);
        }
        acknowledged = next;
        entry.acknowledged.store(next, Ordering::SeqCst);
        if !matches!(committed.backup, BackupStatus::Failed(_)) {
            unreported = Some(next);
        }
        last_backup = committed.backup;
        match committed.cookie {
            CookieUpdate::Set { id: new, .. } => id = Some(new),
            CookieUpdate::Keep => {}
            CookieUpdate::Clear => id = None,
        }
        tokio::time::sleep(behaviour.think).await;
    }
}
