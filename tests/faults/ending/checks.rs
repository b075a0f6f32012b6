//! What a row checks once its loops have stopped and every window has passed, and the
//! targets of the rows of ends.

use std::time::{Duration, Instant};

use tandem::{BackupMode, CookieUpdate};

use super::{Kind, PAST_WINDOWS, Run, Source, Target};
use crate::{Event, Row, slowest_allowed};

/// What one request of the final checks found.
struct Probe {
    found: bool,
    user: bool,
    cookie: CookieUpdate,
}

/// One request of the final checks: loads `text` on `server` and commits nothing.
async fn probe(run: &Run, server: usize, text: &str) -> Option<Probe> {
    let manager = &run.servers[server];
    let at = run.name(server);
    let started = Instant::now();
    let loaded = manager.load(Some(text)).await;
    let load_time = started.elapsed();
    let session = match loaded {
        Ok(session) => session,
        Err(error) => {
            run.request(load_time, Duration::ZERO);
            run.failed(format_args!(
                "final check: load of {text} on {at}: {error:?}"
            ));
            return None;
        }
    };
    let (found, user) = (!session.is_new(), session.contains("user"));
    let committing = Instant::now();
    let committed = manager.commit(session).await;
    run.request(load_time, committing.elapsed());
    match committed {
        Ok(outcome) => Some(Probe {
            found,
            user,
            cookie: outcome.cookie,
        }),
        Err(error) => {
            run.failed(format_args!(
                "final check: commit of {text} on {at}: {error:?}"
            ));
            None
        }
    }
}

/// Past every window: each text of X the thieves used is new on both servers.
pub(super) async fn check_logout(run: &Run, target: &Target) {
    if target.ended_at.get().is_none() {
        run.failed(format_args!("{} was never logged out", target.planted));
        return;
    }
    let texts: Vec<String> = target.texts.lock().iter().cloned().collect();
    for text in texts {
        for server in [0, 1] {
            if let Some(Probe { found: true, .. }) = probe(run, server, &text).await {
                run.served_ended(
                    Source::FinalCheck,
                    format_args!(
                        "final check: {text} on {} is not new {PAST_WINDOWS:?} after the thieves stopped",
                        run.name(server)
                    ),
                );
            }
        }
    }
    for (id, _, what) in target.told.lock().iter() {
        run.print(
            Kind::Note,
            format_args!("a thief's request ({what}) was told another id, {id}"),
        );
    }
}

/// Past every window: X is new on both servers and tells no one Y; Y holds `user`
/// and no attacker write it must not hold; no attacker's request was ever told Y.
pub(super) async fn check_login(run: &Run, target: &Target) {
    let Some(y) = target.cycled.get() else {
        run.failed(format_args!("{} was never logged in", target.planted));
        return;
    };
    let texts: Vec<String> = target.texts.lock().iter().cloned().collect();
    for text in texts {
        for server in [0, 1] {
            let Some(probe) = probe(run, server, &text).await else {
                continue;
            };
            let at = run.name(server);
            if probe.found || probe.user {
                run.served_ended(
                    Source::FinalCheck,
                    format_args!(
                        "final check: {text} on {at} is not new (user: {}) {PAST_WINDOWS:?} after the attackers stopped",
                        probe.user
                    ),
                );
            }
            if matches!(&probe.cookie, CookieUpdate::Set { id, .. } if id.random() == y.random()) {
                run.served_ended(
                    Source::FinalCheck,
                    format_args!("final check: {text} on {at} is told {y}"),
                );
            }
        }
    }
    for (id, source, what) in target.told.lock().iter() {
        if id.random() == y.random() {
            run.served_ended(
                *source,
                format_args!("an attacker's request ({what}) was told Y, {id}"),
            );
        } else {
            run.print(
                Kind::Note,
                format_args!("an attacker's request ({what}) was told another id, {id}"),
            );
        }
    }
    let manager = &run.servers[target.home];
    let started = Instant::now();
    let loaded = manager.load(Some(y.as_str())).await;
    run.request(started.elapsed(), Duration::ZERO);
    let session = match loaded {
        Ok(session) => session,
        Err(error) => {
            run.failed(format_args!("final check: load of Y {y}: {error:?}"));
            return;
        }
    };
    if session.is_new() {
        // The victim's own requests with Y counted it lost already if they met it.
        run.failed(format_args!("final check: the victim's Y {y} is gone"));
        return;
    }
    if session.get::<String>("user").unwrap().as_deref() != Some(target.planted.random()) {
        run.failed(format_args!(
            "final check: the victim's Y {y} does not hold `user`"
        ));
    }
    if let Some(value) = session.get::<u64>("cart").unwrap()
        && target.forbidden.lock().contains(&value)
    {
        run.served_ended(
            Source::FinalCheck,
            format_args!(
                "final check: Y {y} holds the attacker's cart = {value}, refused or written after the login returned"
            ),
        );
    }
}

/// The targets of the [`Ending`] rows, checked together so that a failure shows every
/// row that misses them.
pub fn check(rows: &[Row]) {
    // A request may wait for three remote operations in a row, each bounded by the
    // operation timeout: a sticky takeover reads the remote copy and writes it back
    // under its own ownership, then a synchronous backup writes the request's change
    // (a login: the old id's tombstone, then the new id's copy). No node fails in
    // these rows, so none of them should take that long.
    let bound = slowest_allowed(3);
    let mut failures = Vec::new();
    for row in rows {
        if !matches!(row.event, Event::Ending(_)) {
            continue;
        }
        let mut missed = Vec::new();
        if row.ended_served != Some(0) {
            missed.push("ended ids served");
        }
        // The owner's logout, the victim's login and the victim's use of Y must
        // work; the attackers' refusals are counted apart.
        if row.counts.failed != 0 {
            missed.push("failed");
        }
        if row.counts.lost_sessions != 0 {
            missed.push("sessions lost");
        }
        // A synchronous commit that did not report its backup copy as failed is
        // durable in both modes: every write is conditional on the copy the server
        // knows, so the thieves' requests cannot undo it, and a change that went into
        // a sticky copy dropped meanwhile (a thief's takeover) reports its backup
        // failed. Changes reported at risk (in sticky mode each of the thieves'
        // takeovers keeps the copy it read, and the owner's server drops its own):
        // measured, not bounded.
        let durable = matches!(row.backup, BackupMode::Sync { .. });
        if durable && row.counts.lost_unreported != 0 {
            missed.push("losses not reported at risk");
        }
        if row.counts.slowest > bound {
            missed.push("slower than the bound");
        }
        if !missed.is_empty() {
            failures.push(format!("{} in {row}", missed.join(", ")));
        }
    }
    assert!(
        failures.is_empty(),
        "rows of ends missed their targets (slowest allowed {bound:?}):\n{}",
        failures.join("\n")
    );
}
