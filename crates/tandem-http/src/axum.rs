//! The axum extractor and responses (feature `axum`).

use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
use axum_core::response::{IntoResponse, Response};
use http::request::Parts;
use tandem_core::Codec;

use crate::error::{MissingSession, SessionError};
use crate::session::Session;

impl IntoResponse for MissingSession {
    fn into_response(self) -> Response {
        self.http_response().into_response()
    }
}

impl<S: Send + Sync, C: Codec> FromRequestParts<S> for Session<C> {
    type Rejection = MissingSession;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Session<C>>()
            .cloned()
            .ok_or(MissingSession)
    }
}

impl<S: Send + Sync, C: Codec> OptionalFromRequestParts<S> for Session<C> {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Session<C>>().cloned())
    }
}

impl IntoResponse for SessionError {
    fn into_response(self) -> Response {
        self.into_http_response().into_response()
    }
}
