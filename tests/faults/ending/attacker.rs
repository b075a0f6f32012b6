//! The thieves' and attackers' request loops: each loads the session with the id text
//! it holds, on its server, does the request's work, and commits, counting what it was
//! served against the end.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tandem::CookieUpdate;

use super::{Ending, Run, STALE_BOUND, Source, Target, expected, load_failed};

/// An attacker's request loop.
#[derive(Clone, Copy)]
pub(super) struct Attacker {
    /// The server it sends its requests to.
    pub(super) at: usize,
    /// Whether it writes `cart` (when it finds the session), or only reads.
    pub(super) writes: bool,
    /// Whether it adopts a `Set` cookie that keeps X's random part (a takeover's route
    /// rewrite), as a browser does; otherwise it replays the text it started with.
    pub(super) adopts: bool,
}

pub(super) async fn attack(run: Arc<Run>, target: Arc<Target>, attacker: Attacker) {
    let manager = run.servers[attacker.at].clone();
    let at = run.name(attacker.at);
    let mut text = target.planted.as_str().to_owned();
    while !run.stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let loaded = manager.load(Some(&text)).await;
        let load_time = started.elapsed();
        let mut session = match loaded {
            Ok(session) => session,
            Err(error) => {
                run.request(load_time, Duration::ZERO);
                load_failed(&run, &error, format_args!("attacker load on {at}"));
                run.pause().await;
                continue;
            }
        };
        let found = !session.is_new();
        let sees_user = session.contains("user");
        let source = target.source(&text);
        match run.ending {
            Ending::LogoutUnderLoad
                if found
                    && attacker.at != target.home
                    && source == Source::Adopted
                    && target.soon_after_end(started, STALE_BOUND) =>
            {
                // The other server's own copy, until the peer feed drops it.
                run.stale_in_bound.fetch_add(1, Ordering::Relaxed);
                note_since_end(&target, started, &run.latest_stale_ms);
            }
            Ending::LogoutUnderLoad if found && target.after_end(started) => {
                note_latest(&run, &target, started);
                run.served_ended(
                    source,
                    format_args!(
                        "{text} on {at}, loaded {} the logout returned, is not new",
                        target.since_end(started)
                    ),
                );
            }
            Ending::LoginUnderLoad if sees_user => {
                note_latest(&run, &target, started);
                run.served_ended(
                    source,
                    format_args!(
                        "{text} on {at}, loaded {} the login returned, sees `user`",
                        target.since_end(started)
                    ),
                );
            }
            Ending::LoginUnderLoad if found && target.after_end(started) => {
                run.stale_old_ids.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
        // The request's work: it stays in flight meanwhile, so that some are when
        // the session ends.
        run.pause().await;
        let mut written = None;
        if attacker.writes && found {
            let value = target.next_write.fetch_add(1, Ordering::Relaxed);
            session.insert("cart", &value).unwrap();
            if target.ended_at.get().is_some() {
                target.forbidden.lock().insert(value);
            }
            written = Some(value);
        }
        let committing = Instant::now();
        let committed = manager.commit(session).await;
        run.request(load_time, committing.elapsed());
        match committed {
            Ok(outcome) => {
                if let CookieUpdate::Set { id, .. } = outcome.cookie {
                    if id.random() == target.planted.random() {
                        if attacker.adopts && id.as_str() != text {
                            text = id.as_str().to_owned();
                            target.texts.lock().insert(text.clone());
                        }
                    } else {
                        let what = format!(
                            "{text} on {at}, started {} the end{}",
                            target.since_end(started),
                            if written.is_some() {
                                ", wrote `cart`"
                            } else {
                                ""
                            }
                        );
                        target.told.lock().push((id, source, what));
                    }
                }
            }
            Err(error) if expected(&error) => {
                run.refused();
                if let Some(value) = written {
                    target.forbidden.lock().insert(value);
                }
            }
            Err(error) => run.failed(format_args!("attacker commit on {at}: {error:?}")),
        }
        run.pause().await;
    }
}

/// Keeps the latest start, relative to the end, of a request that served an ended id.
fn note_latest(run: &Run, target: &Target, started: Instant) {
    note_since_end(target, started, &run.latest_served_ms);
}

/// Keeps in `latest` the latest start of a request, in ms after the end returned.
fn note_since_end(target: &Target, started: Instant, latest: &AtomicU64) {
    if let Some(ended) = target.ended_at.get() {
        let after = u64::try_from(started.saturating_duration_since(*ended).as_millis())
            .unwrap_or(u64::MAX);
        latest.fetch_max(after, Ordering::Relaxed);
    }
}
