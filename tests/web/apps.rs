//! The suite's handlers, and one app of them served by each integration: the tower
//! layer under axum and the actix-web middleware, both driven in process.
//!
//! The handlers are written once: `Session` and `SessionError` are the same types in
//! both integrations, and both frameworks take them as extractor and error.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::routing::{get, post};
use http::{Request, StatusCode, header};
use tandem::SpeedyCodec;
use tandem::tower::{Session, SessionError, SessionLayer, SessionSettings};
use tandem_actix::SessionMiddleware;
use tandem_http::FromSettings;
use tokio::sync::Barrier;
use tower::ServiceExt;

/// Which integration serves a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Web {
    /// `tandem-tower`'s layer, under axum.
    Tower,
    /// `tandem-actix`'s middleware, under actix-web.
    Actix,
}

pub async fn read_n(session: Session<SpeedyCodec>) -> Result<String, SessionError> {
    Ok(format!("{:?}", session.get::<u32>("n").await?))
}

pub async fn write_n(session: Session<SpeedyCodec>, body: String) -> Result<String, SessionError> {
    let n: u32 = body.parse().unwrap_or(0);
    session.insert("n", &n).await?;
    Ok(format!("{n}"))
}

async fn cycle(session: Session<SpeedyCodec>) -> Result<&'static str, SessionError> {
    session.insert("user", "ann").await?;
    session.cycle_id().await?;
    Ok("cycled")
}

async fn end(session: Session<SpeedyCodec>) -> Result<&'static str, SessionError> {
    session.invalidate().await?;
    Ok("ended")
}

/// Takes the session but never uses it: the handle alone is no work.
async fn untouched(_session: Session<SpeedyCodec>) -> &'static str {
    "untouched"
}

async fn maybe(session: Option<Session<SpeedyCodec>>) -> &'static str {
    match session {
        Some(_) => "session",
        None => "no session",
    }
}

async fn shorten(session: Session<SpeedyCodec>) -> Result<&'static str, SessionError> {
    session
        .load()
        .await?
        .set_max_inactive(Some(Duration::from_secs(60)));
    Ok("shortened")
}

/// Hands the session to a task that still holds it, and changes it, after the handler
/// returned.
async fn spawned(session: Session<SpeedyCodec>) -> Result<&'static str, SessionError> {
    session.insert("n", &1u32).await?;
    let (held, holding) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut guard = session.load().await.unwrap();
        held.send(()).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        guard.insert("n", &7u32).unwrap();
    });
    holding.await.unwrap();
    Ok("spawned")
}

/// Adds the body to `n`; two requests both read before either writes.
async fn add(
    both_read: Arc<Barrier>,
    session: Session<SpeedyCodec>,
    body: String,
) -> Result<&'static str, SessionError> {
    let n = session.get::<u32>("n").await?.unwrap_or(0);
    both_read.wait().await;
    session
        .insert("n", &(n + body.parse::<u32>().unwrap_or(0)))
        .await?;
    Ok("added")
}

/// Loads the session (taking its lock in lock mode), then takes far longer than any
/// client waits: the tests drop the request mid-way.
async fn slow(session: Session<SpeedyCodec>) -> Result<&'static str, SessionError> {
    session.insert("n", &99u32).await?;
    tokio::time::sleep(Duration::from_secs(30)).await;
    Ok("slow")
}

/// Stores 2 MiB: more than the manager's default size limit.
async fn big(session: Session<SpeedyCodec>) -> Result<&'static str, SessionError> {
    session.insert("blob", &vec![7u8; 2 << 20]).await?;
    Ok("stored")
}

/// One response, as the tests look at it.
pub struct Reply {
    pub status: StatusCode,
    pub set_cookie: Vec<String>,
    pub body: String,
}

impl Reply {
    /// The one `Set-Cookie` header.
    pub fn cookie(&self) -> &str {
        assert_eq!(
            self.set_cookie.len(),
            1,
            "Set-Cookie: {:?}",
            self.set_cookie
        );
        &self.set_cookie[0]
    }

    /// The value of the one `Set-Cookie` header.
    pub fn value(&self) -> String {
        let pair = self.cookie().split(';').next().unwrap();
        pair.split_once('=').unwrap().1.to_owned()
    }
}

