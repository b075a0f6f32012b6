//! [`Session`]: a request's handle to its lazily loaded session.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use tandem_core::{Codec, Decodes, Encodes, SessionId};
use tandem_manager::RequestSession;

use crate::error::SessionError;
use crate::slot::{RequestSlot, SessionLock};

/// A request's session, as handlers see it: the integration (tower layer, actix-web
/// middleware) puts one into each request's extensions, and with the `axum` or
/// `actix-web` feature it is an extractor.
///
/// It is **lazy**: nothing is read or loaded until a method is called. The first call
/// loads the session (from the local tier, or the remote tier as the mode requires);
/// the integration commits it after the handler's response is produced. Cloning the
/// handle is cheap, and clones share the one session.
///
/// The methods are `async` because the first of them may load. For several operations
/// in a row, [`load`](Self::load) gives a guard to the whole [`RequestSession`] (its
/// `get`, `insert`, `cycle_id`, `invalidate`, ...); do not call the handle's other
/// methods while holding the guard, they would wait for it.
///
/// ```
/// use tandem_http::{Session, SessionError};
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
    slot: Arc<RequestSlot<C>>,
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
        let (method, path) = self.slot.request_line().unzip();
        f.debug_struct("Session")
            .field("method", &method)
            .field("path", &path)
            .finish_non_exhaustive()
    }
}

impl<C: Codec> Session<C> {
    pub(crate) fn new(slot: Arc<RequestSlot<C>>) -> Session<C> {
        Session { slot }
    }

    /// Loads the session if needed and gives access to it until the guard is dropped.
    ///
    /// ```
    /// # use tandem_core::{Codec, CodecId, Encodes, CodecError};
    /// # struct Text;
    /// # impl Codec for Text { const ID: CodecId = CodecId::new(250); const NAME: &'static str = "text"; }
    /// # impl Encodes<str> for Text { fn encode(v: &str) -> Result<Vec<u8>, CodecError> { Ok(v.as_bytes().to_vec()) } }
    /// use tandem_http::{Session, SessionError};
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
    guard: SessionLock<'a, C>,
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
