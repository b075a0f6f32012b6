//! The actix-web app (`bench-http-app serve --framework actix`): the handlers of
//! [`crate::handlers`], the routes of the axum app, served without sessions, with
//! Tandem (`tandem-actix`, sticky or non-sticky, set up as the axum app sets it up)
//! and with actix-session over its `RedisSessionStore` or its `CookieSessionStore`.
//!
//! Every variant runs `--workers` actix-web workers (each a single-threaded runtime of
//! its own); the tokio runtime that starts the server keeps Tandem's background
//! writer and the Redis store's connection task.

use std::convert::Infallible;
use std::future::{Future, Ready, ready};

use actix_session::storage::{CookieSessionStore, RedisSessionStore, SessionStore};
use actix_web::cookie::Key;
use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::http::header::SET_COOKIE;
use actix_web::{FromRequest, HttpRequest, HttpResponse, HttpServer, ResponseError, web};
use tandem_codec::SpeedyCodec;
use tandem_manager::SessionManager;

use crate::app::{AppOptions, Framework, Variant, check_variant, redis_url, tandem_manager};
use crate::cart::{CART, COUNTER, Cart};
use crate::handlers::{Action, Failed, NoSession, SessionAccess, act, tandem_stats};

/// actix-session's key for its cookies (signing and encryption): fixed, so that a
/// run's cookies mean the same to every worker.
const ACTIX_SESSION_KEY: [u8; 64] = [0x5a; 64];

/// Seconds a stopping server waits for open connections (actix-web's default, 30,
/// would hold the script up).
const SHUTDOWN_TIMEOUT_SECS: u64 = 1;

/// Starts `HttpServer::new($factory)` on `$listen` with `$workers` workers and runs it
/// until it stops. A macro: the factory's `App` type differs per variant, and
/// `HttpServer`'s bounds are long to repeat over a generic one.
macro_rules! run_server {
    ($options:expr, $listen:expr, $workers:expr, $factory:expr) => {{
        let server = HttpServer::new($factory)
            .workers($workers)
            .shutdown_timeout(SHUTDOWN_TIMEOUT_SECS)
            .bind($listen)
            .map_err(|error| format!("cannot listen on {}: {error}", $listen))?;
        for address in server.addrs() {
            println!(
                "bench-http-app {} (actix-web, {} workers) listening on {address}",
                $options.variant, $workers
            );
        }
        server.run().await.map_err(|error| error.to_string())
    }};
}

/// Serves `options.variant` on actix-web at `listen` with `workers` workers until the
/// server stops (SIGTERM or SIGINT). Needs a tokio runtime.
pub async fn serve(options: &AppOptions, listen: &str, workers: usize) -> Result<(), String> {
    check_variant(options, Framework::Actix)?;
    if let Some(manager) = tandem_manager(options).await? {
        let sessions = tandem_actix::SessionMiddleware::builder(manager.clone())
            .secure(false)
            .build()
            .map_err(|error| error.to_string())?;
        let manager = web::Data::new(manager);
        return run_server!(options, listen, workers, move || {
            actix_web::App::new()
                .wrap(sessions.clone())
                .app_data(manager.clone())
                .configure(routes::<tandem_actix::Session<SpeedyCodec>>)
                .route(
                    "/admin/stats",
                    web::get().to(
                        |manager: web::Data<SessionManager<SpeedyCodec>>| async move {
                            tandem_stats(&manager)
                        },
                    ),
                )
        });
    }
    match options.variant {
        Variant::ActixSessionRedis => {
            let store = RedisSessionStore::new(redis_url(options)?)
                .await
                .map_err(|error| format!("redis: {error}"))?;
            serve_actix_session(options, listen, workers, move || store.clone()).await
        }
        Variant::ActixSessionCookie => {
            serve_actix_session(options, listen, workers, CookieSessionStore::default).await
        }
        _ => run_server!(options, listen, workers, || {
            actix_web::App::new().configure(routes::<NoSession>)
        }),
    }
}

/// Serves the routes with actix-session over the store `new_store` makes (one per
/// worker, as actix-session's middleware is per worker), with its default settings but
/// for plain-HTTP cookies, as the other variants.
async fn serve_actix_session<S, F>(
    options: &AppOptions,
    listen: &str,
    workers: usize,
    new_store: F,
) -> Result<(), String>
where
    S: SessionStore + 'static,
    F: Fn() -> S + Send + Clone + 'static,
{
    let key = Key::from(&ACTIX_SESSION_KEY);
    run_server!(options, listen, workers, move || {
        actix_web::App::new()
            .wrap(
                actix_session::SessionMiddleware::builder(new_store(), key.clone())
                    .cookie_secure(false)
                    .build(),
            )
            .configure(routes::<actix_session::Session>)
            .route("/admin/stats", web::get().to(|| async { "{}\n" }))
    })
}

/// The routes every variant serves (those of the axum app), over its session handle
/// `A`.
fn routes<A>(config: &mut web::ServiceConfig)
where
    A: SessionAccess<Failure: ResponseError + 'static> + FromRequest + 'static,
{
    config
        .service(
            web::resource("/cart")
                .route(web::get().to(|session: A| respond(Action::ShowCart, session)))
                .route(web::post().to(|session: A| respond(Action::BumpCart, session))),
        )
        .route(
            "/session",
            web::post().to(|session: A| respond(Action::Create, session)),
        )
        .service(
            web::resource("/counter")
                .route(web::get().to(|session: A| respond(Action::ShowCounter, session)))
                .route(web::post().to(|session: A| respond(Action::Increment, session))),
        )
        .route("/healthz", web::get().to(|| async { "ok\n" }));
}

/// Runs a handler and makes its answer an actix-web response.
async fn respond<A>(action: Action, session: A) -> HttpResponse
where
    A: SessionAccess<Failure: ResponseError>,
{
    match act(action, &session).await {
        Ok(reply) => {
            let mut response = HttpResponse::build(if reply.found {
                StatusCode::OK
            } else {
                StatusCode::NOT_FOUND
            });
            if let Some(cookie) = reply.set_cookie {
                response.insert_header((SET_COOKIE, cookie));
            }
            response.body(reply.body)
        }
        Err(failure) => failure.error_response(),
    }
}

impl ResponseError for Failed {}

impl FromRequest for NoSession {
    type Error = Infallible;
    type Future = Ready<Result<NoSession, Infallible>>;

    fn from_request(_request: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        ready(Ok(NoSession::extract()))
    }
}

/// actix-session's session: synchronous (its state was loaded by its middleware
/// before the handler, and is saved after it), and reference-counted, so each
/// operation runs before its future is returned.
impl SessionAccess for actix_session::Session {
    type Failure = Failed;

    fn cart(&self) -> impl Future<Output = Result<Option<Cart>, Failed>> + Send {
        ready(self.get::<Cart>(CART).map_err(Failed::of))
    }

    fn set_cart(&self, cart: &Cart) -> impl Future<Output = Result<(), Failed>> + Send {
        ready(self.insert(CART, cart).map_err(Failed::of))
    }

    fn counter(&self) -> impl Future<Output = Result<Option<u64>, Failed>> + Send {
        ready(self.get::<u64>(COUNTER).map_err(Failed::of))
    }

    fn set_counter(&self, value: u64) -> impl Future<Output = Result<(), Failed>> + Send {
        ready(self.insert(COUNTER, value).map_err(Failed::of))
    }
}
