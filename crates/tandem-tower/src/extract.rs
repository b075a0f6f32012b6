//! The axum extractor (feature `axum`, on by default).

use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
use axum_core::response::{IntoResponse, Response};
use http::StatusCode;
use http::request::Parts;
use tandem_core::Codec;

use crate::error::{SessionError, text_response};
use crate::session::Session;

/// The rejection of the [`Session`] extractor: the request has no session handle,
/// because no [`SessionLayer`](crate::SessionLayer) with this codec wraps the route, or
/// the layer ignores the request's path. A configuration mistake, so it answers 500;
/// handlers that also serve ignored paths take `Option<Session<C>>` instead.
///
/// ```
/// use tandem_codec::SpeedyCodec;
/// use tandem_tower::Session;
///
/// // Serves `/static/...` (ignored by the layer) and other paths alike.
/// async fn page(session: Option<Session<SpeedyCodec>>) -> String {
///     let user = match &session {
///         Some(session) => session.get::<String>("user").await.ok().flatten(),
///         None => None,
///     };
///     format!("user: {user:?}")
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "no session for this request: the route has no SessionLayer of this codec, or its path is ignored"
)]
pub struct MissingSession;

impl IntoResponse for MissingSession {
    fn into_response(self) -> Response {
        text_response(StatusCode::INTERNAL_SERVER_ERROR, &self.to_string()).into_response()
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
