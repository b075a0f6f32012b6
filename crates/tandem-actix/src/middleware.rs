//! [`SessionMiddleware`], its service, and the future of its responses.

use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::http::header::{COOKIE, HeaderValue, SET_COOKIE};
use actix_web::{Error, HttpMessage};
use tandem_core::Codec;
use tandem_http::{
    CommitResult, CommitStage, CookieHeaders, FromSettings, SessionRequest, SessionSettings,
    SettingsBuilder, actix_response,
};
use tandem_manager::SessionManager;

/// An actix-web middleware ([`App::wrap`](actix_web::App::wrap)) that gives each
/// request a lazily loaded session and sets the session cookie on its response.
///
/// For each request whose path is not [ignored](SettingsBuilder::ignore), the
/// middleware puts a [`Session`](crate::Session) handle into the request's extensions,
/// where the `Session` extractor finds it. Nothing else happens unless the handler uses
/// the handle: its first use reads the cookie, checks its signature and loads the
/// session (with [`SessionManager::load_for`], passing the method and path when lock
/// scopes need them). After the handler produced its response, a used session is
/// committed before the response goes out (with asynchronous backups the commit does
/// not wait for the remote tier), and the cookie is set or cleared as the commit says.
/// A commit that fails replaces the response with the configured error response
/// ([`default_error_response`](crate::default_error_response) unless changed: 409, 413
/// or 503).
///
/// It behaves exactly as `tandem-tower`'s layer: both are the same `tandem-http` part
/// under different plumbing.
///
/// ```
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use actix_web::{web, App, HttpServer};
/// use tandem_actix::{Session, SessionError, SessionMiddleware};
/// use tandem_codec::SpeedyCodec;
/// use tandem_core::{MemoryStore, NodeId};
/// use tandem_manager::SessionManager;
///
/// async fn visits(session: Session<SpeedyCodec>) -> Result<String, SessionError> {
///     let visits = session.get::<u64>("visits").await?.unwrap_or(0) + 1;
///     session.insert("visits", &visits).await?;
///     Ok(format!("visit {visits}"))
/// }
///
/// let store = Arc::new(MemoryStore::new([NodeId::new("n1")?])); // or a MemcachedStore
/// let manager = SessionManager::<SpeedyCodec>::builder(store).build()?;
/// let sessions = SessionMiddleware::new(manager);
/// HttpServer::new(move || {
///     App::new()
///         .wrap(sessions.clone())
///         .route("/", web::get().to(visits))
/// })
/// .bind("127.0.0.1:8080")?
/// .run()
/// .await?;
/// # Ok(())
/// # }
/// ```
pub struct SessionMiddleware<C> {
    settings: Arc<SessionSettings<C>>,
}

impl<C> Clone for SessionMiddleware<C> {
    fn clone(&self) -> Self {
        SessionMiddleware {
            settings: Arc::clone(&self.settings),
        }
    }
}

impl<C> std::fmt::Debug for SessionMiddleware<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionMiddleware")
            .field("settings", &self.settings)
            .finish()
    }
}

impl<C: Codec> SessionMiddleware<C> {
    /// A middleware with the default settings: cookie `tandem_session` on path `/`,
    /// `HttpOnly`, `Secure`, `SameSite=Lax`, `MaxAge::FollowSession`, no ignored
    /// paths, unsigned values, the default error responses.
    pub fn new(manager: SessionManager<C>) -> SessionMiddleware<C> {
        SessionMiddleware::builder(manager)
            .build()
            .unwrap_or_else(|_| unreachable!("the default settings are valid"))
    }

    /// A builder to change the settings: the same builder as `tandem-tower`'s layer.
    ///
    /// ```
    /// # fn run(manager: tandem_manager::SessionManager<tandem_codec::SpeedyCodec>) -> Result<(), Box<dyn std::error::Error>> {
    /// use regex::Regex;
    /// use tandem_actix::{CookieSigner, SameSite, SessionMiddleware};
    ///
    /// let sessions = SessionMiddleware::builder(manager)
    ///     .cookie_name("__Host-shop")
    ///     .same_site(SameSite::Strict)
    ///     .ignore(Regex::new("^/static/")?)
    ///     .signed(CookieSigner::new(&std::env::var("SESSION_SIGNING_KEY")?.into_bytes())?)
    ///     .build()?;
    /// # let _ = sessions;
    /// # Ok(())
    /// # }
    /// ```
    pub fn builder(manager: SessionManager<C>) -> SessionMiddlewareBuilder<C> {
        SettingsBuilder::new(manager)
    }

