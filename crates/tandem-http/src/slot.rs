//! [`RequestSlot`]: one request's session as the integration tracks it, shared by the
//! request's [`Session`](crate::Session) handles and the
//! [`SessionRequest`](crate::SessionRequest) that commits it.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Uri};
use tandem_core::Codec;
use tandem_manager::{LoadError, RequestInfo, RequestSession};
// futures-util's lock rather than tokio's: uncontended, which a request's own slot
// almost always is, a lock and unlock is one atomic operation each (tokio's release
// also takes the waiters' lock), measured at 14 ns against 37 ns.
use futures_util::lock::{MappedMutexGuard, Mutex, MutexGuard};

use crate::cookie;
use crate::error::{SessionError, SessionErrorKind};
use crate::settings::SessionSettings;

/// Where a request's session is.
#[expect(
    clippy::large_enum_variant,
    reason = "one per request, in place inside the request's slot: boxing would only add an allocation"
)]
pub(crate) enum State<C> {
    /// Not used yet: nothing was read or loaded.
    Unloaded,
    Loaded(Loaded<C>),
    /// The load failed; later uses in the same request report the same error.
    Failed(LoadError),
    /// The response was produced; the session was handed to the commit.
    Finished,
}

pub(crate) struct Loaded<C> {
    session: RequestSession<C>,
    cookie_rejected: bool,
    interval_at_load: Option<Duration>,
}

/// Access to a request's loaded session, held until dropped.
pub(crate) type SessionLock<'a, C> = MappedMutexGuard<'a, State<C>, RequestSession<C>>;

/// What the integration commits after the response was produced.
pub(crate) struct Finished<C> {
    pub(crate) session: RequestSession<C>,
    /// The client sent a session cookie the integration refused before loading.
    pub(crate) cookie_rejected: bool,
    pub(crate) interval_at_load: Option<Duration>,
}

/// What [`RequestSlot::try_take`] found.
#[expect(
    clippy::large_enum_variant,
    reason = "returned once per request and moved straight into the commit: boxing would only add an allocation"
)]
pub(crate) enum Taken<C> {
    /// The handler never used the session (or could not load it): nothing to commit.
    Unused,
    /// The session to commit.
    Finished(Finished<C>),
    /// Something else still holds the session (a task the handler spawned, still
    /// running): [`RequestSlot::take`] waits for it.
    Held,
}

/// The session cookie a request carries, as the integration reads it.
#[derive(Debug, Clone, Copy)]
enum Incoming<'a> {
    /// No cookie of ours.
    Absent,
    /// The session id of the first cookie of ours that is well formed and (with
    /// signing) verifies.
    Id(&'a str),
    /// Cookies of ours, every one of them refused (malformed or bad signature).
    Refused,
}

impl<'a> Incoming<'a> {
    fn id(self) -> Option<&'a str> {
        match self {
            Incoming::Id(id) => Some(id),
            Incoming::Absent | Incoming::Refused => None,
        }
    }
}

/// One request's session as the integration tracks it.
pub(crate) struct RequestSlot<C> {
    shared: Arc<SessionSettings<C>>,
    /// The request's `Cookie` headers, read only when the session is used.
    cookies: cookie::CookieHeaders,
    /// The request's method and URI, kept only when the manager's load looks at them
    /// (`SessionManager::uses_request_info`).
    request_line: Option<(Method, Uri)>,
    state: Mutex<State<C>>,
}

impl<C> RequestSlot<C> {
    /// The request's method and path, if the slot kept them.
    pub(crate) fn request_line(&self) -> Option<(&str, &str)> {
        self.request_line
            .as_ref()
            .map(|(method, uri)| (method.as_str(), uri.path()))
    }
}

impl<C: Codec> RequestSlot<C> {
    pub(crate) fn new(
        shared: Arc<SessionSettings<C>>,
        cookies: cookie::CookieHeaders,
        request_line: Option<(Method, Uri)>,
    ) -> RequestSlot<C> {
        RequestSlot {
            cookies,
            request_line,
            state: Mutex::new(State::Unloaded),
            shared,
        }
    }

    /// What every request shares (manager, cookie settings).
    pub(crate) fn shared(&self) -> &Arc<SessionSettings<C>> {
        &self.shared
    }

    /// The session cookie the client sent.
    fn incoming(&self) -> Incoming<'_> {
        let name = self.shared.cookie.name.as_str();
        let mut incoming = Incoming::Absent;
        for value in cookie::values(self.cookies.iter(), name) {
            let id = if !cookie::plausible_value(value) {
                None
            } else {
                match &self.shared.signer {
                    Some(signer) => signer.verify(name, value),
                    None => Some(value),
                }
            };
            match id {
                Some(id) => return Incoming::Id(id),
                None => incoming = Incoming::Refused,
            }
        }
        if matches!(incoming, Incoming::Refused) {
            tracing::debug!("session cookie refused (malformed or bad signature)");
        }
        incoming
    }

    /// The request's session, loaded on first use.
    pub(crate) async fn lock(&self) -> Result<SessionLock<'_, C>, SessionError> {
        let mut state = self.state.lock().await;
        if matches!(*state, State::Unloaded) {
            let incoming = self.incoming();
            let request = self.request_line.as_ref().map(|(method, uri)| RequestInfo {
                method: method.as_str(),
                path: uri.path(),
            });
            *state = match self
                .shared
                .manager
                .load_for(incoming.id(), request.as_ref())
                .await
            {
                Ok(session) => State::Loaded(Loaded {
                    interval_at_load: session.max_inactive(),
                    session,
                    cookie_rejected: matches!(incoming, Incoming::Refused),
                }),
                Err(error) => {
                    tracing::debug!(%error, "session load failed");
                    State::Failed(error)
                }
            };
        }
        let kind = match &*state {
            State::Loaded(_) => None,
            State::Failed(error) => Some(SessionErrorKind::Load(error.clone())),
            State::Unloaded | State::Finished => Some(SessionErrorKind::Ended),
        };
        if let Some(kind) = kind {
            return Err(SessionError::new(
                kind,
                Some(Arc::clone(&self.shared.responder)),
            ));
        }
        Ok(MutexGuard::map(state, |state| match state {
            State::Loaded(loaded) => &mut loaded.session,
            State::Unloaded | State::Failed(_) | State::Finished => {
                unreachable!("the state was checked to be loaded above, under this same guard")
            }
        }))
    }

    /// Ends the request's use of the session: what to commit, if the handler used it.
    pub(crate) async fn take(&self) -> Option<Finished<C>> {
        Self::end(&mut *self.state.lock().await)
    }

    /// [`take`](Self::take) without waiting.
    pub(crate) fn try_take(&self) -> Taken<C> {
        let Some(mut state) = self.state.try_lock() else {
            return Taken::Held;
        };
        match Self::end(&mut state) {
            Some(finished) => Taken::Finished(finished),
            None => Taken::Unused,
        }
    }

    fn end(state: &mut State<C>) -> Option<Finished<C>> {
        match std::mem::replace(state, State::Finished) {
            State::Loaded(loaded) => Some(Finished {
                session: loaded.session,
                cookie_rejected: loaded.cookie_rejected,
                interval_at_load: loaded.interval_at_load,
            }),
            State::Unloaded | State::Failed(_) | State::Finished => None,
        }
    }
}
