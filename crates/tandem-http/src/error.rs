//! What an integration answers when the session cannot be loaded or committed, and
//! the errors handlers see.

use std::fmt;
use std::sync::Arc;

use http::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};
use tandem_core::AttributeError;
use tandem_manager::{CommitError, LoadError};

/// A session operation that failed for reasons of the session store or of concurrent
/// requests, not of the handler: what [`SettingsBuilder::error_response`](crate::SettingsBuilder::error_response)
/// turns into a response.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure {
    /// Loading the session failed (the first use of the session in a handler).
    Load(LoadError),
    /// Committing the session after the handler failed; the handler's response is
    /// replaced, since the changes it reports were not applied.
    Commit(CommitError),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Load(error) => write!(f, "session load failed: {error}"),
            Failure::Commit(error) => write!(f, "session commit failed: {error}"),
        }
    }
}

/// Turns a [`Failure`] into a response.
pub(crate) type Responder = Arc<dyn Fn(&Failure) -> Response<String> + Send + Sync>;

/// The default answer to each [`Failure`], as plain text:
///
/// | failure | status |
/// |---|---|
/// | `Commit(Conflict)`: another request changed the same attribute | 409 Conflict |
/// | `Commit(RetriesExhausted)`: the session kept changing under the commit | 409 Conflict |
/// | `Commit(SessionEnded)`: the session ended while the request used it (another request invalidated it or gave it a new id) | 409 Conflict |
/// | `Commit(TooLarge)`: the session grew past the size limit | 413 Content Too Large |
/// | `Commit(Unavailable)`: no node could take a non-sticky write | 503 Service Unavailable |
/// | `Load(Unavailable)`: no node holding the session could be reached | 503 Service Unavailable |
/// | `Load(LockTimeout)`: the session's lock stayed taken | 503 Service Unavailable |
/// | `Commit(LockTimeout)`: earlier commits of the session held it too long | 503 Service Unavailable |
/// | `Commit(Encoding)`: a stored-bytes layer failed, and any other failure | 500 Internal Server Error |
///
/// The 503s carry `Retry-After: 1`. The bodies say what happened without internals
/// (no node addresses, no attribute names).
///
/// ```
/// use http::StatusCode;
/// use tandem_manager::CommitError;
/// use tandem_http::{default_error_response, Failure};
///
/// let conflict = Failure::Commit(CommitError::Conflict { attributes: vec!["cart".into()] });
/// assert_eq!(default_error_response(&conflict).status(), StatusCode::CONFLICT);
/// ```
pub fn default_error_response(failure: &Failure) -> Response<String> {
    let (status, message) = match failure {
        Failure::Commit(CommitError::Conflict { .. } | CommitError::RetriesExhausted { .. }) => (
            StatusCode::CONFLICT,
            "the session was changed by a concurrent request; try again",
        ),
        Failure::Commit(CommitError::SessionEnded) => (
            StatusCode::CONFLICT,
            "the session was ended by a concurrent request",
        ),
        Failure::Commit(CommitError::LockTimeout { .. }) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the session is busy with other requests; try again",
        ),
        Failure::Commit(CommitError::TooLarge { .. }) => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "the session would grow too large",
        ),
        Failure::Load(LoadError::LockTimeout { .. }) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the session is busy with another request; try again",
        ),
        Failure::Commit(CommitError::Unavailable { .. })
        | Failure::Load(LoadError::Unavailable) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "session storage is unavailable; try again",
        ),
        // `Encoding` (a stored-bytes layer failed) and kinds added later: the
        // server's fault.
        Failure::Commit(_) | Failure::Load(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "the session could not be saved",
        ),
    };
    let mut response = text_response(status, message);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

pub(crate) fn text_response(status: StatusCode, message: &str) -> Response<String> {
    let mut response = Response::new(format!("{message}\n"));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Why a [`Session`](crate::Session) operation failed.
///
/// It converts into a response ([`SessionError::into_http_response`]; axum's
/// `IntoResponse` with the `axum` feature, actix-web's `ResponseError` with the
/// `actix-web` feature), so a handler can use `?`: a load failure gets the configured
/// answer (503 by default), the other kinds 500, since they are the application's own
/// faults.
///
/// ```
/// use tandem_http::{Session, SessionError, SessionErrorKind};
/// # use tandem_core::{Codec, CodecId, Decodes, Encodes, CodecError};
/// # struct Text;
/// # impl Codec for Text { const ID: CodecId = CodecId::new(250); const NAME: &'static str = "text"; }
/// # impl Decodes<String> for Text { fn decode(b: &[u8]) -> Result<String, CodecError> { String::from_utf8(b.to_vec()).map_err(|e| CodecError::decode(Self::ID, e)) } }
///
/// async fn user(session: &Session<Text>) -> Result<Option<String>, SessionError> {
///     match session.get::<String>("user").await {
///         // A value this release cannot decode: treat it as absent.
///         Err(error) if matches!(error.kind(), SessionErrorKind::Attribute(_)) => Ok(None),
///         other => other,
///     }
/// }
/// ```
pub struct SessionError {
    kind: SessionErrorKind,
    responder: Option<Responder>,
}

/// What went wrong in a [`SessionError`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionErrorKind {
    /// The session could not be loaded; every later use in the same request reports
    /// the same error.
    Load(LoadError),
    /// An attribute could not be encoded or decoded, or its name is invalid. Other
    /// attributes are unaffected.
    Attribute(AttributeError),
    /// The session was used after its request's response was produced (for example by
    /// a task the handler spawned); the request's session is committed by then.
    Ended,
}

