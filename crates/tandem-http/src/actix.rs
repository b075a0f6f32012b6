//! The actix-web extractor and responses (feature `actix-web`); the middleware itself
//! is the `tandem-actix` crate.
//!
//! They live here rather than in `tandem-actix` because Rust lets a crate implement a
//! foreign trait (`FromRequest`, `ResponseError`) only for its own types, and
//! [`Session`] and [`SessionError`] are this crate's: one type for both integrations,
//! so that code written against a session runs under either.

use std::future::{Ready, ready};

use actix_web::body::BoxBody;
use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError};
use tandem_core::Codec;

use crate::error::{MissingSession, SessionError};
use crate::session::Session;

/// An `http` 1 response (what the error responses of [`SettingsBuilder::error_response`]
/// are) as an actix-web response: status, headers and body. actix-web 4 has `http`
/// types of its own; this copies across.
///
/// [`SettingsBuilder::error_response`]: crate::SettingsBuilder::error_response
///
/// ```
/// use tandem_http::{actix_response, default_error_response, Failure};
/// use tandem_manager::LoadError;
///
/// let response = actix_response(default_error_response(&Failure::Load(LoadError::Unavailable)));
/// assert_eq!(response.status().as_u16(), 503);
/// assert_eq!(response.headers().get("retry-after").unwrap(), "1");
/// ```
pub fn actix_response(response: http::Response<String>) -> HttpResponse {
    let (parts, body) = response.into_parts();
    let status =
        StatusCode::from_u16(parts.status.as_u16()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut converted = HttpResponse::with_body(status, body).map_into_boxed_body();
    for (name, value) in &parts.headers {
        // Both sides check the same rules: every header converts.
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_str().as_bytes()),
            HeaderValue::from_bytes(value.as_bytes()),
        ) {
            converted.headers_mut().append(name, value);
        }
    }
    converted
}

impl<C: Codec> FromRequest for Session<C> {
    type Error = MissingSession;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(request: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        ready(
            request
                .extensions()
                .get::<Session<C>>()
                .cloned()
                .ok_or(MissingSession),
        )
    }
}

impl ResponseError for MissingSession {
    fn status_code(&self) -> StatusCode {
        StatusCode::INTERNAL_SERVER_ERROR
    }

    fn error_response(&self) -> HttpResponse<BoxBody> {
        actix_response(self.http_response())
    }
}

impl ResponseError for SessionError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.http_response().status().as_u16())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse<BoxBody> {
        actix_response(self.http_response())
    }
}
