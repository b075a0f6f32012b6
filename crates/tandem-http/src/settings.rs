//! [`SessionSettings`]: what every request of one integration (a tower layer, an
//! actix-web middleware) shares, its builder, and the cookie policy that decides when
//! a session's cookie is (re)issued.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::Response;
use regex::Regex;
use tandem_core::Codec;
use tandem_manager::{Mode, SessionManager, keepalive_slack};

use crate::cookie::{CookieConfigError, CookieSettings, MaxAge, SameSite};
use crate::error::{Failure, Responder, default_error_response};
use crate::issued::IssuedCookies;
use crate::signing::{CookieSigner, SIGNATURE_LEN};

/// The settings of one session layer or middleware: the manager, the cookie, the
/// ignored paths, signing and the error responses. Built once, shared by every
/// request.
///
/// Integrations build them with [`SessionSettings::builder`] (or their own
/// `builder`, which returns the same [`SettingsBuilder`]) and start each request's
/// session with [`SessionRequest::new`](crate::SessionRequest::new).
pub struct SessionSettings<C> {
    pub(crate) manager: SessionManager<C>,
    pub(crate) cookie: CookieSettings,
    ignore: Option<Regex>,
    pub(crate) signer: Option<CookieSigner>,
    pub(crate) responder: Responder,
    /// When this process last issued each cookie, for non-sticky renewals.
    issued: IssuedCookies,
}

impl<C> std::fmt::Debug for SessionSettings<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionSettings")
            .field("cookie", &self.cookie)
            .field("ignore", &self.ignore)
            .field("signed", &self.signer.is_some())
            .finish_non_exhaustive()
    }
}

/// What a [`SettingsBuilder`] builds: the settings themselves, or an integration's
/// layer or middleware made from them.
pub trait FromSettings<C>: Sized {
    /// Wraps the checked settings.
    fn from_settings(settings: Arc<SessionSettings<C>>) -> Self;
}

impl<C> FromSettings<C> for Arc<SessionSettings<C>> {
    fn from_settings(settings: Arc<SessionSettings<C>>) -> Self {
        settings
    }
}

impl<C: Codec> SessionSettings<C> {
    /// A builder of settings (the integrations' `builder` functions return the same
    /// builder, building their layer or middleware instead).
    pub fn builder(manager: SessionManager<C>) -> SettingsBuilder<C, Arc<SessionSettings<C>>> {
        SettingsBuilder::new(manager)
    }

    /// The session manager.
    pub fn manager(&self) -> &SessionManager<C> {
        &self.manager
    }

    /// Whether requests for `path` get no session at all (see
    /// [`SettingsBuilder::ignore`]).
    pub fn ignores(&self, path: &str) -> bool {
        self.ignore
            .as_ref()
            .is_some_and(|pattern| pattern.is_match(path))
    }

    /// Whether a request's session needs its method and path (the manager's lock
    /// scopes look at them); otherwise integrations pass none and save the copy.
    pub fn uses_request_line(&self) -> bool {
        self.manager.uses_request_info()
    }

    /// The configured answer to `failure` ([`default_error_response`] unless
    /// [`SettingsBuilder::error_response`] changed it).
    pub fn error_response(&self, failure: &Failure) -> Response<String> {
        (self.responder)(failure)
    }

    /// The `Set-Cookie` header that issues (or reissues) the cookie of session `id`.
    pub(crate) fn issue(&self, id: &str, max_inactive: Option<Duration>) -> String {
        if self.manager.mode() == Mode::NonSticky && self.cookie.max_age == MaxAge::FollowSession {
            self.issued.issued(id);
        }
        match &self.signer {
            Some(signer) => {
                self.cookie
                    .set_with(id.len() + 1 + SIGNATURE_LEN, max_inactive, |header| {
                        signer.sign_into(&self.cookie.name, id, header);
                    })
            }
            None => self.cookie.set(id, max_inactive),
        }
    }

    /// Whether the cookie of a session in use may be older than its renewal window
    /// (see [`MaxAge::FollowSession`]).
    ///
    /// Sticky mode knows each session's previous access exactly, and renews the cookie
    /// on the first request of each window-long period of time: a cookie is then never
    /// older than one window at the session's last access, at no cost per request.
    /// Non-sticky mode stores access times only with changes, so there the settings
    /// remember when this process issued each cookie.
    pub(crate) fn renewal_due(
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
            return period(self.manager.clock().wall()) != period(previous_access);
        }
        match self.issued.age(id) {
            Some(age) => age >= window,
            // Issued by another server, or forgotten: it is no older than the session.
            None => self
                .manager
                .clock()
                .wall()
                .duration_since(created)
                .is_ok_and(|age| age >= window),
        }
    }
}

