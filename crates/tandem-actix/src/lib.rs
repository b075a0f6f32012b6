//! Tandem for actix-web: a middleware ([`SessionMiddleware`], for `App::wrap`) that
//! gives every request a lazily loaded session and keeps the session cookie, and a
//! [`Session`] extractor.
//!
//! ```
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use actix_web::{web, App, HttpServer};
//! use regex::Regex;
//! use tandem_actix::{Session, SessionError, SessionMiddleware};
//! use tandem_codec::SpeedyCodec;
//! use tandem_core::{MemoryStore, NodeId};
//! use tandem_manager::SessionManager;
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
//! let store = Arc::new(MemoryStore::new([NodeId::new("n1")?])); // or a MemcachedStore
//! let manager = SessionManager::<SpeedyCodec>::builder(store).build()?;
//! let sessions = SessionMiddleware::builder(manager)
//!     .ignore(Regex::new("^/static/")?)
//!     .build()?;
//! HttpServer::new(move || {
//!     App::new()
//!         .wrap(sessions.clone())
//!         .route("/", web::get().to(visits))
//!         .route("/login", web::post().to(login))
//! })
//! .bind("127.0.0.1:8080")?
//! .run()
//! .await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Same semantics as the tower layer
//!
//! Everything but the actix-web plumbing is `tandem-http`'s, which `tandem-tower`
//! uses too: the [`Session`] type is the same (code written against it runs under
//! either framework), and so are the settings builder, cookie attributes and renewal,
//! signing with key rotation ([`CookieSigner`]), ignored paths and the statuses of
//! failed commits ([`default_error_response`]: 409 for a conflicting or ended session,
//! 413 for one grown too large, 503 when storage or the session's lock is
//! unavailable). Servers of both frameworks pointed at the same remote nodes share
//! sessions.
//!
//! - **Lazy.** A request whose handler never uses its session costs no load and no
//!   network operation; only its `Cookie` header is copied (actix-web 4 has `http`
//!   types of its own).
//! - **Commit after the handler**, before the response leaves; a failed commit
//!   replaces the response, since the changes it reports were not applied.
//! - **Errors are responses.** [`SessionError`] implements `ResponseError`, so
//!   handlers use `?`; a load failure answers as configured (503 by default).
//! - **Ignored paths and the extractor.** Handlers that also serve ignored paths take
//!   `Option<Session<C>>`; `Session<C>` alone on an ignored path (or without the
//!   middleware) is a configuration mistake and answers 500 ([`MissingSession`]).
//!
//! Custom error responses ([`SettingsBuilder::error_response`]) are `http` 1
//! responses in both integrations, re-exported here as [`http`]; the middleware
//! converts them with [`actix_response`].
#![warn(missing_docs)]

mod middleware;

pub use http;
pub use middleware::{ResponseFuture, SessionMiddleware, SessionMiddlewareBuilder, SessionService};
pub use tandem_http::{
    CookieConfigError, CookieSigner, DEFAULT_COOKIE_NAME, Failure, MAX_COOKIE_VALUE_LEN, MaxAge,
    MissingSession, SameSite, Session, SessionError, SessionErrorKind, SessionGuard,
    SessionSettings, SettingsBuilder, SigningKeyError, actix_response, default_error_response,
};
