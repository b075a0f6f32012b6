//! [`SessionLayer`] and the service it wraps around an application.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::SET_COOKIE;
use http::{Request, Response};
use regex::Regex;
use tandem_core::{Codec, SessionId};
use tandem_manager::{CookieUpdate, Mode, RequestSession, SessionManager, keepalive_slack};
use tower::{Layer, Service};

use crate::cookie::{CookieConfigError, CookieSettings, MaxAge, SameSite};
use crate::error::{Failure, Responder, default_error_response};
use crate::issued::IssuedCookies;
use crate::session::{Finished, Session, Slot};
use crate::signing::CookieSigner;

/// Everything the services of one layer share.
pub(crate) struct Shared<C> {
    pub(crate) manager: SessionManager<C>,
    pub(crate) cookie: CookieSettings,
    pub(crate) ignore: Option<Regex>,
    pub(crate) signer: Option<CookieSigner>,
    pub(crate) responder: Responder,
    /// When this process last issued each cookie, for non-sticky renewals.
    issued: IssuedCookies,
}

impl<C: Codec> Shared<C> {
    /// The cookie value for a session id.
    fn value(&self, id: &str) -> String {
        match &self.signer {
            Some(signer) => signer.sign(&self.cookie.name, id),
            None => id.to_owned(),
        }
    }

    fn issue(&self, id: &str, max_inactive: Option<Duration>) -> http::HeaderValue {
        if self.manager.mode() == Mode::NonSticky && self.cookie.max_age == MaxAge::FollowSession {
            self.issued.issued(id);
        }
        self.cookie.set(&self.value(id), max_inactive)
    }

    /// Whether the cookie of a session in use may be older than its renewal window
    /// (see [`MaxAge::FollowSession`]).
    ///
    /// Sticky mode knows each session's previous access exactly, and renews the cookie
    /// on the first request of each window-long period of time: a cookie is then never
    /// older than one window at the session's last access, at no cost per request.
    /// Non-sticky mode stores access times only with changes, so there the layer
    /// remembers when it issued each cookie.
    fn renewal_due(
        &self,
        id: &str,
        previous_access: SystemTime,
        created: SystemTime,
        max_inactive: Option<Duration>,
    ) -> bool {
        if self.cookie.max_age != MaxAge::FollowSession {
            return false;
        }
        let window = keepalive_slack(max_inactive.unwrap_or(Duration::MAX));
        if self.manager.mode() == Mode::Sticky {
            let period = |time: SystemTime| {
                time.duration_since(UNIX_EPOCH)
                    .map_or(0, |since| since.as_secs() / window.as_secs().max(1))
            };
            return period(SystemTime::now()) != period(previous_access);
        }
        match self.issued.age(id) {
            Some(age) => age >= window,
            // Issued by another server, or forgotten: it is no older than the session.
            None => SystemTime::now()
                .duration_since(created)
                .is_ok_and(|age| age >= window),
        }
    }

