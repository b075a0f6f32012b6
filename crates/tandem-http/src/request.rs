//! [`SessionRequest`]: how an integration drives one request's session, from the
//! request's arrival to the cookie on its response.

use std::sync::Arc;

use http::{Method, Uri};
use tandem_core::Codec;

use crate::commit::{self, CommitResult, PendingCommit};
use crate::cookie::CookieHeaders;
use crate::session::Session;
use crate::settings::SessionSettings;
use crate::slot::{RequestSlot, Taken};

/// One request's session, as an integration (a tower layer, an actix-web middleware)
/// drives it:
///
/// 1. unless [`SessionSettings::ignores`] the request's path, [`SessionRequest::new`]
///    with the request's `Cookie` headers (and its method and URI if
///    [`SessionSettings::uses_request_line`]);
/// 2. [`session`](Self::session) gives the handle handlers use, put where the
///    framework's handlers find it (request extensions); nothing is loaded until a
///    handler uses it;
/// 3. once the handler produced its response, [`finish`](Self::finish) commits a
///    session the handler used, and says which `Set-Cookie` to append, or which
///    response (the configured answer to the failure) replaces the handler's.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use http::header::{COOKIE, HeaderMap};
/// use tandem_core::{MemoryStore, NodeId};
/// use tandem_manager::SessionManager;
/// use tandem_codec::SpeedyCodec;
/// use tandem_http::{CookieHeaders, Finishing, SessionRequest, SessionSettings};
///
/// let store = Arc::new(MemoryStore::new([NodeId::new("n1").unwrap()]));
/// let manager = SessionManager::<SpeedyCodec>::builder(store).build().unwrap();
/// let settings = SessionSettings::builder(manager).build().unwrap();
///
/// let request = SessionRequest::new(&settings, CookieHeaders::of(&HeaderMap::new()), None);
/// request.session().insert("user", "ann").await.unwrap(); // the handler
/// let set_cookie = match request.finish() {
///     Finishing::Ready(result) => result,
///     Finishing::Pending(commit) => commit.await,
/// };
/// assert!(set_cookie.unwrap().unwrap().starts_with("tandem_session="));
/// # });
/// ```
pub struct SessionRequest<C> {
    slot: Arc<RequestSlot<C>>,
}

impl<C> std::fmt::Debug for SessionRequest<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionRequest")
            .field("request_line", &self.slot.request_line())
            .finish_non_exhaustive()
    }
}

/// How [`SessionRequest::finish`] ends: at once (no allocation, most requests), or
/// with a commit to await.
pub enum Finishing {
    /// The result is known now.
    Ready(CommitResult),
    /// The commit has to wait; await it before the response goes out.
    Pending(PendingCommit),
}

impl std::fmt::Debug for Finishing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Finishing::Ready(result) => f.debug_tuple("Ready").field(result).finish(),
            Finishing::Pending(_) => f.write_str("Pending"),
        }
    }
}

impl<C: Codec> SessionRequest<C> {
    /// Starts the session of a request that carries `cookies`; `request_line` is its
    /// method and URI, needed only when [`SessionSettings::uses_request_line`].
    pub fn new(
        settings: &Arc<SessionSettings<C>>,
        cookies: CookieHeaders,
        request_line: Option<(Method, Uri)>,
    ) -> SessionRequest<C> {
        SessionRequest {
            slot: Arc::new(RequestSlot::new(
                Arc::clone(settings),
                cookies,
                request_line,
            )),
        }
    }

    /// The handle handlers use (cheap to clone; every clone is this request's session).
    pub fn session(&self) -> Session<C> {
        Session::new(Arc::clone(&self.slot))
    }

    /// Ends the request's use of its session: commits it if a handler used it.
    ///
    /// `Ready(Ok(None))` when there is nothing to do (the handler never used the
    /// session, or its commit needs no cookie). If something the handler spawned
    /// still holds the session, the pending commit first waits for it.
    pub fn finish(self) -> Finishing {
        match self.slot.try_take() {
            Taken::Unused => Finishing::Ready(Ok(None)),
            Taken::Finished(finished) => match commit::finish(self.slot.shared(), finished) {
                Ok(result) => Finishing::Ready(result),
                Err(pending) => Finishing::Pending(pending),
            },
            Taken::Held => Finishing::Pending(Box::pin(async move {
                match self.slot.take().await {
                    Some(finished) => match commit::finish(self.slot.shared(), finished) {
                        Ok(result) => result,
                        Err(pending) => pending.await,
                    },
                    None => Ok(None),
                }
            })),
        }
    }
}
