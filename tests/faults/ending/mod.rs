//! The rows of the matrix whose event is not a fault but the end of sessions in use on
//! both app servers at once:
//!
//! - [`Ending::LogoutUnderLoad`]: each session is used by its owner on one server and
//!   by a thief with the stolen cookie on the other (two request loops, one reading,
//!   one writing an attribute, truly concurrent with the owner). Each owner logs out
//!   at some point of the fault phase. A *resurrection* is a request with the
//!   session's id, on either server, started after the logout's commit returned,
//!   that gets a session that is not new, except, in sticky mode, on the other server
//!   with the route rewrite its takeover sent, within `STALE_BOUND` of the logout:
//!   that server's own copy until the peer feed drops it (the design's bound, counted
//!   apart as *stale within the bound*). The thieves go on to the end of the recovery
//!   phase; `PAST_WINDOWS` later every text of the id they sent is tried again on
//!   both servers.
//! - [`Ending::LoginUnderLoad`] (session fixation): an attacker planted id X and keeps
//!   request loops with it on the other server and on the victim's own (with the
//!   victim's route in sticky mode), while the victim logs in on its server: `user`
//!   stored and the id cycled to Y in one commit. A *violation* is a request carrying
//!   X that is told Y (`CookieUpdate::Set` with Y's random part), or sees `user`, or
//!   gets a change into Y (Y holds an attacker's write whose commit was refused or
//!   started after the login's commit returned); and, `PAST_WINDOWS` after the
//!   attackers stopped, a load of X that is not new.
//!
//! Both count in the column "ended ids served", which must be 0. Every request with X
//! counts there, whenever it ran, if it sees `user` or is told Y: only the login puts
//! them anywhere.
//!
//! The owner (or victim) takes up a `Set` cookie that keeps its session, as a browser
//! does. So do half of the attackers' loops (in sticky mode that is the route rewrite
//! of a takeover, which makes the other server serve X from its own copy); the others
//! replay the planted text, so that in sticky mode each of their requests on the other
//! server is a takeover (a read of memcached). Requests refused as an ended or
//! contested id is by design (`SessionEnded`, `Conflict`, `Unavailable`, and loads
//! answered `Unavailable`) count in the column "refused": the attackers meet them, and
//! in sticky mode so does the owner, whose session the thief's takeovers keep moving
//! to the other server. That also costs the owner updates in sticky mode (a takeover
//! keeps the copy it read): measured there, not bounded. A logout or login attempt
//! that is refused, or whose load finds the session new, is tried again.
//!
//! This module holds a row's shared state and runs it ([`scenario`]); the request
//! loops are in [`attacker`] (the thieves' and attackers') and [`user`] (the owner's
//! and the victim's, with the logout and the login), the final checks and the targets
//! in [`checks`].

mod attacker;
mod checks;
mod user;

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tandem::memcached::MemcachedStore;
use tandem::{BackupMode, CommitError, LoadError, Mode, SessionId};
use tandem_testkit::MemcachedCluster;
use tokio::task::JoinHandle;

use crate::common::{Manager, connect, create, non_sticky, server, settle};
use crate::matrix::load::Outcome;
use crate::matrix::table::Counts;
use crate::{Event, Row, scale};
use attacker::{Attacker, attack};
pub use checks::check;
use checks::{check_login, check_logout};
use user::{owner, victim};

/// Which end a row puts its sessions through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    LogoutUnderLoad,
    LoginUnderLoad,
}

pub const ENDINGS: [Ending; 2] = [Ending::LogoutUnderLoad, Ending::LoginUnderLoad];

/// How long after the last request of the loops the ids are tried again: past the
/// negative cache of ids found missing (2 s) and the peer feed's interval (1 s), so
/// that every server asks memcached again, and past any background write the loops
/// left behind.
const PAST_WINDOWS: Duration = Duration::from_millis(2500);

/// How long after a logout the other sticky server may still serve its own copy to a
/// request that carries the route rewrite its takeover sent (the design's bound: the
/// peer feed's interval, 1 s, plus the announcement's write and one read of the
/// feed, with room for a loaded two-core machine). Such requests are counted apart,
/// as *stale within the bound*; any later one, or one on the logout's server or
/// with any other text, is a resurrection.
const STALE_BOUND: Duration = Duration::from_secs(2);

/// At most this many lines of each kind are printed per row (all are counted).
const PRINTED: u64 = 12;

