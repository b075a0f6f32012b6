//! [`RequestSession`]: one request's view of its session.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tandem_core::SessionId;
use tandem_core::{AttributeError, Session};
use tandem_core::{Codec, Decodes, Encodes};

use crate::nonsticky::lock_queue::SessionLock;
use crate::nonsticky::transit::TransitRef;
use crate::sticky::entry::LocalEntry;

/// What a request's session is attached to.
pub(crate) enum Attached<C> {
    /// Nothing yet: the session is created at commit if the request stores something.
    New,
    /// A session held in the local tier (sticky mode).
    Local(Arc<LocalEntry<C>>),
    /// A session loaded from the remote tier for the requests in flight (non-sticky).
    Transit(TransitRef<C>),
}

/// One request's session, from [`SessionManager::load`](crate::SessionManager::load)
/// until [`SessionManager::commit`](crate::SessionManager::commit).
///
/// It is a snapshot of the session as it was when the request loaded it; the
/// request's changes are recorded per attribute and applied to the current state at
/// commit, so concurrent requests of the same session do not overwrite each other's
/// attributes. Dropping it without a commit discards the request's changes (and
/// releases the session's lock under [`Concurrency::Lock`](crate::Concurrency::Lock)).
pub struct RequestSession<C> {
    pub(crate) session: Session<C>,
    pub(crate) attached: Attached<C>,
    /// The id the client sent, exactly as sent, if it was a valid id.
    pub(crate) incoming: Option<SessionId>,
    /// Whether the client sent any id at all (valid or not): if no session results,
    /// its cookie is cleared.
    pub(crate) had_cookie: bool,
    pub(crate) invalidated: bool,
    pub(crate) cycle_id: bool,
    /// Held until the request ends under `Concurrency::Lock`.
    pub(crate) lock_guard: Option<tokio::sync::OwnedMutexGuard<()>>,
    /// The session lock (non-sticky `Concurrency::Lock`): this request's turn in the
    /// process's queue and the remote lock; passed on at commit or when the request is
    /// dropped.
    pub(crate) remote_lock: Option<SessionLock>,
    /// The request's pattern (method and path) when the lock scope learns from it.
    pub(crate) pattern: Option<Box<str>>,
}

impl<C> RequestSession<C> {
    /// A session that does not exist yet: created at commit if the request stores
    /// something. `had_cookie`: whether the client sent an id (then cleared if no
    /// session results).
    pub(crate) fn fresh(session: Session<C>, had_cookie: bool) -> RequestSession<C> {
        RequestSession {
            session,
            attached: Attached::New,
            incoming: None,
            had_cookie,
            invalidated: false,
            cycle_id: false,
            lock_guard: None,
            remote_lock: None,
            pattern: None,
        }
    }
}

impl<C: Codec> RequestSession<C> {
    /// The session's id. For a new session it is the id it will get if the request
    /// stores something; for an id cycled with [`cycle_id`](Self::cycle_id) the new id
    /// is chosen at commit.
    pub fn id(&self) -> &SessionId {
        self.session.id()
    }

    /// Whether the session did not exist before this request.
    pub fn is_new(&self) -> bool {
        matches!(self.attached, Attached::New)
    }

    /// Decodes attribute `name`; `Ok(None)` if it does not exist. A decode failure is
    /// an error for this attribute only.
    pub fn get<T>(&self, name: &str) -> Result<Option<T>, AttributeError>
    where
        C: Decodes<T>,
    {
        self.session.get(name)
    }

    /// Stores `value` under `name`; returns whether that changed the session (a value
    /// that encodes to the stored bytes is not a change).
    pub fn insert<T: ?Sized>(&mut self, name: &str, value: &T) -> Result<bool, AttributeError>
    where
        C: Encodes<T>,
    {
        self.session.insert(name, value)
    }

    /// Removes attribute `name`; returns whether it existed.
    pub fn remove(&mut self, name: &str) -> bool {
        self.session.remove(name)
    }

    /// Removes every attribute.
    pub fn clear(&mut self) {
        self.session.clear();
    }

    /// Whether attribute `name` exists.
    pub fn contains(&self, name: &str) -> bool {
        self.session.contains(name)
    }

    /// The attribute names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.session.names()
    }

    /// Changes this session's max inactive interval (`None` or zero: never expires).
    pub fn set_max_inactive(&mut self, interval: Option<Duration>) {
        self.session.set_max_inactive(interval);
    }

    /// The session's max inactive interval; `None` means it never expires.
    pub fn max_inactive(&self) -> Option<Duration> {
        self.session.max_inactive()
    }

    /// When the session was created.
    pub fn created(&self) -> SystemTime {
        self.session.created()
    }

    /// When the session was last used before this request, as far as the manager
    /// knows: in sticky mode the previous request's commit; in non-sticky mode the
    /// last change (reads slide the remote expiry but do not rewrite the stored
    /// session). This request counts as an access from its commit on.
    pub fn last_accessed(&self) -> SystemTime {
        self.session.last_accessed()
    }

    /// Whether this request changed any attribute (or the interval) so far.
    pub fn is_modified(&self) -> bool {
        self.session.is_modified()
    }

    /// Read access to the whole session snapshot.
    pub fn session(&self) -> &Session<C> {
        &self.session
    }

    /// Ends the session at commit: it is removed from every tier and the client's
    /// cookie is cleared. Changes made by this request are discarded. The id stays
    /// ended: no other request still holding it (on any server) commits into it or
    /// brings it back, and a later load of it gets a new, empty session.
    pub fn invalidate(&mut self) {
        self.invalidated = true;
    }

    /// Whether [`invalidate`](Self::invalidate) was called.
    pub fn is_invalidated(&self) -> bool {
        self.invalidated
    }

    /// Gives the session a new id at commit (session-fixation protection after a
    /// login); the old id then no longer loads anywhere. The attributes stay.
    ///
    /// Only this request learns the new id. Other requests that carried the old one
    /// (in flight at the commit, or later, on any server) never see the session under
    /// its new id: a change of theirs fails with
    /// [`CommitError::SessionEnded`](crate::CommitError::SessionEnded), a read ends
    /// with [`CookieUpdate::Keep`](crate::CookieUpdate::Keep), and a new load gets a
    /// new, empty session without clearing the cookie (which by then may be the new
    /// one, set by this request's response).
    pub fn cycle_id(&mut self) {
        self.cycle_id = true;
    }
}

impl<C> fmt::Debug for RequestSession<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestSession")
            .field("session", &self.session)
            .field("new", &matches!(self.attached, Attached::New))
            .field("invalidated", &self.invalidated)
            .field("cycle_id", &self.cycle_id)
            .finish()
    }
}
