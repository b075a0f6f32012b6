//! [`Session`]: a request's handle to its lazily loaded session.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Uri};
use tandem_core::{Codec, Decodes, Encodes, SessionId};
use tandem_manager::{LoadError, RequestInfo, RequestSession};
// futures-util's lock rather than tokio's: uncontended, which a request's own slot
// almost always is, a lock and unlock is one atomic operation each (tokio's release
// also takes the waiters' lock), measured at 14 ns against 37 ns.
use futures_util::lock::{MappedMutexGuard, Mutex, MutexGuard};

use crate::cookie;
use crate::error::{SessionError, SessionErrorKind};
use crate::layer::Shared;

/// Where a request's session is.
#[expect(
    clippy::large_enum_variant,
    reason = "one per request, in place inside the request's slot: boxing would only add an allocation"
)]
enum State<C> {
    /// Not used yet: nothing was read or loaded.
    Unloaded,
    Loaded(Loaded<C>),
    /// The load failed; later uses in the same request report the same error.
    Failed(LoadError),
    /// The response was produced; the session was handed to the commit.
    Finished,
}

struct Loaded<C> {
    session: RequestSession<C>,
    cookie_rejected: bool,
    interval_at_load: Option<Duration>,
}

/// What the layer commits after the response was produced.
pub(crate) struct Finished<C> {
    pub(crate) session: RequestSession<C>,
    /// The client sent a session cookie the layer refused before loading.
    pub(crate) cookie_rejected: bool,
    pub(crate) interval_at_load: Option<Duration>,
}

/// One request's session as the layer tracks it.
pub(crate) struct Slot<C> {
    shared: Arc<Shared<C>>,
    /// The request's `Cookie` headers, read only when the session is used.
    cookies: cookie::CookieHeaders,
    /// The request's method and URI, kept only when the manager's load looks at them
    /// (`SessionManager::uses_request_info`).
    request_line: Option<(Method, Uri)>,
    state: Mutex<State<C>>,
}

impl<C: Codec> Slot<C> {
    pub(crate) fn new<B>(shared: Arc<Shared<C>>, request: &Request<B>) -> Slot<C> {
        Slot {
            cookies: cookie::CookieHeaders::of(request.headers()),
            request_line: shared
                .manager
                .uses_request_info()
                .then(|| (request.method().clone(), request.uri().clone())),
            state: Mutex::new(State::Unloaded),
            shared,
        }
    }

    /// What the layer's services share (manager, cookie settings).
    pub(crate) fn shared(&self) -> &Arc<Shared<C>> {
        &self.shared
    }