/// How many times the owner tries to log out, or the victim to log in, before the row
/// counts a failure for good.
const ATTEMPTS: u32 = 20;

/// One session under attack.
struct Target {
    /// The id as stolen (or planted): the one its owner uses, with the route of the
    /// owner's server in sticky mode.
    planted: SessionId,
    /// The owner's server: 0 (`a1`) or 1 (`a2`).
    home: usize,
    /// When the logout's (or the login's) commit returned.
    ended_at: OnceLock<Instant>,
    /// The login's new id.
    cycled: OnceLock<SessionId>,
    /// Every text of X the attackers sent: the planted one, and the route rewrites
    /// (takeovers) that the adopting loops took up.
    texts: Mutex<BTreeSet<String>>,
    /// The value of the next attacker write of `cart`.
    next_write: AtomicU64,
    /// Attacker writes that must not be in Y: refused ones, and those whose commit
    /// started after the login's commit returned.
    forbidden: Mutex<HashSet<u64>>,
    /// Ids other than X named by a `Set` cookie that an attacker's commit got, with
    /// where it came from: checked against Y once the row is over.
    told: Mutex<Vec<(SessionId, Source, String)>>,
}

impl Target {
    fn new(planted: SessionId, home: usize) -> Target {
        let texts = Mutex::new(BTreeSet::from([planted.as_str().to_owned()]));
        Target {
            planted,
            home,
            ended_at: OnceLock::new(),
            cycled: OnceLock::new(),
            texts,
            next_write: AtomicU64::new(1),
            forbidden: Mutex::new(HashSet::new()),
            told: Mutex::new(Vec::new()),
        }
    }

    /// Whether a request that started at `started` started after the end returned.
    fn after_end(&self, started: Instant) -> bool {
        self.ended_at.get().is_some_and(|at| started > *at)
    }

    /// Whether a request that started at `started` started within `bound` after the
    /// end returned.
    fn soon_after_end(&self, started: Instant, bound: Duration) -> bool {
        self.ended_at
            .get()
            .is_some_and(|at| started > *at && started - *at <= bound)
    }

    /// When `at` was, relative to the end, for the reports.
    fn since_end(&self, at: Instant) -> String {
        match self.ended_at.get() {
            Some(ended) if at >= *ended => format!("{} ms after", (at - *ended).as_millis()),
            Some(ended) => format!("{} ms before", (*ended - at).as_millis()),
            None => "before".to_owned(),
        }
    }

    /// Where a request with `text` comes from.
    fn source(&self, text: &str) -> Source {
        if text == self.planted.as_str() {
            Source::Planted
        } else {
            Source::Adopted
        }
    }
}

/// Which requests served an ended id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// Attackers' requests with the planted (or stolen) text.
    Planted = 0,
    /// Attackers' requests with a route rewrite of it they adopted.
    Adopted = 1,
    /// The final checks, past every window.
    FinalCheck = 2,
}

/// What a printed line reports.
#[derive(Clone, Copy)]
enum Kind {
    /// A resurrection or a violation.
    EndedServed = 0,
    /// A failure of the row's own operations, or an unexpected error.
    Failed = 1,
    /// A session found new while it lives.
    Lost = 2,
    /// Lost updates, refusals, anything else worth a look.
    Note = 3,
}

/// One row's shared state.
struct Run {
    mode: Mode,
    backup: BackupMode,
    ending: Ending,
    servers: [Manager; 2],
    outcome: Outcome,
    stop: AtomicBool,
    think: Duration,
    /// How many lines were printed, per [`Kind`].
    printed: [AtomicU64; 4],
    /// Ended ids served, per [`Source`].
    served: [AtomicU64; 3],
    /// The latest start of an attacker's request that served an ended id, in ms after
    /// the end returned.
    latest_served_ms: AtomicU64,
    /// Logout rows: requests the other sticky server served from its own copy within
    /// [`STALE_BOUND`] after the logout (the design's window, not a resurrection).
    stale_in_bound: AtomicU64,
    /// The latest start of those, in ms after the logout returned.
    latest_stale_ms: AtomicU64,
    /// Logout or login attempts refused (their commit failed as designed, or their
    /// load found the session new); each is tried again.
    attempts_refused: AtomicU64,
    /// Login rows: loads of X after the login returned that still found the session
    /// as it was before the login (a server's copy not dropped yet). Not a violation
    /// (nothing of Y shows), but reported.
    stale_old_ids: AtomicU64,
}