impl SessionError {
    pub(crate) fn new(kind: SessionErrorKind, responder: Option<Responder>) -> SessionError {
        SessionError { kind, responder }
    }

    /// What went wrong.
    pub fn kind(&self) -> &SessionErrorKind {
        &self.kind
    }

    /// The response for this error: the configured answer to a load failure, 500
    /// Internal Server Error otherwise.
    pub fn into_http_response(self) -> Response<String> {
        self.http_response()
    }

    /// [`into_http_response`](Self::into_http_response) without consuming the error.
    pub fn http_response(&self) -> Response<String> {
        match &self.kind {
            SessionErrorKind::Load(error) => {
                let failure = Failure::Load(error.clone());
                match &self.responder {
                    Some(responder) => responder(&failure),
                    None => default_error_response(&failure),
                }
            }
            SessionErrorKind::Attribute(_) => text_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "a session attribute could not be read or written",
            ),
            SessionErrorKind::Ended => text_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the session was used after its request ended",
            ),
        }
    }
}

impl fmt::Debug for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionError")
            .field("kind", &self.kind)
            .finish()
    }
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            SessionErrorKind::Load(error) => write!(f, "session load failed: {error}"),
            SessionErrorKind::Attribute(error) => write!(f, "session attribute: {error}"),
            SessionErrorKind::Ended => f.write_str("the session was used after its request ended"),
        }
    }
}

impl std::error::Error for SessionError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            SessionErrorKind::Load(error) => Some(error),
            SessionErrorKind::Attribute(error) => Some(error),
            SessionErrorKind::Ended => None,
        }
    }
}

/// The rejection of the `Session` extractor (axum and actix-web): the request has no
/// session handle, because no session layer or middleware with this codec wraps the
/// route, or it ignores the request's path. A configuration mistake, so it answers
/// 500; handlers that also serve ignored paths take `Option<Session<C>>` instead.
///
/// ```
/// use tandem_codec::SpeedyCodec;
/// use tandem_http::Session;
///
/// // Serves `/static/...` (ignored) and other paths alike.
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
    "no session for this request: the route has no session layer or middleware of this codec, or its path is ignored"
)]
pub struct MissingSession;

impl MissingSession {
    /// The response: 500 Internal Server Error, as plain text.
    pub fn http_response(&self) -> Response<String> {
        text_response(StatusCode::INTERNAL_SERVER_ERROR, &self.to_string())
    }
}

impl From<AttributeError> for SessionError {
    fn from(error: AttributeError) -> SessionError {
        SessionError::new(SessionErrorKind::Attribute(error), None)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use tandem_core::{LayerError, NodeId, StoreError};
    use tandem_manager::WriteFailure;

    #[test]
    fn default_statuses() {
        let cases = [
            (
                Failure::Commit(CommitError::Conflict { attributes: vec![] }),
                409,
            ),
            (
                Failure::Commit(CommitError::RetriesExhausted { attempts: 8 }),
                409,
            ),
            (Failure::Commit(CommitError::SessionEnded), 409),
            (
                Failure::Commit(CommitError::LockTimeout {
                    waited: Duration::from_secs(5),
                }),
                503,
            ),
            (
                Failure::Commit(CommitError::TooLarge { size: 2, limit: 1 }),
                413,
            ),
            (
                Failure::Commit(CommitError::Unavailable {
                    source: WriteFailure::NoNode,
                }),
                503,
            ),
            (Failure::Load(LoadError::Unavailable), 503),
            (
                Failure::Commit(CommitError::Encoding {
                    source: LayerError::Seal {
                        layer: "aes-256-gcm",
                        reason: "key missing".into(),
                    },
                }),
                500,
            ),
            (
                Failure::Load(LoadError::LockTimeout {
                    waited: Duration::from_secs(1),
                }),
                503,
            ),
        ];
        for (failure, status) in cases {
            let response = default_error_response(&failure);
            assert_eq!(response.status().as_u16(), status, "{failure}");
            assert_eq!(
                response.headers().contains_key(RETRY_AFTER),
                status == 503,
                "{failure}"
            );
        }
    }

    #[test]
    fn bodies_leak_no_internals() {
        let failure = Failure::Commit(CommitError::Unavailable {
            source: WriteFailure::Store(StoreError::Unreachable {
                node: NodeId::new("n1").unwrap(),
                message: "10.0.0.5:11211 timed out".into(),
            }),
        });
        let body = default_error_response(&failure).into_body();
        assert!(!body.contains("10.0.0.5"), "{body}");
    }

    #[test]
    fn session_errors_use_the_configured_responder() {
        let responder: Responder =
            Arc::new(|_: &Failure| text_response(StatusCode::IM_A_TEAPOT, "teapot"));
        let error = SessionError::new(
            SessionErrorKind::Load(LoadError::Unavailable),
            Some(responder),
        );
        assert_eq!(error.into_http_response().status(), StatusCode::IM_A_TEAPOT);
        let ended = SessionError::new(SessionErrorKind::Ended, None);
        assert_eq!(
            ended.into_http_response().status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
