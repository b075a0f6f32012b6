//! The axum wiring of the shop: routes, extractors, responses, and serving. The rest
//! is `app.rs`, shared with the actix-web wiring (`actix.rs`).
//!
//! Included by `shop.rs` and by the tests as module `shop_axum`, next to `app` and
//! `options` at the crate root.

use std::future::Future;
use std::net::TcpListener;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::Value;
use tandem::SessionManager;
use tandem::tower::{Session, SessionLayer};

use crate::app::{self, Backend, Context, ShopCodec, ShopError};
use crate::options::Options;

/// The axum shop: its routes are a `Router`.
pub type Shop = app::Shop<Router>;

/// The shop for `options` over `backend`. Needs a tokio runtime.
pub fn build(options: &Options, backend: Backend) -> Result<Shop, String> {
    Shop::build(options, backend, Axum)
}

/// Serves `shop` on `listener` (non-blocking) until `signal`: then flushes pending
/// backups while still serving, stops accepting, lets running requests finish and
/// writes what they left, printing a line at each of the two steps.
pub async fn serve(
    shop: Shop,
    listener: TcpListener,
    signal: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let listener =
        tokio::net::TcpListener::from_std(listener).map_err(|error| error.to_string())?;
    let drain = app::flush_on(signal, Arc::clone(&shop.sessions));
    axum::serve(listener, shop.app)
        .with_graceful_shutdown(drain)
        .await
        .map_err(|error| error.to_string())?;
    app::stopped(&*shop.sessions).await;
    Ok(())
}

struct Axum;

impl app::Wiring for Axum {
    type App = Router;

    fn wire<C: ShopCodec>(
        self,
        manager: SessionManager<C>,
        context: Arc<Context>,
        options: &Options,
    ) -> Result<Router, String> {
        let layer: SessionLayer<C> = app::session_layer(manager, options)?;
        Ok(Router::new()
            .route("/cart", get(show_cart::<C>))
            .route("/cart/items", post(add_item::<C>))
            .route("/prefs", get(show_prefs::<C>).post(set_pref::<C>))
            .route("/login", post(login::<C>))
            .route("/logout", post(logout::<C>))
            .route("/static/{*path}", get(static_file))
            .route("/healthz", get(|| async { app::HEALTHY }))
            .route("/metrics", get(metrics))
            .route("/admin/nodes", get(nodes))
            .layer(layer)
            .with_state(context))
    }
}

impl IntoResponse for ShopError {
    fn into_response(self) -> Response {
        self.response().into_response()
    }
}

type Ctx = State<Arc<Context>>;
type Answer = Result<Json<Value>, ShopError>;

/// The query parameters, a malformed query string being the client's mistake.
fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ShopError> {
    query
        .map(|Query(params)| params)
        .map_err(|rejection| ShopError::bad_query(rejection.body_text()))
}

async fn show_cart<C: ShopCodec>(State(context): Ctx, session: Session<C>) -> Answer {
    app::show_cart(&context, &session).await.map(Json)
}

async fn add_item<C: ShopCodec>(
    State(context): Ctx,
    session: Session<C>,
    params: Result<Query<app::ItemParams>, QueryRejection>,
) -> Answer {
    app::add_item(&context, &session, query(params)?)
        .await
        .map(Json)
}

async fn show_prefs<C: ShopCodec>(session: Session<C>) -> Answer {
    app::show_prefs(&session).await.map(Json)
}

async fn set_pref<C: ShopCodec>(
    session: Session<C>,
    params: Result<Query<app::PrefParams>, QueryRejection>,
) -> Answer {
    app::set_pref(&session, query(params)?).await.map(Json)
}

async fn login<C: ShopCodec>(
    State(context): Ctx,
    session: Session<C>,
    params: Result<Query<app::LoginParams>, QueryRejection>,
) -> Answer {
    app::login(&context, &session, query(params)?)
        .await
        .map(Json)
}

async fn logout<C: ShopCodec>(State(context): Ctx, session: Session<C>) -> Answer {
    app::logout(&context, &session).await.map(Json)
}

async fn static_file(Path(path): Path<String>) -> String {
    app::static_file(&path)
}

async fn nodes(State(context): Ctx) -> Json<Value> {
    Json(app::nodes(&context))
}

async fn metrics(State(context): Ctx) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, app::METRICS_CONTENT_TYPE)],
        app::metrics_text(&context),
    )
}