impl Run {
    fn label(&self) -> String {
        let backup = match self.backup {
            BackupMode::Async => "async",
            BackupMode::Sync { .. } => "sync",
        };
        format!("{:?}, {backup}, {:?}", self.mode, self.ending)
    }

    /// A resurrection or a violation.
    fn served_ended(&self, source: Source, what: fmt::Arguments<'_>) {
        self.outcome.ended_served.fetch_add(1, Ordering::Relaxed);
        self.served[source as usize].fetch_add(1, Ordering::Relaxed);
        self.print(Kind::EndedServed, format_args!("ended id served: {what}"));
    }

    /// A failure of the row's own operations (logout, login, the user's session), or
    /// an error no request should meet.
    fn failed(&self, what: fmt::Arguments<'_>) {
        self.outcome.failed.fetch_add(1, Ordering::Relaxed);
        self.print(Kind::Failed, format_args!("failed: {what}"));
    }

    fn lost(&self, what: fmt::Arguments<'_>) {
        self.outcome.lost_sessions.fetch_add(1, Ordering::Relaxed);
        self.print(Kind::Lost, format_args!("lost: {what}"));
    }

    /// A report line, for the first few of its kind in the row.
    fn print(&self, kind: Kind, what: fmt::Arguments<'_>) {
        if self.printed[kind as usize].fetch_add(1, Ordering::Relaxed) < PRINTED {
            eprintln!("{}: {what}", self.label());
        }
    }

    fn request(&self, load: Duration, commit: Duration) {
        self.outcome.requests.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from((load + commit).as_micros()).unwrap_or(u64::MAX);
        self.outcome
            .slowest_micros
            .fetch_max(micros, Ordering::Relaxed);
    }

    fn refused(&self) {
        self.outcome.refused.fetch_add(1, Ordering::Relaxed);
    }

    fn name(&self, index: usize) -> &'static str {
        ["a1", "a2"][index]
    }

    /// A request's own work, between its load and its commit, and a client's pause
    /// between two requests.
    async fn pause(&self) {
        tokio::time::sleep(self.think).await;
    }

    /// One line that sums a row up: where ended ids were served, and how the
    /// logouts or logins went.
    fn summary(&self) -> String {
        let served = |source: Source| self.served[source as usize].load(Ordering::Relaxed);
        let mut line = format!(
            "{}: ended ids served: {} with the planted text, {} with an adopted text, {} in the final checks",
            self.label(),
            served(Source::Planted),
            served(Source::Adopted),
            served(Source::FinalCheck),
        );
        if served(Source::Planted) + served(Source::Adopted) > 0 {
            let latest = self.latest_served_ms.load(Ordering::Relaxed);
            line.push_str(&format!(" (the latest started {latest} ms after its end)"));
        }
        if self.ending == Ending::LogoutUnderLoad {
            line.push_str(&format!(
                "; {} requests served the other server's copy within {STALE_BOUND:?} of the logout (the latest {} ms after)",
                self.stale_in_bound.load(Ordering::Relaxed),
                self.latest_stale_ms.load(Ordering::Relaxed),
            ));
        }
        line.push_str(&format!(
            "; {} {} attempts refused and tried again",
            self.attempts_refused.load(Ordering::Relaxed),
            match self.ending {
                Ending::LogoutUnderLoad => "logout",
                Ending::LoginUnderLoad => "login",
            }
        ));
        if self.ending == Ending::LoginUnderLoad {
            line.push_str(&format!(
                "; {} loads of X after the login still found the session as it was before",
                self.stale_old_ids.load(Ordering::Relaxed)
            ));
        }
        line
    }
}

/// Whether `error` is what a request meets by design when its session ended or is
/// used elsewhere: the attackers' (and, in sticky mode, the owner's) refusals.
fn expected(error: &CommitError) -> bool {
    matches!(
        error,
        CommitError::SessionEnded | CommitError::Conflict { .. } | CommitError::Unavailable { .. }
    )
}

/// Where the row counts a load that failed: `Unavailable` (no node holding the session
/// answered in time) is the 503 the design answers then, anything else a failure.
fn load_failed(run: &Run, error: &LoadError, what: fmt::Arguments<'_>) {
    match error {
        LoadError::Unavailable => run.refused(),
        other => run.failed(format_args!("{what}: {other:?}")),
    }
}

