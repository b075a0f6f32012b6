//! [`SessionLayer`] and its builder: the settings of the layer.

use std::sync::Arc;

use http::Response;
use regex::Regex;
use tandem_core::Codec;
use tandem_manager::SessionManager;
use tower::Layer;

use crate::cookie::{CookieConfigError, CookieSettings, MaxAge, SameSite};
use crate::error::{Failure, Responder, default_error_response};
use crate::service::SessionService;
use crate::shared::Shared;
use crate::signing::CookieSigner;

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
/// [`Session`]: crate::Session
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
        SessionService::new(inner, Arc::clone(&self.shared))
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
            shared: Arc::new(Shared::new(
                self.manager,
                self.cookie,
                self.ignore,
                self.signer,
                self.responder,
            )),
        })
    }
}