/// Builds [`SessionSettings`], or the layer or middleware `T` made from them: start
/// from [`SessionSettings::builder`], `tandem_tower::SessionLayer::builder` or
/// `tandem_actix::SessionMiddleware::builder`. The same settings mean the same
/// behaviour in every integration.
///
/// ```
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use regex::Regex;
/// use tandem_core::{MemoryStore, NodeId};
/// use tandem_manager::SessionManager;
/// use tandem_http::{CookieSigner, MaxAge, SameSite, SessionSettings};
/// # use tandem_core::{Codec, CodecId};
/// # struct MyCodec;
/// # impl Codec for MyCodec { const ID: CodecId = CodecId::new(250); const NAME: &'static str = "mine"; }
///
/// let store = Arc::new(MemoryStore::new([NodeId::new("n1")?]));
/// let manager = SessionManager::<MyCodec>::builder(store).build()?;
/// let settings = SessionSettings::builder(manager)
///     .cookie_name("shop_session")
///     .cookie_path("/shop")
///     .cookie_domain("example.com")
///     .same_site(SameSite::Strict)
///     .max_age(MaxAge::BrowserSession)
///     .ignore(Regex::new(r"^/shop/(static|assets)/")?)
///     .signed(CookieSigner::new(&std::env::var("SESSION_SIGNING_KEY")?.into_bytes())?)
///     .build()?;
/// assert!(settings.ignores("/shop/static/logo.png"));
/// # Ok(())
/// # }
/// ```
pub struct SettingsBuilder<C, T> {
    manager: SessionManager<C>,
    cookie: CookieSettings,
    ignore: Option<Regex>,
    signer: Option<CookieSigner>,
    responder: Responder,
    builds: PhantomData<fn() -> T>,
}

impl<C: Codec, T: FromSettings<C>> SettingsBuilder<C, T> {
    /// The default settings: cookie `tandem_session` on path `/`, `HttpOnly`,
    /// `Secure`, `SameSite=Lax`, [`MaxAge::FollowSession`], no ignored paths,
    /// unsigned values, [`default_error_response`].
    pub fn new(manager: SessionManager<C>) -> SettingsBuilder<C, T> {
        SettingsBuilder {
            manager,
            cookie: CookieSettings::default(),
            ignore: None,
            signer: None,
            responder: Arc::new(default_error_response),
            builds: PhantomData,
        }
    }

    /// The cookie's name (default `tandem_session`).
    ///
    /// A name starting with `__Host-` (for example `__Host-session`) is the safest
    /// choice on HTTPS: browsers then accept the cookie only with `Secure`, `Path=/`
    /// and no `Domain`, so a sibling subdomain cannot plant a session cookie of its own
    /// for this host (which the integration, taking the first cookie of its name, would
    /// otherwise read). [`build`](Self::build) refuses settings that break the prefix
    /// ([`CookieConfigError::Prefix`]).
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
    /// no session handle, no cookie read or written.
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
    /// The answer is an `http` 1 [`Response`] in every integration (actix-web's
    /// middleware converts it), so one function serves both.
    ///
    /// ```
    /// # async fn run(manager: tandem_manager::SessionManager<tandem_codec::SpeedyCodec>) {
    /// use http::{Response, StatusCode};
    /// use tandem_manager::CommitError;
    /// use tandem_http::{default_error_response, Failure, SessionSettings};
    ///
    /// let settings = SessionSettings::builder(manager)
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
    /// # let _ = settings;
    /// # }
    /// ```
    pub fn error_response(
        mut self,
        responder: impl Fn(&Failure) -> Response<String> + Send + Sync + 'static,
    ) -> Self {
        self.responder = Arc::new(responder);
        self
    }

    /// Checks the cookie settings and builds.
    pub fn build(self) -> Result<T, CookieConfigError> {
        self.cookie.validate()?;
        Ok(T::from_settings(Arc::new(SessionSettings {
            issued: IssuedCookies::new(Arc::clone(self.manager.clock())),
            manager: self.manager,
            cookie: self.cookie,
            ignore: self.ignore,
            signer: self.signer,
            responder: self.responder,
        })))
    }
}