    /// The session manager behind the middleware.
    pub fn manager(&self) -> &SessionManager<C> {
        self.settings.manager()
    }

    /// The middleware's settings.
    pub fn settings(&self) -> &Arc<SessionSettings<C>> {
        &self.settings
    }
}

impl<C> FromSettings<C> for SessionMiddleware<C> {
    fn from_settings(settings: Arc<SessionSettings<C>>) -> Self {
        SessionMiddleware { settings }
    }
}

/// Builds a [`SessionMiddleware`]; start from [`SessionMiddleware::builder`]. It is
/// `tandem-http`'s [`SettingsBuilder`], where every setting is documented.
pub type SessionMiddlewareBuilder<C> = SettingsBuilder<C, SessionMiddleware<C>>;

impl<S, B, C> Transform<S, ServiceRequest> for SessionMiddleware<C>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
    B: MessageBody,
    C: Codec,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Transform = SessionService<S, C>;
    type InitError = ();
    type Future = Ready<Result<SessionService<S, C>, ()>>;

    fn new_transform(&self, inner: S) -> Self::Future {
        ready(Ok(SessionService {
            inner,
            settings: Arc::clone(&self.settings),
        }))
    }
}

/// The service [`SessionMiddleware`] wraps around an actix-web service.
pub struct SessionService<S, C> {
    inner: S,
    settings: Arc<SessionSettings<C>>,
}

impl<S, C> std::fmt::Debug for SessionService<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionService").finish_non_exhaustive()
    }
}

impl<S, B, C> Service<ServiceRequest> for SessionService<S, C>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
    B: MessageBody,
    C: Codec,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Future = ResponseFuture<S::Future, C, B>;

    forward_ready!(inner);

    fn call(&self, request: ServiceRequest) -> Self::Future {
        if self.settings.ignores(request.path()) {
            return ResponseFuture {
                inner: self.inner.call(request),
                stage: CommitStage::new(None),
            };
        }
        // actix-web 4 has `http` types of its own: the headers are copied (only when
        // the request sends cookies), the request line only when lock scopes use it.
        let cookies = CookieHeaders::copied(
            request
                .headers()
                .get_all(COOKIE)
                .map(|value| value.as_bytes()),
        );
        let request_line = if self.settings.uses_request_line() {
            request_line(&request)
        } else {
            None
        };
        let session_request = SessionRequest::new(&self.settings, cookies, request_line);
        request.extensions_mut().insert(session_request.session());
        ResponseFuture {
            inner: self.inner.call(request),
            stage: CommitStage::new(Some(session_request)),
        }
    }
}

/// The request's method and URI as `http` 1 types.
fn request_line(request: &ServiceRequest) -> Option<(http::Method, http::Uri)> {
    let method = http::Method::from_bytes(request.method().as_str().as_bytes()).ok()?;
    let target = request
        .uri()
        .path_and_query()
        .map_or(request.path(), |target| target.as_str());
    Some((method, http::Uri::try_from(target).ok()?))
}

pin_project_lite::pin_project! {
    /// The future of [`SessionService`]'s responses: the inner service's response, then
    /// the commit of the request's session (if the handler used it).
    ///
    /// Hand-written rather than boxed: a request whose handler does not use the
    /// session, or whose commit needs no wait, allocates nothing for it.
    pub struct ResponseFuture<F, C, B> {
        #[pin]
        inner: F,
        stage: CommitStage<C, ServiceResponse<B>>,
    }
}

impl<F, C, B> Future for ResponseFuture<F, C, B>
where
    F: Future<Output = Result<ServiceResponse<B>, Error>>,
    C: Codec,
    B: MessageBody,
{
    type Output = Result<ServiceResponse<EitherBody<B>>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let inner = this.inner;
        this.stage
            .poll(cx, |cx| inner.poll(cx))
            .map_ok(|(result, response)| complete(result, response))
    }
}

/// Puts a commit's result on `response`: the cookie, or the failure's response.
fn complete<B>(
    result: CommitResult,
    mut response: ServiceResponse<B>,
) -> ServiceResponse<EitherBody<B>> {
    match result {
        Ok(Some(set_cookie)) => {
            // Checked visible ASCII when written; the text's buffer becomes the value's.
            if let Ok(value) = HeaderValue::try_from(set_cookie) {
                response.headers_mut().append(SET_COOKIE, value);
            }
            response.map_into_left_body()
        }
        Ok(None) => response.map_into_left_body(),
        Err(failed) => response
            .into_response(actix_response(failed))
            .map_into_right_body(),
    }
}
