//! [`SessionRequest`]: how an integration drives one request's session, from the
//! request's arrival to the cookie on its response.

use std::sync::Arc;
use std::task::{Context, Poll};

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

/// The part of an integration's response future that comes after the handler: it
/// waits for the handler's response (`R`, the framework's response type), ends the
/// request's session with [`SessionRequest::finish`], and awaits a commit that has to
/// wait while keeping the response. Both integrations' hand-written response futures
/// are this plus putting the result on their own response type.
///
/// No allocation for a request without a session (an ignored path), one whose handler
/// never used it, or one whose commit needs no wait.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use std::task::Poll;
/// use http::HeaderMap;
/// use tandem_core::{MemoryStore, NodeId};
/// use tandem_manager::SessionManager;
/// use tandem_codec::SpeedyCodec;
/// use tandem_http::{CommitStage, CookieHeaders, SessionRequest, SessionSettings};
///
/// let store = Arc::new(MemoryStore::new([NodeId::new("n1").unwrap()]));
/// let settings = SessionSettings::builder(SessionManager::<SpeedyCodec>::builder(store).build().unwrap())
///     .build()
///     .unwrap();
/// let request = SessionRequest::new(&settings, CookieHeaders::of(&HeaderMap::new()), None);
/// request.session().insert("user", "ann").await.unwrap(); // the handler
/// let mut stage = CommitStage::new(Some(request));
/// let mut response = Some("the handler's response");
/// let (set_cookie, response) = std::future::poll_fn(|cx| {
///     stage.poll(cx, |_| Poll::Ready(Ok::<_, ()>(response.take().unwrap())))
/// })
/// .await
/// .unwrap();
/// assert!(set_cookie.unwrap().unwrap().starts_with("tandem_session="));
/// assert_eq!(response, "the handler's response");
/// # });
/// ```
pub struct CommitStage<C, R> {
    // `None` once the handler's response arrived, or for a request without a session.
    request: Option<SessionRequest<C>>,
    // A commit that had to wait, and the response it completes.
    pending: Option<(PendingCommit, R)>,
}

impl<C, R> std::fmt::Debug for CommitStage<C, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommitStage")
            .field("request", &self.request)
            .field("committing", &self.pending.is_some())
            .finish()
    }
}

impl<C: Codec, R> CommitStage<C, R> {
    /// The stage of a request with this session (`None`: a request without one).
    pub fn new(request: Option<SessionRequest<C>>) -> CommitStage<C, R> {
        CommitStage {
            request,
            pending: None,
        }
    }

    /// Polls `handler` (the inner service's response future) until it answers, then
    /// the commit; ready with the commit's result (`Ok(None)` when there is nothing to
    /// add) and the handler's response. A handler's error is handed back as it is,
    /// with the session dropped uncommitted.
    pub fn poll<E>(
        &mut self,
        cx: &mut Context<'_>,
        handler: impl FnOnce(&mut Context<'_>) -> Poll<Result<R, E>>,
    ) -> Poll<Result<(CommitResult, R), E>> {
        let (mut commit, response) = match self.pending.take() {
            Some(pending) => pending,
            None => {
                let response = std::task::ready!(handler(cx))?;
                let Some(request) = self.request.take() else {
                    return Poll::Ready(Ok((Ok(None), response)));
                };
                match request.finish() {
                    Finishing::Ready(result) => return Poll::Ready(Ok((result, response))),
                    Finishing::Pending(commit) => (commit, response),
                }
            }
        };
        match commit.as_mut().poll(cx) {
            Poll::Ready(result) => Poll::Ready(Ok((result, response))),
            Poll::Pending => {
                self.pending = Some((commit, response));
                Poll::Pending
            }
        }
    }
}
