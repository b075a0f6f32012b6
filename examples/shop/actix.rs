//! The actix-web wiring of the shop: routes, extractors, responses, and serving. The
//! rest is `app.rs`, shared with the axum wiring (`axum.rs`).
//!
//! Included by `shop-actix.rs` and by the tests as module `shop_actix`, next to `app`
//! and `options` at the crate root.

use std::future::Future;
use std::io;
use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::http::StatusCode;
use actix_web::{App, HttpResponse, HttpServer, ResponseError, web};
use serde_json::Value;
use tandem::SessionManager;
use tandem_actix::{Session, SessionMiddleware, actix_response};

use crate::app::{self, Backend, Context, ShopCodec, ShopError};
use crate::options::Options;

/// Starts the actix-web server of a shop on a listener: what `HttpServer` needs (an
/// app factory per worker) is generic over the codec, so the wiring keeps it inside.
pub type Start = Box<dyn FnOnce(TcpListener) -> io::Result<Server> + Send>;

/// The actix-web shop: its routes come as the server that serves them.
pub type Shop = app::Shop<Start>;

/// The shop for `options` over `backend`. Needs a tokio runtime.
pub fn build(options: &Options, backend: Backend) -> Result<Shop, String> {
    Shop::build(options, backend, Actix)
}

/// Serves `shop` on `listener` (non-blocking) until `signal`: then flushes pending
/// backups while still serving, stops accepting, lets running requests finish and
/// writes what they left, printing a line at each of the two steps.
///
/// actix-web's own signal handlers are off: the shop's `signal` decides. Its workers
/// are threads with runtimes of their own; the manager's background work stays on the
/// caller's runtime.
pub async fn serve(
    shop: Shop,
    listener: TcpListener,
    signal: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let server = (shop.app)(listener).map_err(|error| error.to_string())?;
    let handle = server.handle();
    let drain = app::flush_on(signal, Arc::clone(&shop.sessions));
    let stop = async move {
        drain.await;
        // Graceful: running requests finish.
        handle.stop(true).await;
    };
    let mut server = std::pin::pin!(server);
    tokio::select! {
        result = &mut server => result,
        () = stop => server.await,
    }
    .map_err(|error| error.to_string())?;
    app::stopped(&*shop.sessions).await;
    Ok(())
}

struct Actix;

impl app::Wiring for Actix {
    type App = Start;

    fn wire<C: ShopCodec>(
        self,
        manager: SessionManager<C>,
        context: Arc<Context>,
        options: &Options,
    ) -> Result<Start, String> {
        let sessions: SessionMiddleware<C> = app::session_layer(manager, options)?;
        let factory = move || {
            // Resources rather than `App::route`, so that a known path with another
            // method answers 405, as axum's router does.
            App::new()
                .app_data(web::Data::from(Arc::clone(&context)))
                .wrap(sessions.clone())
                .service(web::resource("/cart").get(show_cart::<C>))
                .service(web::resource("/cart/items").post(add_item::<C>))
                .service(
                    web::resource("/prefs")
                        .get(show_prefs::<C>)
                        .post(set_pref::<C>),
                )
                .service(web::resource("/login").post(login::<C>))
                .service(web::resource("/logout").post(logout::<C>))
                .service(web::resource("/static/{path:.+}").get(static_file))
                .service(web::resource("/healthz").get(|| async { app::HEALTHY }))
                .service(web::resource("/metrics").get(metrics))
                .service(web::resource("/admin/nodes").get(nodes))
        };
        Ok(Box::new(move |listener| {
            Ok(HttpServer::new(factory)
                .disable_signals()
                .listen(listener)?
                .run())
        }))
    }
}

impl ResponseError for ShopError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.response().status().as_u16())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        actix_response(self.response())
    }
}

type Ctx = web::Data<Context>;
type Answer = Result<web::Json<Value>, ShopError>;
type Params<T> = Result<web::Query<T>, actix_web::Error>;

/// The query parameters, a malformed query string being the client's mistake.
fn query<T>(query: Params<T>) -> Result<T, ShopError> {
    query
        .map(web::Query::into_inner)
        .map_err(ShopError::bad_query)
}

async fn show_cart<C: ShopCodec>(context: Ctx, session: Session<C>) -> Answer {
    app::show_cart(&context, &session).await.map(web::Json)
}

async fn add_item<C: ShopCodec>(
    context: Ctx,
    session: Session<C>,
    params: Params<app::ItemParams>,
) -> Answer {
    app::add_item(&context, &session, query(params)?)
        .await
        .map(web::Json)
}

async fn show_prefs<C: ShopCodec>(session: Session<C>) -> Answer {
    app::show_prefs(&session).await.map(web::Json)
}

async fn set_pref<C: ShopCodec>(session: Session<C>, params: Params<app::PrefParams>) -> Answer {
    app::set_pref(&session, query(params)?).await.map(web::Json)
}

async fn login<C: ShopCodec>(
    context: Ctx,
    session: Session<C>,
    params: Params<app::LoginParams>,
) -> Answer {
    app::login(&context, &session, query(params)?)
        .await
        .map(web::Json)
}

async fn logout<C: ShopCodec>(context: Ctx, session: Session<C>) -> Answer {
    app::logout(&context, &session).await.map(web::Json)
}

async fn static_file(path: web::Path<String>) -> String {
    app::static_file(&path)
}

async fn nodes(context: Ctx) -> web::Json<Value> {
    web::Json(app::nodes(&context))
}

async fn metrics(context: Ctx) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(app::METRICS_CONTENT_TYPE)
        .body(app::metrics_text(&context))
}
