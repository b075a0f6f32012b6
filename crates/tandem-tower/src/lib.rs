//! Tandem's web layer: a [tower] [`Layer`](tower::Layer) that gives every request a
//! lazily loaded session and keeps the session cookie, and an [axum] extractor for it.
//!
//! [tower]: https://docs.rs/tower
//! [axum]: https://docs.rs/axum
//!
//! ```
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use axum::{routing::{get, post}, Router};
//! use regex::Regex;
//! use tandem_core::{MemoryStore, NodeId};
//! use tandem_manager::SessionManager;
//! use tandem_codec::SpeedyCodec;
//! use tandem_tower::{Session, SessionError, SessionLayer};
//!
//! async fn visits(session: Session<SpeedyCodec>) -> Result<String, SessionError> {
//!     let visits = session.get::<u64>("visits").await?.unwrap_or(0) + 1;
//!     session.insert("visits", &visits).await?;
//!     Ok(format!("visit {visits}"))
//! }
//!
//! async fn login(session: Session<SpeedyCodec>) -> Result<&'static str, SessionError> {
//!     session.insert("user", "ann").await?;
//!     session.cycle_id().await?; // a new id after a login
//!     Ok("welcome")
//! }
//!
//! async fn health() -> &'static str {
//!     "ok" // never touches the session: costs nothing
//! }
//!
//! let store = Arc::new(MemoryStore::new([NodeId::new("n1")?])); // or a MemcachedStore
//! let manager = SessionManager::<SpeedyCodec>::builder(store).build()?;
//! let app: Router = Router::new()
//!     .route("/", get(visits))
//!     .route("/login", post(login))
//!     .route("/healthz", get(health))
//!     .layer(
//!         SessionLayer::builder(manager)
//!             .ignore(Regex::new("^/static/")?)
//!             .build()?,
//!     );
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # What it does
//!
//! - **Lazy sessions.** The layer puts a [`Session`] handle into each request. Only
//!   its first use reads the cookie and loads the session (with
//!   [`SessionManager::load_for`](tandem_manager::SessionManager::load_for), passing the
//!   method and path for lock scopes); a request whose handler never uses it costs no
//!   session work and no network operation.
//! - **Commit after the handler.** A used session is committed when the handler has
//!   produced its response, before the response leaves: with asynchronous backups
//!   (the default) the commit does not wait for the remote tier; with synchronous
//!   backups the response waits for the write (bounded by its timeout).
//! - **Cookies.** Name, `Path`, `Domain`, `HttpOnly` (default on), `Secure` (default
//!   on), `SameSite` (default `Lax`), `Max-Age` following the session's lifetime
//!   ([`MaxAge`] explains how it slides). `Set-Cookie` is sent when the id is new or
//!   changes (creation, relocation to another node, takeover by this server,
//!   `cycle_id`), when the session is invalidated or unknown (a cookie that clears it),
//!   and, with [`MaxAge::FollowSession`], now and then to renew the cookie of a
//!   session in use.
//! - **Hostile cookies.** Values are checked for shape and length before anything
//!   else; with [`CookieSigner`] they carry an HMAC-SHA256 signature, and a forged or
//!   altered one is refused before either tier is asked. A refused cookie is no
//!   session, never an error.
//! - **Ignored paths.** A regular expression on the path ([`SessionLayerBuilder::ignore`])
//!   keeps static resources away from sessions entirely.
//! - **Errors are responses.** A failed commit (a concurrent change of the same
//!   attribute, no node available in non-sticky mode, ...) replaces the handler's
//!   response with a configurable one ([`default_error_response`]: 409, 413 or 503); a
//!   failed load is a [`SessionError`] that answers the same way when returned from a
//!   handler. Nothing in the layer panics on input.
//!
//! # What it is not
//!
//! It holds no sessions and talks to no store itself: that is the
//! [`SessionManager`](tandem_manager::SessionManager) of `tandem-core`, which this layer
//! calls. It does not terminate TLS, set security headers other than the cookie's, or
//! authenticate users. Everything but the tower plumbing (the session handle, cookies,
//! signing, renewal, error statuses) is `tandem-http`'s, shared with `tandem-actix`,
//! the actix-web middleware: the two behave alike and handler code written against
//! [`Session`] runs under either.
//!
//! # Without axum
//!
//! The layer is plain tower: it wraps any `Service<http::Request<B>>` whose response
//! body can be made from a `String`, for example a hyper service through
//! `hyper_util::service::TowerToHyperService`. Handlers then find the session in the
//! request's extensions:
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response};
//! use tandem_codec::SpeedyCodec;
//! use tandem_tower::Session;
//!
//! async fn handler(request: Request<String>) -> Result<Response<String>, Infallible> {
//!     let Some(session) = request.extensions().get::<Session<SpeedyCodec>>() else {
//!         return Ok(Response::new("no session here".into()));
//!     };
//!     let user = session.get::<String>("user").await.ok().flatten();
//!     Ok(Response::new(format!("user: {user:?}")))
//! }
//! ```
//!
//! (With `tower::service_fn(handler)` wrapped by the layer.) The `axum` feature (on by
//! default) adds the extractor; without it the crate needs only `tower` and `http`.
#![warn(missing_docs)]

mod layer;
mod service;

pub use layer::{SessionLayer, SessionLayerBuilder};
pub use service::{ResponseFuture, SessionService};
pub use tandem_http::{
    CookieConfigError, CookieSigner, DEFAULT_COOKIE_NAME, Failure, MAX_COOKIE_VALUE_LEN, MaxAge,
    MissingSession, SameSite, Session, SessionError, SessionErrorKind, SessionGuard,
    SessionSettings, SettingsBuilder, SigningKeyError, default_error_response,
};
