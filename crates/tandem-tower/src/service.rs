//! [`SessionService`], the service [`SessionLayer`](crate::SessionLayer) wraps around an
//! application, and [`ResponseFuture`], its responses.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{HeaderValue, SET_COOKIE};
use http::{Request, Response};
use tandem_core::Codec;
use tandem_http::{CommitResult, CommitStage, CookieHeaders, SessionRequest, SessionSettings};
use tower::Service;

/// The service [`SessionLayer`](crate::SessionLayer) wraps around an inner service: any
/// tower service of `http` requests whose response body can be made from a `String`.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::convert::Infallible;
/// use std::sync::Arc;
/// use http::{header, Request, Response};
/// use tandem_core::{MemoryStore, NodeId};
/// use tandem_manager::SessionManager;
/// use tandem_codec::SpeedyCodec;
/// use tandem_tower::{Session, SessionLayer};
/// use tower::{Layer, ServiceExt};
///
/// let store = Arc::new(MemoryStore::new([NodeId::new("n1").unwrap()]));
/// let manager = SessionManager::<SpeedyCodec>::builder(store).build().unwrap();
/// let service = SessionLayer::new(manager).layer(tower::service_fn(|request: Request<()>| async move {
///     let session = request.extensions().get::<Session<SpeedyCodec>>().unwrap();
///     session.insert("seen", &true).await.unwrap();
///     Ok::<_, Infallible>(Response::new(String::from("hello")))
/// }));
///
/// let response = service.oneshot(Request::new(())).await.unwrap();
/// assert!(response.headers().contains_key(header::SET_COOKIE));
/// # });
/// ```
pub struct SessionService<S, C> {
    inner: S,
    shared: Arc<SessionSettings<C>>,
}

impl<S, C> SessionService<S, C> {
    pub(crate) fn new(inner: S, shared: Arc<SessionSettings<C>>) -> SessionService<S, C> {
        SessionService { inner, shared }
    }
}

impl<S: Clone, C> Clone for SessionService<S, C> {
    fn clone(&self) -> Self {
        SessionService {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: std::fmt::Debug, C> std::fmt::Debug for SessionService<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

pin_project_lite::pin_project! {
    /// The future of [`SessionService`]'s responses: the inner service's response,
    /// then the commit of the request's session (if the handler used it).
    ///
    /// A hand-written state machine rather than a boxed async block: a request whose
    /// handler does not use the session costs no allocation, and one that does
    /// allocates only the (small) commit step.
    pub struct ResponseFuture<F, C, B> {
        #[pin]
        inner: F,
        stage: CommitStage<C, Response<B>>,
    }
}

/// Puts a commit's result on `response`: the cookie, or the failure's response.
fn complete<B: From<String>>(result: CommitResult, mut response: Response<B>) -> Response<B> {
    match result {
        Ok(Some(set_cookie)) => {
            // Checked visible ASCII when written; the text's buffer becomes the value's.
            if let Ok(value) = HeaderValue::try_from(set_cookie) {
                response.headers_mut().append(SET_COOKIE, value);
            }
            response
        }
        Ok(None) => response,
        Err(failed) => failed.map(B::from),
    }
}

impl<F, C, B, E> Future for ResponseFuture<F, C, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    C: Codec,
    B: From<String> + Send + 'static,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let inner = this.inner;
        this.stage
            .poll(cx, |cx| inner.poll(cx))
            .map_ok(|(result, response)| complete(result, response))
    }
}

impl<S, C, ReqBody, ResBody> Service<Request<ReqBody>> for SessionService<S, C>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    C: Codec,
    ReqBody: Send + 'static,
    ResBody: From<String> + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, C, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        // The clone that was polled ready serves this request; the fresh clone stays.
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        if self.shared.ignores(request.uri().path()) {
            return ResponseFuture {
                inner: inner.call(request),
                stage: CommitStage::new(None),
            };
        }
        let request_line = self
            .shared
            .uses_request_line()
            .then(|| (request.method().clone(), request.uri().clone()));
        let session_request = SessionRequest::new(
            &self.shared,
            CookieHeaders::of(request.headers()),
            request_line,
        );
        request.extensions_mut().insert(session_request.session());
        ResponseFuture {
            inner: inner.call(request),
            stage: CommitStage::new(Some(session_request)),
        }
    }
}