type ActixCall = Rc<dyn Fn(actix_web::test::TestRequest) -> Pin<Box<dyn Future<Output = Reply>>>>;

/// The suite's routes behind one integration.
pub enum App {
    Tower(axum::Router),
    Actix(ActixCall),
}

/// The app of `web` with `settings` (ignoring nothing unless they say so).
pub async fn app(web: Web, settings: Arc<SessionSettings<SpeedyCodec>>) -> App {
    match web {
        Web::Tower => {
            let both_read = Arc::new(Barrier::new(2));
            let router = axum::Router::new()
                .route("/n", get(read_n).post(write_n))
                .route("/spawned", post(spawned))
                .route("/locked/n", get(read_n))
                .route("/cycle", post(cycle))
                .route("/end", post(end))
                .route("/untouched", get(untouched))
                .route("/static/{*path}", get(maybe))
                .route("/maybe", get(maybe))
                .route("/shorten", post(shorten))
                .route(
                    "/add",
                    post(move |session, body| add(Arc::clone(&both_read), session, body)),
                )
                .route("/big", post(big))
                .route("/slow", post(slow))
                .route("/assets/{*path}", get(read_n))
                .layer(SessionLayer::from_settings(settings));
            App::Tower(router)
        }
        Web::Actix => {
            use actix_web::web::{get, post};
            let both_read = Arc::new(Barrier::new(2));
            let service = actix_web::test::init_service(
                actix_web::App::new()
                    .wrap(SessionMiddleware::from_settings(settings))
                    .route("/n", get().to(read_n))
                    .route("/n", post().to(write_n))
                    .route("/spawned", post().to(spawned))
                    .route("/locked/n", get().to(read_n))
                    .route("/cycle", post().to(cycle))
                    .route("/end", post().to(end))
                    .route("/untouched", get().to(untouched))
                    .route("/static/{path:.*}", get().to(maybe))
                    .route("/maybe", get().to(maybe))
                    .route("/shorten", post().to(shorten))
                    .route(
                        "/add",
                        post().to(move |session, body| add(Arc::clone(&both_read), session, body)),
                    )
                    .route("/big", post().to(big))
                    .route("/slow", post().to(slow))
                    .route("/assets/{path:.*}", get().to(read_n)),
            )
            .await;
            let service = Rc::new(service);
            App::Actix(Rc::new(move |request: actix_web::test::TestRequest| {
                let service = Rc::clone(&service);
                Box::pin(async move {
                    let response =
                        actix_web::test::call_service(&*service, request.to_request()).await;
                    let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
                    let set_cookie = response
                        .headers()
                        .get_all(actix_web::http::header::SET_COOKIE)
                        .map(|value| value.to_str().unwrap().to_owned())
                        .collect();
                    let body = actix_web::test::read_body(response).await;
                    Reply {
                        status,
                        set_cookie,
                        body: String::from_utf8(body.to_vec()).unwrap(),
                    }
                })
            }))
        }
    }
}

impl App {
    /// Sends a request with this `Cookie` header (if any).
    pub async fn send(&self, method: &str, uri: &str, cookie: Option<String>, body: &str) -> Reply {
        match self {
            App::Tower(router) => {
                let mut request = Request::builder().method(method).uri(uri);
                if let Some(cookie) = cookie {
                    request = request.header(header::COOKIE, cookie);
                }
                let response = router
                    .clone()
                    .oneshot(request.body(Body::from(body.to_owned())).unwrap())
                    .await
                    .unwrap();
                let set_cookie = response
                    .headers()
                    .get_all(header::SET_COOKIE)
                    .iter()
                    .map(|value| value.to_str().unwrap().to_owned())
                    .collect();
                let status = response.status();
                let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
                    .await
                    .unwrap();
                Reply {
                    status,
                    set_cookie,
                    body: String::from_utf8(bytes.to_vec()).unwrap(),
                }
            }
            App::Actix(call) => {
                let method = actix_web::http::Method::from_bytes(method.as_bytes()).unwrap();
                let mut request = actix_web::test::TestRequest::default()
                    .method(method)
                    .uri(uri)
                    .set_payload(body.to_owned());
                if let Some(cookie) = cookie {
                    request = request.insert_header((actix_web::http::header::COOKIE, cookie));
                }
                call(request).await
            }
        }
    }
}
