//! [`SessionLayer`] and its builder.

use std::sync::Arc;

use tandem_core::Codec;
use tandem_http::{FromSettings, SessionSettings, SettingsBuilder};
use tandem_manager::SessionManager;
use tower::Layer;

use crate::service::SessionService;

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
/// error response ([`default_error_response`](crate::default_error_response) unless changed). The response body type
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
    shared: Arc<SessionSettings<C>>,
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
    /// `HttpOnly`, `Secure`, `SameSite=Lax`, [`MaxAge::FollowSession`](crate::MaxAge::FollowSession), no ignored
    /// paths, unsigned values, [`default_error_response`](crate::default_error_response).
    pub fn new(manager: SessionManager<C>) -> SessionLayer<C> {
        SessionLayer::builder(manager)
            .build()
            .unwrap_or_else(|_| unreachable!("the default settings are valid"))
    }

    /// A builder to change the settings.
    pub fn builder(manager: SessionManager<C>) -> SessionLayerBuilder<C> {
        SettingsBuilder::new(manager)
    }

    /// The session manager behind the layer.
    pub fn manager(&self) -> &SessionManager<C> {
        self.shared.manager()
    }

    /// The layer's settings.
    pub fn settings(&self) -> &Arc<SessionSettings<C>> {
        &self.shared
    }
}

impl<C> FromSettings<C> for SessionLayer<C> {
    fn from_settings(settings: Arc<SessionSettings<C>>) -> Self {
        SessionLayer { shared: settings }
    }
}

impl<C> std::fmt::Debug for SessionLayer<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionLayer")
            .field("settings", &self.shared)
            .finish()
    }
}

impl<S, C> Layer<S> for SessionLayer<C> {
    type Service = SessionService<S, C>;

    fn layer(&self, inner: S) -> SessionService<S, C> {
        SessionService::new(inner, Arc::clone(&self.shared))
    }
}

/// Builds a [`SessionLayer`]; start from [`SessionLayer::builder`]. The builder is
/// `tandem-http`'s [`SettingsBuilder`], the same that `tandem-actix` uses: every setting
/// is documented there.
///
/// ```
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
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
///     .same_site(SameSite::Strict)
///     .max_age(MaxAge::BrowserSession)
///     .ignore(Regex::new(r"^/shop/(static|assets)/")?)
///     .signed(CookieSigner::new(&std::env::var("SESSION_SIGNING_KEY")?.into_bytes())?)
///     .build()?;
/// # let _ = layer;
/// # Ok(())
/// # }
/// ```
pub type SessionLayerBuilder<C> = SettingsBuilder<C, SessionLayer<C>>;
