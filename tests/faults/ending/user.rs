//! The legitimate user of each session, on its own server: the owner, who uses it and
//! logs out, or the victim, who uses the planted id, logs in and goes on with the new
//! one. Their requests count lost sessions and lost updates.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tandem::{BackupStatus, CommitError, CookieUpdate, RequestSession, SessionId, SpeedyCodec};

use super::{ATTEMPTS, Kind, Run, Target, expected, load_failed};
use crate::common::Manager;

/// The legitimate user of a session (the owner, or the victim), on its own server.
struct User {
    /// Its cookie: the planted (or stolen) id, any rewrite of it that a commit set (a
    /// move off a node that did not answer), and after a login, Y.
    id: SessionId,
    /// The counter `n` as last acknowledged.
    acknowledged: u32,
    /// The newest acknowledged value whose commit did not report its backup copy as
    /// failed, if any.
    unreported: Option<u32>,
    /// Whether a request found the session new (counted once).
    lost: bool,
}

impl User {
    fn new(id: SessionId) -> User {
        User {
            id,
            acknowledged: 0,
            unreported: None,
            lost: false,
        }
    }

    /// Takes up a `Set` cookie that keeps the session (its random part), as a browser
    /// does; a new text of X joins those the final checks try.
    fn adopt(&mut self, target: &Target, cookie: &CookieUpdate) {
        if let CookieUpdate::Set { id, .. } = cookie
            && id.random() == self.id.random()
            && *id != self.id
        {
            if id.random() == target.planted.random() {
                target.texts.lock().insert(id.as_str().to_owned());
            }
            self.id = id.clone();
        }
    }

    /// Takes up a committed change to `n`.
    fn acknowledge(&mut self, value: u32, backup: &BackupStatus) {
        self.acknowledged = value;
        if !matches!(backup, BackupStatus::Failed(_)) {
            self.unreported = Some(value);
        }
    }
}

/// The user's requests until `until` (or the stop): each reads the counter `n` and
/// increments it. The first request that finds the session new counts it as lost (the
/// user goes on with its cookie); a counter below the acknowledged one counts lost
/// updates, and, if it is below a change whose commit did not report its backup copy
/// as failed, a loss not reported at risk.
async fn browse(run: &Run, target: &Target, user: &mut User, until: Option<Instant>) {
    let manager = &run.servers[target.home];
    let at = run.name(target.home);
    while !run.stop.load(Ordering::Relaxed) && until.is_none_or(|until| Instant::now() < until) {
        let id = user.id.clone();
        let started = Instant::now();
        let loaded = manager.load(Some(id.as_str())).await;
        let load_time = started.elapsed();
        let mut session = match loaded {
            Ok(session) => session,
            Err(error) => {
                run.request(load_time, Duration::ZERO);
                load_failed(run, &error, format_args!("the user's load of {id} on {at}"));
                run.pause().await;
                continue;
            }
        };
        if session.is_new() {
            if !user.lost {
                user.lost = true;
                run.lost(format_args!(
                    "the user's {id} on {at} is new, after {} increments",
                    user.acknowledged
                ));
            }
            // Nothing to increment: a write would create another session.
            run.request(load_time, Duration::ZERO);
            drop(session);
            run.pause().await;
            continue;
        }
        let found = session.get::<u32>("n").unwrap().unwrap_or(0);
        if found < user.acknowledged {
            run.outcome
                .lost_updates
                .fetch_add(u64::from(user.acknowledged - found), Ordering::Relaxed);
            if user.unreported.is_some_and(|unreported| found < unreported) {
                run.outcome.lost_unreported.fetch_add(1, Ordering::Relaxed);
            }
            run.print(
                Kind::Note,
                format_args!(
                    "lost: the user's {id} on {at} has n = {found} after {} increments",
                    user.acknowledged
                ),
            );
        }
        run.pause().await;
        session.insert("n", &(found + 1)).unwrap();
        let committing = Instant::now();
        let committed = manager.commit(session).await;
        run.request(load_time, committing.elapsed());
        match committed {
            Ok(outcome) => {
                user.acknowledge(found + 1, &outcome.backup);
                user.adopt(target, &outcome.cookie);
            }
            Err(error) if expected(&error) => run.refused(),
            Err(error) => run.failed(format_args!("the user's commit of {id} on {at}: {error:?}")),
        }
        run.pause().await;
    }
}

