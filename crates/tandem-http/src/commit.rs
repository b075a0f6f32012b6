//! After the handler: committing a request's session, and deciding its cookie as the
//! commit says. Framework-neutral: the result is the `Set-Cookie` text, or the
//! configured response to the failure, which each integration puts on its own
//! response type.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::Response;
use tandem_core::{Codec, SessionId};
use tandem_manager::{CookieUpdate, RequestSession};

use crate::error::Failure;
use crate::settings::SessionSettings;
use crate::slot::Finished;

/// What the end of a request's session does to the response: `Ok` carries the
/// `Set-Cookie` header value to append (if any); `Err` the response that replaces the
/// handler's, because the commit failed (the configured answer to the [`Failure`],
/// see [`SettingsBuilder::error_response`](crate::SettingsBuilder::error_response)).
pub type CommitResult = Result<Option<String>, Response<String>>;

/// A commit that has to wait (for the remote tier, a lock, or a task the handler
/// spawned that still holds the session).
pub type PendingCommit = Pin<Box<dyn Future<Output = CommitResult> + Send>>;

/// Commits a request's session and decides its cookie.
///
/// The commit that has nothing to wait for (an unchanged sticky session, most
/// requests) is done here and now, with no future allocated: `Ok` carries its result.
/// Otherwise `Err` carries the future that commits.
pub(crate) fn finish<C: Codec>(
    shared: &Arc<SessionSettings<C>>,
    finished: Finished<C>,
) -> Result<CommitResult, PendingCommit> {
    let after = AfterCommit::of(&finished);
    match shared.manager.commit_now(finished.session) {
        Ok(outcome) => Ok(Ok(set_cookie(shared, outcome.cookie, &after))),
        Err(session) => Err(Box::pin(commit(Arc::clone(shared), session, after))),
    }
}

/// [`finish`] when the commit has to wait.
///
/// A plain function returning an async block, not an `async fn`: an async fn would
/// keep the session in its state a second time, beside the commit's future that
/// holds it.
fn commit<C: Codec>(
    shared: Arc<SessionSettings<C>>,
    session: RequestSession<C>,
    after: AfterCommit,
) -> impl Future<Output = CommitResult> + Send + 'static {
    let manager = shared.manager.clone();
    async move {
        match manager.commit(session).await {
            Ok(outcome) => Ok(set_cookie(&shared, outcome.cookie, &after)),
            Err(error) => {
                tracing::debug!(%error, "session commit failed");
                Err(shared.error_response(&Failure::Commit(error)))
            }
        }
    }
}

/// The `Set-Cookie` value a successful commit calls for, if any.
fn set_cookie<C: Codec>(
    shared: &SessionSettings<C>,
    cookie: CookieUpdate,
    after: &AfterCommit,
) -> Option<String> {
    match cookie {
        CookieUpdate::Set { id, max_inactive } => Some(shared.issue(id.as_str(), max_inactive)),
        CookieUpdate::Clear => Some(shared.cookie.clear()),
        // No session, but the client sent a cookie the integration refused (bad
        // signature, malformed): remove it rather than see it again on every request.
        CookieUpdate::Keep if after.was_new => after.cookie_rejected.then(|| shared.cookie.clear()),
        CookieUpdate::Keep => (after.interval != after.interval_at_load
            || shared.renewal_due(
                after.id.as_str(),
                after.previous_access,
                after.created,
                after.interval,
            ))
        .then(|| shared.issue(after.id.as_str(), after.interval)),
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
