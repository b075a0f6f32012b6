//! Tandem's framework-neutral HTTP part, which every web integration shares so that
//! nothing is written twice and the integrations behave alike:
//!
//! - **The session handle** handlers use, [`Session`]: lazy (nothing is read or loaded
//!   until a method is called), with typed `get` / `insert` / `remove`, `cycle_id` and
//!   `invalidate`, and [`SessionError`] for what can fail.
//! - **The per-request flow**, [`SessionRequest`]: start a request's session from its
//!   `Cookie` headers, hand the handle to the handler, then commit and learn which
//!   `Set-Cookie` to append, or which [`Failure`] replaces the response.
//! - **Settings**, [`SessionSettings`] and their builder [`SettingsBuilder`]: the
//!   cookie's attributes ([`SameSite`], [`MaxAge`] with its renewal of sliding
//!   sessions), HMAC signing with key rotation ([`CookieSigner`]), ignored paths, and
//!   the mapping of failures to statuses ([`default_error_response`]: 409, 413, 503).
//!
//! Applications use it through an integration: `tandem-tower` (a tower layer and an
//! axum extractor) or `tandem-actix` (an actix-web middleware and extractor). Both
//! re-export what is here, so handler code written against [`Session`] runs under
//! either. The `axum` and `actix-web` features add the frameworks' extractor and
//! response traits to these types (the orphan rule lets only this crate do that).
//!
//! ```
//! use tandem_codec::SpeedyCodec;
//! use tandem_http::{Session, SessionError};
//!
//! // The same handler logic under axum and actix-web.
//! async fn count_visit(session: &Session<SpeedyCodec>) -> Result<u64, SessionError> {
//!     let visits = session.get::<u64>("visits").await?.unwrap_or(0) + 1;
//!     session.insert("visits", &visits).await?;
//!     Ok(visits)
//! }
//! ```
#![warn(missing_docs)]

#[cfg(feature = "actix-web")]
mod actix;
#[cfg(feature = "axum")]
mod axum;
mod commit;
mod cookie;
mod error;
mod issued;
mod request;
mod session;
mod settings;
mod signing;
mod slot;

#[cfg(feature = "actix-web")]
pub use actix::actix_response;
pub use commit::{CommitResult, PendingCommit};
pub use cookie::{
    CookieConfigError, CookieHeaders, DEFAULT_COOKIE_NAME, MAX_COOKIE_VALUE_LEN, MaxAge, SameSite,
};
pub use error::{Failure, MissingSession, SessionError, SessionErrorKind, default_error_response};
pub use request::{CommitStage, Finishing, SessionRequest};
pub use session::{Session, SessionGuard};
pub use settings::{FromSettings, SessionSettings, SettingsBuilder};
pub use signing::{CookieSigner, SigningKeyError};
