//! After the handler: committing a request's session, then setting or clearing its
//! cookie on the response as the commit says.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::Response;
use http::header::SET_COOKIE;
use tandem_core::{Codec, SessionId};
use tandem_manager::{CookieUpdate, RequestSession};

use crate::error::Failure;
use crate::shared::Shared;
use crate::slot::Finished;

/// A commit in progress, ending in the response with its cookie set.
pub(crate) type Committing<B> = Pin<Box<dyn Future<Output = Response<B>> + Send>>;

/// Commits a request's session and sets its cookie on `response`; a failed commit
/// replaces the response.
///
/// The commit that has nothing to wait for (an unchanged sticky session, most
/// requests) is done here and now: the response is handed back as `Ok`, with its
/// cookie set, and no future is allocated. Otherwise `Err` carries the future that
/// commits.
pub(crate) fn finish<C: Codec, B: From<String> + Send + 'static>(
    shared: Arc<Shared<C>>,
    finished: Finished<C>,
    mut response: Response<B>,
) -> Result<Response<B>, Committing<B>> {
    let after = AfterCommit::of(&finished);
    match shared.manager.commit_now(finished.session) {
        Ok(outcome) => {
            set_cookie(&shared, &mut response, outcome.cookie, &after);
            Ok(response)
        }
        Err(session) => Err(Box::pin(commit(shared, session, after, response))),
    }
}

/// [`finish`] when the commit has to wait.
///
/// A plain function returning an async block, not an `async fn`: an async fn would
/// keep the session in its state a second time, beside the commit's future that
/// holds it.
fn commit<C: Codec, B: From<String> + Send + 'static>(
    shared: Arc<Shared<C>>,
    session: RequestSession<C>,
    after: AfterCommit,
    mut response: Response<B>,
) -> impl Future<Output = Response<B>> + Send + 'static {
    let manager = shared.manager.clone();
    async move {
        match manager.commit(session).await {
            Ok(outcome) => {
                set_cookie(&shared, &mut response, outcome.cookie, &after);
                response
            }
            Err(error) => {
                tracing::debug!(%error, "session commit failed");
                (shared.responder)(&Failure::Commit(error)).map(B::from)
            }
        }
    }
}

/// Sets or clears the cookie on `response` as a successful commit says.
fn set_cookie<C: Codec, B>(
    shared: &Shared<C>,
    response: &mut Response<B>,
    cookie: CookieUpdate,
    after: &AfterCommit,
) {
    let header = match cookie {
        CookieUpdate::Set { id, max_inactive } => Some(shared.issue(id.as_str(), max_inactive)),
        CookieUpdate::Clear => Some(shared.cookie.clear()),
        // No session, but the client sent a cookie the layer refused (bad signature,
        // malformed): remove it rather than see it again on every request.
        CookieUpdate::Keep if after.was_new => after.cookie_rejected.then(|| shared.cookie.clear()),
        CookieUpdate::Keep => (after.interval != after.interval_at_load
            || shared.renewal_due(
                after.id.as_str(),
                after.previous_access,
                after.created,
                after.interval,
            ))
        .then(|| shared.issue(after.id.as_str(), after.interval)),
    };
    if let Some(header) = header {
        response.headers_mut().append(SET_COOKIE, header);
    }
}

/// What deciding the cookie needs to know of a session once it is committed, read
/// before the commit takes the session.
struct AfterCommit {
    was_new: bool,
    cookie_rejected: bool,
    interval_at_load: Option<Duration>,
    interval: Option<Duration>,
    created: SystemTime,
    previous_access: SystemTime,
    id: SessionId,
}

impl AfterCommit {
    fn of<C: Codec>(finished: &Finished<C>) -> AfterCommit {
        let session = &finished.session;
        AfterCommit {
            was_new: session.is_new(),
            cookie_rejected: finished.cookie_rejected,
            interval_at_load: finished.interval_at_load,
            interval: session.max_inactive(),
            created: session.created(),
            previous_access: session.last_accessed(),
            id: session.id().clone(),
        }
    }
}