/// The two app servers of a row.
fn servers(store: &Arc<MemcachedStore>, mode: Mode, backup: BackupMode) -> [Manager; 2] {
    [0, 1].map(|index| {
        let builder = match mode {
            Mode::Sticky => server(store, ["a1", "a2"][index]),
            Mode::NonSticky => non_sticky(store),
        };
        builder.backup(backup).build().unwrap()
    })
}

/// One row: sessions created, owners (or victims) and attackers started, the ends
/// spread over the fault phase; after the recovery phase the loops stop. Returns the
/// rest, `PAST_WINDOWS` of quiet and the final checks, as a task of its own, so that
/// the matrix runs its next row meanwhile.
pub async fn scenario(mode: Mode, backup: BackupMode, ending: Ending) -> JoinHandle<Row> {
    let scale = scale();
    let cluster = MemcachedCluster::start(3);
    let store = connect(&cluster).await;
    let run = Arc::new(Run {
        mode,
        backup,
        ending,
        servers: servers(&store, mode, backup),
        outcome: Outcome::default(),
        stop: AtomicBool::new(false),
        think: scale.think,
        printed: Default::default(),
        served: Default::default(),
        latest_served_ms: AtomicU64::new(0),
        stale_in_bound: AtomicU64::new(0),
        latest_stale_ms: AtomicU64::new(0),
        attempts_refused: AtomicU64::new(0),
        stale_old_ids: AtomicU64::new(0),
    });
    let mut targets = Vec::new();
    for index in 0..scale.ended_sessions {
        // Half the sessions live on each server, so that both play both roles.
        let home = index % 2;
        let id = create(&run.servers[home], 0).await;
        targets.push(Arc::new(Target::new(id, home)));
    }
    for manager in &run.servers {
        settle(manager).await;
    }
    let began = Instant::now();
    let count = u32::try_from(targets.len()).unwrap();
    let mut tasks = Vec::new();
    for (index, target) in targets.iter().enumerate() {
        // The ends spread evenly over the fault phase.
        let offset = scale.fault * (2 * u32::try_from(index).unwrap() + 1) / (2 * count);
        let end_at = began + scale.warmup + offset;
        let (run_, target_) = (Arc::clone(&run), Arc::clone(target));
        tasks.push(match ending {
            Ending::LogoutUnderLoad => tokio::spawn(owner(run_, target_, end_at)),
            Ending::LoginUnderLoad => tokio::spawn(victim(run_, target_, end_at)),
        });
        // Every other pair of sessions has attackers that adopt a route rewrite. In
        // sticky mode they measure the peer feed's window: the other server serves X
        // from its own copy, without asking memcached, until the feed (or a backup
        // write refused by the tombstone) drops it.
        let adopts = (index / 2) % 2 == 1;
        let other = 1 - target.home;
        let mut attackers = vec![
            Attacker {
                at: other,
                writes: false,
                adopts,
            },
            Attacker {
                at: other,
                writes: true,
                adopts,
            },
        ];
        if ending == Ending::LoginUnderLoad {
            // Also on the victim's own server, with the victim's route.
            attackers.extend([
                Attacker {
                    at: target.home,
                    writes: false,
                    adopts,
                },
                Attacker {
                    at: target.home,
                    writes: true,
                    adopts,
                },
            ]);
        }
        for attacker in attackers {
            let (run_, target_) = (Arc::clone(&run), Arc::clone(target));
            tasks.push(tokio::spawn(attack(run_, target_, attacker)));
        }
    }
    let over = began + scale.warmup + scale.fault + scale.recovery;
    tokio::time::sleep_until(over.into()).await;
    run.stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    tokio::spawn(async move {
        tokio::time::sleep(PAST_WINDOWS).await;
        for target in &targets {
            match ending {
                Ending::LogoutUnderLoad => check_logout(&run, target).await,
                Ending::LoginUnderLoad => check_login(&run, target).await,
            }
        }
        // The memcached processes live until the checks are done.
        drop(cluster);
        eprintln!("{}", run.summary());
        let outcome = &run.outcome;
        Row {
            mode,
            backup,
            event: Event::Ending(ending),
            counts: Counts::of(outcome),
            refused: Some(outcome.refused.load(Ordering::Relaxed)),
            ended_served: Some(outcome.ended_served.load(Ordering::Relaxed)),
            unsaved_at_kill: None,
        }
    })
}