    /// Commits a request's session and sets its cookie on `response`; a failed commit
    /// replaces the response.
    ///
    /// The commit that has nothing to wait for (an unchanged sticky session, most
    /// requests) is done here and now: the response is handed back as `Ok`, with its
    /// cookie set, and no future is allocated. Otherwise `Err` carries the future that
    /// commits.
    pub(crate) fn finish<B: From<String> + Send + 'static>(
        shared: Arc<Shared<C>>,
        finished: Finished<C>,
        mut response: Response<B>,
    ) -> Result<Response<B>, Committing<B>> {
        let after = AfterCommit::of(&finished);
        match shared.manager.commit_now(finished.session) {
            Ok(outcome) => {
                shared.set_cookie(&mut response, outcome.cookie, &after);
                Ok(response)
            }
            Err(session) => Err(Box::pin(Shared::commit(shared, session, after, response))),
        }
    }

    /// [`finish`](Self::finish) when the commit has to wait.
    ///
    /// A plain function returning an async block, not an `async fn`: an async fn
    /// would keep the session in its state a second time, beside the commit's future
    /// that holds it.
    fn commit<B: From<String> + Send + 'static>(
        shared: Arc<Shared<C>>,
        session: RequestSession<C>,
        after: AfterCommit,
        mut response: Response<B>,
    ) -> impl Future<Output = Response<B>> + Send + 'static {
        let manager = shared.manager.clone();
        async move {
            match manager.commit(session).await {
                Ok(outcome) => {
                    shared.set_cookie(&mut response, outcome.cookie, &after);
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
    fn set_cookie<B>(&self, response: &mut Response<B>, cookie: CookieUpdate, after: &AfterCommit) {
        let header = match cookie {
            CookieUpdate::Set { id, max_inactive } => Some(self.issue(id.as_str(), max_inactive)),
            CookieUpdate::Clear => Some(self.cookie.clear()),
            // No session, but the client sent a cookie the layer refused (bad
            // signature, malformed): remove it rather than see it again on every
            // request.
            CookieUpdate::Keep if after.was_new => {
                after.cookie_rejected.then(|| self.cookie.clear())
            }
            CookieUpdate::Keep => (after.interval != after.interval_at_load
                || self.renewal_due(
                    after.id.as_str(),
                    after.previous_access,
                    after.created,
                    after.interval,
                ))
            .then(|| self.issue(after.id.as_str(), after.interval)),
        };
        if let Some(header) = header {
            response.headers_mut().append(SET_COOKIE, header);
        }
    }
}

/// A commit in progress, ending in the response with its cookie set.
type Committing<B> = Pin<Box<dyn Future<Output = Response<B>> + Send>>;

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

/// A tower [`Layer`] that gives each request a lazily loaded session and sets the
/// session cookie on its response.
///
/// For each request that is not [ignored](SessionLayerBuilder::ignore), the layer puts
/// a [`Session`] handle into the request's extensions (axum handlers take it as an
/// extractor). Nothing else happens unless the handler uses the handle: its first use
/// reads the cookie, checks its signature and loads the session with
/// [`SessionManager::load_for`] (passing the method and path, for lock scopes). After
/// the handler produced its response, a used session is committed with
/// [`SessionManager::commit`] before the response goes out (with asynchronous backups
/// the commit does not wait for the remote tier), and the cookie is set or cleared as
/// the commit says. A commit that fails replaces the response with the configured
/// error response ([`default_error_response`] unless changed). The response body type
/// must be constructible from a `String` for that (axum's `Body` and
/// `http_body_util::Full<Bytes>` are).
///
/// ```
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use axum::{routing::get, Router};
/// use tandem_core::{MemoryStore, NodeId};
/// use tandem_manager::SessionManager;
/// use tandem_tower::{Session, SessionLayer};
/// # use tandem_core::{Codec, CodecId, Decodes, Encodes, CodecError};
/// # struct Text;
/// # impl Codec for Text { const ID: CodecId = CodecId::new(250); const NAME: &'static str = "text"; }
/// # impl Encodes<str> for Text { fn encode(v: &str) -> Result<Vec<u8>, CodecError> { Ok(v.as_bytes().to_vec()) } }
/// # impl Decodes<String> for Text { fn decode(b: &[u8]) -> Result<String, CodecError> { String::from_utf8(b.to_vec()).map_err(|e| CodecError::decode(Self::ID, e)) } }
///
/// async fn hello(session: Session<Text>) -> Result<String, tandem_tower::SessionError> {
///     let name = session.get::<String>("name").await?.unwrap_or_else(|| "stranger".into());
///     Ok(format!("hello, {name}"))
/// }
///
/// let store = Arc::new(MemoryStore::new([NodeId::new("n1")?]));
/// let manager = SessionManager::<Text>::builder(store).build()?;
/// let app: Router = Router::new()
///     .route("/", get(hello))
///     .layer(SessionLayer::new(manager));
/// # let _ = app;
/// # Ok(())
/// # }
/// ```
pub struct SessionLayer<C> {
    shared: Arc<Shared<C>>,
}

impl<C> Clone for SessionLayer<C> {
    fn clone(&self) -> Self {
        SessionLayer {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<C: Codec> SessionLayer<C> {
    /// A layer with the default settings: cookie `tandem_session` on path `/`,
    /// `HttpOnly`, `Secure`, `SameSite=Lax`, [`MaxAge::FollowSession`], no ignored
    /// paths, unsigned values, [`default_error_response`].
    pub fn new(manager: SessionManager<C>) -> SessionLayer<C> {
        SessionLayer::builder(manager)
            .build()
            .unwrap_or_else(|_| unreachable!("the default settings are valid"))
    }

    /// A builder to change the settings.
    pub fn builder(manager: SessionManager<C>) -> SessionLayerBuilder<C> {
        SessionLayerBuilder {
            manager,
            cookie: CookieSettings::default(),
            ignore: None,
            signer: None,
            responder: Arc::new(default_error_response),
        }
    }

    /// The session manager behind the layer.
    pub fn manager(&self) -> &SessionManager<C> {
        &self.shared.manager
    }
}

impl<C> std::fmt::Debug for SessionLayer<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionLayer")
            .field("cookie", &self.shared.cookie)
            .field("ignore", &self.shared.ignore)
            .field("signed", &self.shared.signer.is_some())
            .finish()
    }
}

impl<S, C> Layer<S> for SessionLayer<C> {
    type Service = SessionService<S, C>;

    fn layer(&self, inner: S) -> SessionService<S, C> {
        SessionService {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// Builds a [`SessionLayer`]; start from [`SessionLayer::builder`].
///
/// ```
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use std::time::Duration;
/// use regex::Regex;
/// use tandem_core::{MemoryStore, NodeId};
/// use tandem_manager::SessionManager;
/// use tandem_tower::{CookieSigner, MaxAge, SameSite, SessionLayer};
/// # use tandem_core::{Codec, CodecId};
/// # struct MyCodec;
/// # impl Codec for MyCodec { const ID: CodecId = CodecId::new(250); const NAME: &'static str = "mine"; }
///
/// let store = Arc::new(MemoryStore::new([NodeId::new("n1")?]));
/// let manager = SessionManager::<MyCodec>::builder(store).build()?;
/// let layer = SessionLayer::builder(manager)
///     .cookie_name("shop_session")
///     .cookie_path("/shop")
///     .cookie_domain("example.com")
///     .same_site(SameSite::Strict)
///     .max_age(MaxAge::BrowserSession)
///     .ignore(Regex::new(r"^/shop/(static|assets)/")?)
///     .signed(CookieSigner::new(&std::env::var("SESSION_SIGNING_KEY")?.into_bytes())?)
///     .build()?;
/// # let _ = layer;
/// # Ok(())
/// # }
/// ```
pub struct SessionLayerBuilder<C> {
    manager: SessionManager<C>,
    cookie: CookieSettings,
    ignore: Option<Regex>,
    signer: Option<CookieSigner>,
    responder: Responder,
}

impl<C: Codec> SessionLayerBuilder<C> {
    /// The cookie's name (default `tandem_session`).
    ///
    /// A name starting with `__Host-` (for example `__Host-session`) is the safest
    /// choice on HTTPS: browsers then accept the cookie only with `Secure`, `Path=/`
    /// and no `Domain`, so a sibling subdomain cannot plant a session cookie of its own
    /// for this host (which the layer, taking the first cookie of its name, would
    /// otherwise read). The layer refuses to build with settings that break the
    /// prefix ([`CookieConfigError::Prefix`]).
    pub fn cookie_name(mut self, name: impl Into<String>) -> Self {
        self.cookie.name = name.into();
        self
    }

    /// The cookie's `Path` (default `/`).
    pub fn cookie_path(mut self, path: impl Into<String>) -> Self {
        self.cookie.path = path.into();
        self
    }

    /// The cookie's `Domain` (default: none, so the cookie goes back to the host that
    /// set it only).
    pub fn cookie_domain(mut self, domain: impl Into<String>) -> Self {
        self.cookie.domain = Some(domain.into());
        self
    }

    /// Whether the cookie is `HttpOnly`, hidden from scripts (default on).
    pub fn http_only(mut self, on: bool) -> Self {
        self.cookie.http_only = on;
        self
    }

    /// Whether the cookie is `Secure`, sent over HTTPS only (default on; turn it off
    /// only for plain-HTTP development servers).
    pub fn secure(mut self, on: bool) -> Self {
        self.cookie.secure = on;
        self
    }

    /// The cookie's `SameSite` (default [`SameSite::Lax`]).
    pub fn same_site(mut self, same_site: SameSite) -> Self {
        self.cookie.same_site = same_site;
        self
    }

    /// How the cookie's `Max-Age` is chosen (default [`MaxAge::FollowSession`], which
    /// explains how it behaves with sliding expiry).
    pub fn max_age(mut self, max_age: MaxAge) -> Self {
        self.cookie.max_age = max_age;
        self
    }

    /// Requests whose path matches `pattern` never get a session (static resources):
    /// no handle in their extensions, no cookie read or written.
    pub fn ignore(mut self, pattern: Regex) -> Self {
        self.ignore = Some(pattern);
        self
    }

    /// Signs cookie values with `signer`; values that do not verify are no session, and
    /// cost no lookup in either tier. Turning signing on makes the unsigned cookies
    /// already issued invalid (their sessions start over).
    pub fn signed(mut self, signer: CookieSigner) -> Self {
        self.signer = Some(signer);
        self
    }

    /// What a failed load or commit answers (default [`default_error_response`]).
    ///
    /// ```
    /// # async fn run(manager: tandem_manager::SessionManager<tandem_codec::SpeedyCodec>) {
    /// use http::{Response, StatusCode};
    /// use tandem_manager::CommitError;
    /// use tandem_tower::{default_error_response, Failure, SessionLayer};
    ///
    /// let layer = SessionLayer::builder(manager)
    ///     .error_response(|failure: &Failure| match failure {
    ///         Failure::Commit(CommitError::Conflict { .. }) => {
    ///             let mut response = Response::new("please retry".to_owned());
    ///             *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    ///             response
    ///         }
    ///         other => default_error_response(other),
    ///     })
    ///     .build()
    ///     .unwrap();
    /// # let _ = layer;
    /// # }
    /// ```
    pub fn error_response(
        mut self,
        responder: impl Fn(&Failure) -> Response<String> + Send + Sync + 'static,
    ) -> Self {
        self.responder = Arc::new(responder);
        self
    }

    /// Checks the cookie settings and builds the layer.
    pub fn build(self) -> Result<SessionLayer<C>, CookieConfigError> {
        self.cookie.validate()?;
        Ok(SessionLayer {
            shared: Arc::new(Shared {
                manager: self.manager,
                cookie: self.cookie,
                ignore: self.ignore,
                signer: self.signer,
                responder: self.responder,
                issued: IssuedCookies::new(),
            }),
        })
    }
}

/// The service [`SessionLayer`] wraps around an inner service: any tower service of
/// `http` requests whose response body can be made from a `String`.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::convert::Infallible;
/// use std::sync::Arc;
/// use http::{header, Request, Response};
/// use tandem_core::{MemoryStore, NodeId};
/// use tandem_manager::SessionManager;
/// use tandem_codec::SpeedyCodec;
/// use tandem_tower::{Session, SessionLayer};
/// use tower::{Layer, ServiceExt};
///
/// let store = Arc::new(MemoryStore::new([NodeId::new("n1").unwrap()]));
/// let manager = SessionManager::<SpeedyCodec>::builder(store).build().unwrap();
/// let service = SessionLayer::new(manager).layer(tower::service_fn(|request: Request<()>| async move {
///     let session = request.extensions().get::<Session<SpeedyCodec>>().unwrap();
///     session.insert("seen", &true).await.unwrap();
///     Ok::<_, Infallible>(Response::new(String::from("hello")))
/// }));
///
/// let response = service.oneshot(Request::new(())).await.unwrap();
/// assert!(response.headers().contains_key(header::SET_COOKIE));
/// # });
/// ```
pub struct SessionService<S, C> {
    inner: S,
    shared: Arc<Shared<C>>,
}

impl<S: Clone, C> Clone for SessionService<S, C> {
    fn clone(&self) -> Self {
        SessionService {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: std::fmt::Debug, C> std::fmt::Debug for SessionService<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

pin_project_lite::pin_project! {
    /// The future of [`SessionService`]'s responses: the inner service's response,
    /// then the commit of the request's session (if the handler used it).
    ///
    /// A hand-written state machine rather than a boxed async block: a request whose
    /// handler does not use the session costs no allocation, and one that does
    /// allocates only the (small) commit step.
    pub struct ResponseFuture<F, C, B> {
        #[pin]
        inner: F,
        // `None` once the inner response arrived, or for ignored paths.
        slot: Option<Arc<Slot<C>>>,
        finishing: Option<Committing<B>>,
    }
}

impl<F, C, B, E> Future for ResponseFuture<F, C, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    C: Codec,
    B: From<String> + Send + 'static,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Some(finishing) = this.finishing.as_mut() {
            return finishing.as_mut().poll(cx).map(Ok);
        }
        let response = std::task::ready!(this.inner.poll(cx))?;
        let Some(slot) = this.slot.take() else {
            return Poll::Ready(Ok(response));
        };
        let shared = Arc::clone(slot.shared());
        let mut finishing: Committing<B> = match slot.try_take() {
            // The handler never used the session: nothing to do.
            Ok(None) => return Poll::Ready(Ok(response)),
            Ok(Some(finished)) => match Shared::finish(shared, finished, response) {
                Ok(response) => return Poll::Ready(Ok(response)),
                Err(committing) => committing,
            },
            // Something the handler spawned still holds the session: wait for it.
            Err(()) => Box::pin(async move {
                match slot.take().await {
                    Some(finished) => match Shared::finish(shared, finished, response) {
                        Ok(response) => response,
                        Err(committing) => committing.await,
                    },
                    None => response,
                }
            }),
        };
        let poll = finishing.as_mut().poll(cx);
        if poll.is_pending() {
            *this.finishing = Some(finishing);
        }
        poll.map(Ok)
    }
}

impl<S, C, ReqBody, ResBody> Service<Request<ReqBody>> for SessionService<S, C>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    C: Codec,
    ReqBody: Send + 'static,
    ResBody: From<String> + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, C, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        // The clone that was polled ready serves this request; the fresh clone stays.
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        let ignored = self
            .shared
            .ignore
            .as_ref()
            .is_some_and(|pattern| pattern.is_match(request.uri().path()));
        if ignored {
            return ResponseFuture {
                inner: inner.call(request),
                slot: None,
                finishing: None,
            };
        }
        let slot = Arc::new(Slot::new(Arc::clone(&self.shared), &request));
        request
            .extensions_mut()
            .insert(Session::new(Arc::clone(&slot)));
        ResponseFuture {
            inner: inner.call(request),
            slot: Some(slot),
            finishing: None,
        }
    }
}