/// The load of a logout's or a login's attempt (`what`): the session and how long
/// the load took, or `None` (counted, after the client's pause) if the load failed or
/// found the session new, and the attempt is to be made again.
async fn load_to_end(
    run: &Run,
    manager: &Manager,
    id: &SessionId,
    what: &str,
) -> Option<(RequestSession<SpeedyCodec>, Duration)> {
    let started = Instant::now();
    let loaded = manager.load(Some(id.as_str())).await;
    let load_time = started.elapsed();
    match loaded {
        Ok(session) if !session.is_new() => return Some((session, load_time)),
        Ok(_) => run.lost(format_args!("the {what}'s load of {id} found it new")),
        Err(error) => load_failed(run, &error, format_args!("the {what}'s load of {id}")),
    }
    run.request(load_time, Duration::ZERO);
    run.attempts_refused.fetch_add(1, Ordering::Relaxed);
    run.pause().await;
    None
}

/// A logout's or a login's commit (`what`) that failed, counted: refused as designed
/// (to be tried again), or a failure. The client pauses before its next attempt.
async fn end_failed(run: &Run, what: &str, id: &SessionId, error: &CommitError) {
    if expected(error) {
        run.refused();
        run.attempts_refused.fetch_add(1, Ordering::Relaxed);
        run.print(
            Kind::Note,
            format_args!("the {what} of {id} was refused: {error:?}"),
        );
    } else {
        run.failed(format_args!("the {what} of {id}: {error:?}"));
    }
    run.pause().await;
}

/// The owner: uses the session until `logout_at`, then logs out, trying again until
/// a logout of the session itself (not of a new one) commits.
pub(super) async fn owner(run: Arc<Run>, target: Arc<Target>, logout_at: Instant) {
    let mut user = User::new(target.planted.clone());
    browse(&run, &target, &mut user, Some(logout_at)).await;
    let manager = &run.servers[target.home];
    for _ in 0..ATTEMPTS {
        let id = user.id.clone();
        // Logging out of a new session would end nothing.
        let Some((mut session, load_time)) = load_to_end(&run, manager, &id, "logout").await else {
            continue;
        };
        run.pause().await;
        session.invalidate();
        let committing = Instant::now();
        let committed = manager.commit(session).await;
        let returned = Instant::now();
        run.request(load_time, returned - committing);
        match committed {
            Ok(outcome) => {
                if outcome.cookie != CookieUpdate::Clear {
                    run.failed(format_args!(
                        "the logout of {id} answered {:?}, not Clear",
                        outcome.cookie
                    ));
                }
                let _ = target.ended_at.set(returned);
                return;
            }
            Err(error) => end_failed(&run, "logout", &id, &error).await,
        }
    }
}

/// The victim: browses with the planted X until `login_at`, logs in (`user` stored,
/// the id cycled; tried again until a login of X itself commits), then browses with Y
/// to the end.
pub(super) async fn victim(run: Arc<Run>, target: Arc<Target>, login_at: Instant) {
    let mut user = User::new(target.planted.clone());
    browse(&run, &target, &mut user, Some(login_at)).await;
    let manager = &run.servers[target.home];
    for _ in 0..ATTEMPTS {
        let x = user.id.clone();
        // A login on a new session would cycle it, not the planted one.
        let Some((mut session, load_time)) = load_to_end(&run, manager, &x, "login").await else {
            continue;
        };
        // Y carries the counter over: the login keeps the attributes.
        let carried = session.get::<u32>("n").unwrap().unwrap_or(0);
        run.pause().await;
        session.insert("user", x.random()).unwrap();
        session.cycle_id();
        let committing = Instant::now();
        let committed = manager.commit(session).await;
        let returned = Instant::now();
        run.request(load_time, returned - committing);
        match committed {
            Ok(outcome) => match outcome.cookie {
                CookieUpdate::Set { id, .. } if id.random() != x.random() => {
                    let _ = target.cycled.set(id.clone());
                    let _ = target.ended_at.set(returned);
                    user.id = id;
                    user.acknowledge(carried, &outcome.backup);
                    user.lost = false;
                    browse(&run, &target, &mut user, None).await;
                    return;
                }
                other => {
                    run.failed(format_args!("the login of {x} answered {other:?}"));
                    return;
                }
            },
            Err(error) => end_failed(&run, "login", &x, &error).await,
        }
    }
}