    /// The session id the client sent, if a cookie of ours is well formed and (with
    /// signing) verifies; and whether a cookie of ours was refused.
    fn incoming(&self) -> (Option<&str>, bool) {
        let name = self.shared.cookie.name.as_str();
        let mut refused = false;
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
                Some(id) => return (Some(id), false),
                None => refused = true,
            }
        }
        if refused {
            tracing::debug!("session cookie refused (malformed or bad signature)");
        }
        (None, refused)
    }

    /// The request's session, loaded on first use.
    async fn lock(
        &self,
    ) -> Result<MappedMutexGuard<'_, State<C>, RequestSession<C>>, SessionError> {
        let mut state = self.state.lock().await;
        if matches!(*state, State::Unloaded) {
            let (incoming, cookie_rejected) = self.incoming();
            let request = self.request_line.as_ref().map(|(method, uri)| RequestInfo {
                method: method.as_str(),
                path: uri.path(),
            });
            *state = match self
                .shared
                .manager
                .load_for(incoming, request.as_ref())
                .await
            {
                Ok(session) => State::Loaded(Loaded {
                    interval_at_load: session.max_inactive(),
                    session,
                    cookie_rejected,
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

    /// [`take`](Self::take) without waiting: `Err` while something else holds the
    /// session (a task the handler spawned, still running).
    pub(crate) fn try_take(&self) -> Result<Option<Finished<C>>, ()> {
        let mut state = self.state.try_lock().ok_or(())?;
        Ok(Self::end(&mut state))
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

/// A request's session, as handlers see it: the layer puts one into each request's
/// extensions, and with the `axum` feature it is an extractor.
///
/// It is **lazy**: nothing is read or loaded until a method is called. The first call
/// loads the session (from the local tier, or the remote tier as the mode requires);
/// the session is committed by the layer after the handler's response is produced.
/// Cloning the handle is cheap, and clones share the one session.
///
/// The methods are `async` because the first of them may load. For several operations
/// in a row, [`load`](Self::load) gives a guard to the whole [`RequestSession`] (its
/// `get`, `insert`, `cycle_id`, `invalidate`, ...); do not call the handle's other
/// methods while holding the guard, they would wait for it.
///
/// ```
/// use tandem_tower::{Session, SessionError};
/// # use tandem_core::{Codec, CodecId, Decodes, Encodes, CodecError};
/// # struct Json;
/// # impl Codec for Json { const ID: CodecId = CodecId::new(250); const NAME: &'static str = "json"; }
/// # impl Encodes<u64> for Json { fn encode(v: &u64) -> Result<Vec<u8>, CodecError> { Ok(v.to_string().into_bytes()) } }
/// # impl Decodes<u64> for Json { fn decode(b: &[u8]) -> Result<u64, CodecError> { std::str::from_utf8(b).ok().and_then(|s| s.parse().ok()).ok_or_else(|| CodecError::decode(Self::ID, std::fmt::Error)) } }
///
/// async fn count_visit(session: Session<Json>) -> Result<String, SessionError> {
///     let visits = session.get::<u64>("visits").await?.unwrap_or(0) + 1;
///     session.insert("visits", &visits).await?;
///     Ok(format!("visit number {visits}"))
/// }
/// ```
pub struct Session<C> {
    slot: Arc<Slot<C>>,
}

impl<C> Clone for Session<C> {
    fn clone(&self) -> Self {
        Session {
            slot: Arc::clone(&self.slot),
        }
    }
}

impl<C> fmt::Debug for Session<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (method, path) = match &self.slot.request_line {
            Some((method, uri)) => (Some(method.as_str()), Some(uri.path())),
            None => (None, None),
        };
        f.debug_struct("Session")
            .field("method", &method)
            .field("path", &path)
            .finish_non_exhaustive()
    }
}

impl<C: Codec> Session<C> {
    pub(crate) fn new(slot: Arc<Slot<C>>) -> Session<C> {
        Session { slot }
    }

    /// Loads the session if needed and gives access to it until the guard is dropped.
    ///
    /// ```
    /// # use tandem_core::{Codec, CodecId, Encodes, CodecError};
    /// # struct Text;
    /// # impl Codec for Text { const ID: CodecId = CodecId::new(250); const NAME: &'static str = "text"; }
    /// # impl Encodes<str> for Text { fn encode(v: &str) -> Result<Vec<u8>, CodecError> { Ok(v.as_bytes().to_vec()) } }
    /// use tandem_tower::{Session, SessionError};
    ///
    /// async fn login(session: Session<Text>, user: &str) -> Result<(), SessionError> {
    ///     let mut guard = session.load().await?;
    ///     guard.insert("user", user)?;
    ///     guard.cycle_id(); // session-fixation protection: a new id at commit
    ///     Ok(())
    /// }
    /// ```
    pub async fn load(&self) -> Result<SessionGuard<'_, C>, SessionError> {
        Ok(SessionGuard {
            guard: self.slot.lock().await?,
        })
    }

    /// Decodes attribute `name`; `Ok(None)` if it does not exist.
    pub async fn get<T>(&self, name: &str) -> Result<Option<T>, SessionError>
    where
        C: Decodes<T>,
    {
        Ok(self.slot.lock().await?.get(name)?)
    }

    /// Stores `value` under `name`; returns whether that changed the session. Storing
    /// anything in a session that does not exist yet creates it at commit.
    pub async fn insert<T: ?Sized>(&self, name: &str, value: &T) -> Result<bool, SessionError>
    where
        C: Encodes<T>,
    {
        Ok(self.slot.lock().await?.insert(name, value)?)
    }

    /// Removes attribute `name`; returns whether it existed.
    pub async fn remove(&self, name: &str) -> Result<bool, SessionError> {
        Ok(self.slot.lock().await?.remove(name))
    }

    /// Gives the session a new id at commit (session-fixation protection after a
    /// login); the old id then no longer loads anywhere, and the response sets the new
    /// cookie.
    pub async fn cycle_id(&self) -> Result<(), SessionError> {
        self.slot.lock().await?.cycle_id();
        Ok(())
    }

    /// Ends the session at commit: it is removed from every tier, and the response
    /// clears the cookie.
    pub async fn invalidate(&self) -> Result<(), SessionError> {
        self.slot.lock().await?.invalidate();
        Ok(())
    }

    /// The session's id, or `None` if there is no session: the client has none and
    /// nothing was stored yet in this request (then no session will exist after it
    /// either). For a session created in this request it is the id it gets at commit;
    /// after [`cycle_id`](Self::cycle_id) it is still the old id, since the new one is
    /// chosen at commit.
    pub async fn id(&self) -> Result<Option<SessionId>, SessionError> {
        let session = self.slot.lock().await?;
        let exists = !session.is_new() || (session.is_modified() && !session.is_invalidated());
        Ok(exists.then(|| session.id().clone()))
    }
}

/// Access to a loaded [`RequestSession`], from [`Session::load`].
pub struct SessionGuard<'a, C> {
    guard: MappedMutexGuard<'a, State<C>, RequestSession<C>>,
}

impl<C> Deref for SessionGuard<'_, C> {
    type Target = RequestSession<C>;

    fn deref(&self) -> &RequestSession<C> {
        &self.guard
    }
}

impl<C> DerefMut for SessionGuard<'_, C> {
    fn deref_mut(&mut self) -> &mut RequestSession<C> {
        &mut self.guard
    }
}

impl<C> fmt::Debug for SessionGuard<'_, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.guard, f)
    }
}
