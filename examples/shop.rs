//! A small shop on axum with Tandem sessions: a cart, preferences, login and logout.
//!
//! ```sh
//! cargo run --release --example shop                      # in-process store, port 8080
//! cargo run --release --example shop -- --memcached n1:127.0.0.1:11211,n2:127.0.0.1:11212 --route a1
//! cargo run --release --example shop -- --redis r1=redis://127.0.0.1:6379 --mode non-sticky
//! cargo run --release --example shop -- --redis redis+cluster://127.0.0.1:7000,127.0.0.1:7001 --wait-replicas 1
//! curl -si -X POST 'localhost:8080/cart/items?sku=apple&qty=2'
//! ```
//!
//! Options (all optional):
//!
//! ```text
//! --listen ADDR                  default 127.0.0.1:8080
//! --mode sticky|non-sticky       default sticky
//! --memcached NODESPEC           n1:host:port,n2:host:port (absent: in-process store)
//! --redis SPEC                   Redis or Valkey instead: r1=redis://[user:pass@]host:port[/db],...
//!                                or one URL (rediss:// for TLS; valkey:// and valkeys:// too).
//!                                A Sentinel group or a Cluster is one node:
//!                                redis+sentinel://[user:pass@]host:port[,host:port...]/SERVICE[/db]
//!                                redis+cluster://host:port[,host:port...]
//!                                (rediss+ and valkey+ forms too)
//! --tls-ca FILE                  the CA that verifies the remote tier's certificate (rediss://)
//! --wait-replicas N              Redis only, the durable setting: each write waits until N
//!                                replicas acknowledged it (WAIT), for at most 500 ms; one
//!                                not acknowledged in time fails (a non-sticky update
//!                                answers 503, a sync backup counts as failed). Absent or
//!                                0: writes do not wait
//! --failover-nodes IDS           node ids used only while every other node is down
//! --route NAME                   this server's route, for sticky load balancing
//! --codec speedy|json|msgpack    how new values are written (default speedy); sessions
//!                                written with any of the three are read
//! --concurrency none|lock|merge  default merge
//! --max-inactive SECS            default 1800; 0 = sessions never expire
//! --backup async|sync            default async
//! --secure-cookie                mark the cookie Secure (off: this serves plain HTTP)
//! ```
//!
//! HTTP:
//!
//! ```text
//! GET  /cart                     {"session", "items", "user", "served_by"}; creates no session
//! POST /cart/items?sku=S&qty=N   adds N (may be negative) to S in the `cart` attribute
//! GET  /prefs                    {"prefs": {..}}
//! POST /prefs?key=K&value=V      stores V in attribute `pref.K`
//! POST /login?user=U             sets the user and gives the session a new id
//! POST /logout                   ends the session, clears the cookie
//! GET  /static/<path>            text, never a session
//! GET  /healthz                  ok
//! GET  /metrics                  Prometheus text, names prefixed tandem_
//! GET  /admin/nodes              {"nodes": [{"id", "address", "up", "failover", "operations",
//!                                 "failures", "down_transitions", "mean_latency_micros",
//!                                 "connection_waits", "last_error"}]}
//! ```
//!
//! SIGTERM or SIGINT stops accepting requests, lets running ones finish and flushes
//! pending backups before the process exits.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use serde::Deserialize;
use serde_json::{Value, json};
use tandem::memcached::{MemcachedConfig, MemcachedStore};
use tandem::redis::{RedisConfig, RedisSpec, RedisStore};
use tandem::tower::{Session, SessionError, SessionLayer};
use tandem::{
    BackupMode, Codec, MemoryStore, NodeId, NodeSpec, RemoteStore, Route, SessionManager,
    manager::{ShutdownReport, Stats},
    model::{Decodes, Encodes, MAX_ATTRIBUTE_NAME_LEN, NodeStatus},
};
use tandem_codec::{JsonCodec, Migrating, MsgpackCodec, SpeedyCodec};

// The command line, in a file of its own (under examples/shop/, which holds no
// main.rs and so is no example of its own).
#[path = "shop/options.rs"]
mod options;
pub use options::{CodecChoice, Options, USAGE, WAIT_TIMEOUT};

/// How long a shutdown may spend flushing backups.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);
/// How long a synchronous backup may hold a response (`--backup sync`).
const SYNC_BACKUP_TIMEOUT: Duration = Duration::from_secs(1);
/// Paths that never touch sessions.
const STATIC_PATHS: &str = "^/static/";

const MAX_SKU_LEN: usize = 128;
const MAX_USER_LEN: usize = 256;
const MAX_PREF_VALUE_LEN: usize = 4096;
const PREF_PREFIX: &str = "pref.";

/// The cart attribute: quantity per SKU. Written by whichever codec `--codec` names,
/// so it is both speedy- and serde-serializable.
type Cart = BTreeMap<String, i64>;

/// Each `--codec` writes with its own codec and reads the other two, so servers with
/// different `--codec` share sessions.
type WriteSpeedy = Migrating<SpeedyCodec, (JsonCodec, MsgpackCodec)>;
type WriteJson = Migrating<JsonCodec, (SpeedyCodec, MsgpackCodec)>;
type WriteMsgpack = Migrating<MsgpackCodec, (SpeedyCodec, JsonCodec)>;

/// The remote tier.
#[derive(Clone)]
pub enum Backend {
    /// The in-process store: the example runs without memcached.
    Memory(Arc<MemoryStore>),
    /// memcached nodes.
    Memcached(Arc<MemcachedStore>),
    /// Redis or Valkey servers.
    Redis(Arc<RedisStore>),
}

impl Backend {
    /// The store the options name.
    pub async fn connect(options: &Options) -> Result<Backend, String> {
        if let Some(text) = &options.redis {
            let spec = RedisSpec::parse(text).map_err(|error| format!("--redis: {error}"))?;
            let mut config = RedisConfig::default();
            if let Some(ca) = &options.tls_ca {
                config = config.with_ca_file(ca);
            }
            if let Some(replicas) = options.wait_replicas {
                // Unreplicated::Fail, the default: an unacknowledged write fails.
                config = config.with_wait_replicas(replicas, WAIT_TIMEOUT);
            }
            // A wrong password or an untrusted certificate ends the process here, with
            // the error's one line (naming the node, never the password).
            let store = RedisStore::connect(&spec, config)
                .await
                .map_err(|error| format!("redis: {error}"))?;
            return Ok(Backend::Redis(Arc::new(store)));
        }
        let Some(text) = &options.memcached else {
            let spec = NodeSpec::parse("n1:in-process:1").map_err(|error| error.to_string())?;
            return Ok(Backend::Memory(Arc::new(MemoryStore::new(spec.ids()))));
        };
        let spec = NodeSpec::parse(text).map_err(|error| format!("--memcached: {error}"))?;
        let store = MemcachedStore::connect(&spec, MemcachedConfig::default())
            .await
            .map_err(|error| format!("memcached: {error}"))?;
        Ok(Backend::Memcached(Arc::new(store)))
    }

    fn store(&self) -> Arc<dyn RemoteStore> {
        match self {
            Backend::Memory(store) => Arc::clone(store) as Arc<dyn RemoteStore>,
            Backend::Memcached(store) => Arc::clone(store) as Arc<dyn RemoteStore>,
            Backend::Redis(store) => Arc::clone(store) as Arc<dyn RemoteStore>,
        }
    }
}

/// What the process needs of its manager beyond the routes.
pub trait Sessions: Send + Sync {
    /// The manager's counters.
    fn stats(&self) -> Stats;
    /// Publishes the metrics now.
    fn export_metrics(&self);
    /// The remote nodes and whether each is a failover node.
    fn nodes(&self) -> Vec<(NodeStatus, bool)>;
    /// Sessions held in the local tier.
    fn local_sessions(&self) -> u64;
    /// Background writes not finished yet.
    fn pending_backups(&self) -> usize;
    /// Writes what is pending, within `deadline`.
    fn shutdown(
        &self,
        deadline: Duration,
    ) -> Pin<Box<dyn Future<Output = ShutdownReport> + Send + '_>>;
}

impl<C: Codec> Sessions for SessionManager<C> {
    fn stats(&self) -> Stats {
        SessionManager::stats(self)
    }

    fn export_metrics(&self) {
        SessionManager::export_metrics(self)
    }

    fn nodes(&self) -> Vec<(NodeStatus, bool)> {
        SessionManager::nodes(self)
    }

    fn local_sessions(&self) -> u64 {
        SessionManager::local_sessions(self)
    }

    fn pending_backups(&self) -> usize {
        SessionManager::pending_backups(self)
    }

    fn shutdown(
        &self,
        deadline: Duration,
    ) -> Pin<Box<dyn Future<Output = ShutdownReport> + Send + '_>> {
        Box::pin(SessionManager::shutdown(self, deadline))
    }
}

/// The shop's metrics: a Prometheus recorder of its own, which the `metrics`
/// facade writes into.
///
/// The manager publishes its counters and gauges into whatever recorder is current
/// when it exports; `/metrics` makes this one current for that call, so several shops
/// in one process (the tests) each render their own. The shop binary also installs it
/// as the process's global recorder, which is where the manager's histograms and its
/// periodic exports go.
pub struct Metrics {
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
}

impl Metrics {
    fn new() -> Metrics {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        Metrics {
            recorder: Arc::new(recorder),
            handle,
        }
    }

    /// Makes this the process's recorder (once per process).
    pub fn install(&self) -> Result<(), String> {
        metrics::set_global_recorder(Arc::clone(&self.recorder))
            .map_err(|error| format!("cannot install the metrics recorder: {error}"))
    }

    /// The Prometheus text exposition, with the manager's totals published just now.
    pub fn render(&self, sessions: &dyn Sessions) -> String {
        metrics::with_local_recorder(&*self.recorder, || sessions.export_metrics());
        self.handle.render()
    }
}

/// A shop ready to serve.
pub struct Shop {
    /// The routes, behind the session layer.
    pub router: Router,
    /// The manager, for the admin routes and shutdown.
    pub sessions: Arc<dyn Sessions>,
    /// The Prometheus exporter.
    pub metrics: Arc<Metrics>,
}

impl Shop {
    /// The shop for `options` over `backend`. Needs a tokio runtime.
    pub fn build(options: &Options, backend: Backend) -> Result<Shop, String> {
        match options.codec {
            CodecChoice::Speedy => Shop::with_codec::<WriteSpeedy>(options, backend),
            CodecChoice::Json => Shop::with_codec::<WriteJson>(options, backend),
            CodecChoice::Msgpack => Shop::with_codec::<WriteMsgpack>(options, backend),
        }
    }

    fn with_codec<C>(options: &Options, backend: Backend) -> Result<Shop, String>
    where
        C: Codec + Encodes<Cart> + Decodes<Cart> + Encodes<str> + Decodes<String>,
    {
        let mut builder = SessionManager::<C>::builder(backend.store())
            .mode(options.mode)
            .concurrency(options.concurrency)
            .max_inactive(Some(Duration::from_secs(options.max_inactive)))
            .backup(if options.backup_sync {
                BackupMode::Sync {
                    timeout: SYNC_BACKUP_TIMEOUT,
                }
            } else {
                BackupMode::Async
            });
        if let Some(route) = &options.route {
            builder =
                builder.route(Route::new(route).map_err(|error| format!("--route: {error}"))?);
        }
        if let (Some(ids), Some(text)) = (&options.failover_nodes, &options.memcached) {
            let spec = NodeSpec::parse(text)
                .and_then(|spec| spec.with_failover(ids))
                .map_err(|error| format!("--failover-nodes: {error}"))?;
            builder = builder.failover_nodes(spec.failover().to_vec());
        }
        if let (Some(ids), Some(_)) = (&options.failover_nodes, &options.redis) {
            // The builder checks that each is a node of the store.
            let ids = ids
                .split(',')
                .map(|id| NodeId::new(id.trim()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|error| format!("--failover-nodes: {error}"))?;
            builder = builder.failover_nodes(ids);
        }
        let manager = builder.build().map_err(|error| error.to_string())?;
        let layer = SessionLayer::builder(manager.clone())
            .secure(options.secure_cookie)
            .ignore(regex::Regex::new(STATIC_PATHS).map_err(|error| error.to_string())?)
            .build()
            .map_err(|error| error.to_string())?;
        let sessions: Arc<dyn Sessions> = Arc::new(manager);
        let shop_metrics = Arc::new(Metrics::new());
        let context = Arc::new(Context {
            metrics: Arc::clone(&shop_metrics),
            served_by: options
                .route
                .clone()
                .unwrap_or_else(|| options.listen.clone()),
            sessions: Arc::clone(&sessions),
        });
        let router = Router::new()
            .route("/cart", get(show_cart::<C>))
            .route("/cart/items", post(add_item::<C>))
            .route("/prefs", get(show_prefs::<C>).post(set_pref::<C>))
            .route("/login", post(login::<C>))
            .route("/logout", post(logout::<C>))
            .route("/static/{*path}", get(static_file))
            .route("/healthz", get(|| async { "ok" }))
            .route("/metrics", get(show_metrics))
            .route("/admin/nodes", get(nodes))
            .layer(layer)
            .with_state(context);
        Ok(Shop {
            router,
            sessions,
            metrics: shop_metrics,
        })
    }
}

struct Context {
    metrics: Arc<Metrics>,
    served_by: String,
    sessions: Arc<dyn Sessions>,
}

type Ctx = State<Arc<Context>>;

/// A handler's failure: the client's mistake (400), or the session's.
enum ShopError {
    BadRequest(String),
    Session(SessionError),
}

impl From<SessionError> for ShopError {
    fn from(error: SessionError) -> ShopError {
        ShopError::Session(error)
    }
}

impl From<tandem::model::AttributeError> for ShopError {
    fn from(error: tandem::model::AttributeError) -> ShopError {
        ShopError::Session(error.into())
    }
}

impl IntoResponse for ShopError {
    fn into_response(self) -> Response {
        match self {
            ShopError::BadRequest(message) => {
                (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response()
            }
            ShopError::Session(error) => error.into_response(),
        }
    }
}

fn bad(message: impl Into<String>) -> ShopError {
    ShopError::BadRequest(message.into())
}

/// A required, non-empty query parameter of at most `max` bytes.
fn required(value: Option<String>, name: &str, max: usize) -> Result<String, ShopError> {
    match value {
        None => Err(bad(format!("missing query parameter {name}"))),
        Some(value) if value.is_empty() => Err(bad(format!("query parameter {name} is empty"))),
        Some(value) if value.len() > max => Err(bad(format!(
            "query parameter {name} is longer than {max} bytes"
        ))),
        Some(value) => Ok(value),
    }
}

/// The cart JSON of `/cart`, `/cart/items`, `/login` and `/logout`. `show_id` is
/// false when the id changes at commit (login): the new id is only in the cookie.
async fn cart_json<C>(
    context: &Context,
    session: &Session<C>,
    show_id: bool,
) -> Result<Json<Value>, ShopError>
where
    C: Codec + Decodes<Cart> + Decodes<String>,
{
    let guard = session.load().await?;
    let cart: Cart = guard.get("cart")?.unwrap_or_default();
    let user: Option<String> = guard.get("user")?;
    // A session exists after this request if it existed or this request stored
    // something, and it was not ended.
    let exists = !guard.is_invalidated() && (!guard.is_new() || guard.is_modified());
    let id = (show_id && exists).then(|| guard.id().as_str().to_owned());
    Ok(Json(json!({
        "session": id,
        "items": cart,
        "user": user,
        "served_by": context.served_by,
    })))
}

async fn show_cart<C>(State(context): Ctx, session: Session<C>) -> Result<Json<Value>, ShopError>
where
    C: Codec + Decodes<Cart> + Decodes<String>,
{
    cart_json(&context, &session, true).await
}

#[derive(Debug, Deserialize)]
struct ItemParams {
    sku: Option<String>,
    qty: Option<String>,
}

async fn add_item<C>(
    State(context): Ctx,
    session: Session<C>,
    Query(params): Query<ItemParams>,
) -> Result<Json<Value>, ShopError>
where
    C: Codec + Encodes<Cart> + Decodes<Cart> + Decodes<String>,
{
    // Checked before the session is touched: a bad request creates no session.
    let sku = required(params.sku, "sku", MAX_SKU_LEN)?;
    let qty: i64 = required(params.qty, "qty", 20)?
        .parse()
        .map_err(|_| bad("query parameter qty must be an integer"))?;
    {
        let mut guard = session.load().await?;
        let mut cart: Cart = guard.get("cart")?.unwrap_or_default();
        let current = cart.get(&sku).copied().unwrap_or(0);
        let next = current
            .checked_add(qty)
            .ok_or_else(|| bad("quantity out of range"))?;
        if next <= 0 {
            cart.remove(&sku);
        } else {
            cart.insert(sku, next);
        }
        guard.insert("cart", &cart)?;
    }
    cart_json(&context, &session, true).await
}

async fn show_prefs<C>(session: Session<C>) -> Result<Json<Value>, ShopError>
where
    C: Codec + Decodes<String>,
{
    let guard = session.load().await?;
    let mut prefs = BTreeMap::new();
    for name in guard.names() {
        if let Some(key) = name.strip_prefix(PREF_PREFIX) {
            let value: Option<String> = guard.get(name)?;
            prefs.insert(key.to_owned(), value);
        }
    }
    Ok(Json(json!({ "prefs": prefs })))
}

#[derive(Debug, Deserialize)]
struct PrefParams {
    key: Option<String>,
    value: Option<String>,
}

async fn set_pref<C>(
    session: Session<C>,
    Query(params): Query<PrefParams>,
) -> Result<Json<Value>, ShopError>
where
    C: Codec + Encodes<str> + Decodes<String>,
{
    let key = required(
        params.key,
        "key",
        MAX_ATTRIBUTE_NAME_LEN - PREF_PREFIX.len(),
    )?;
    let value = params
        .value
        .ok_or_else(|| bad("missing query parameter value"))?;
    if value.len() > MAX_PREF_VALUE_LEN {
        return Err(bad(format!(
            "query parameter value is longer than {MAX_PREF_VALUE_LEN} bytes"
        )));
    }
    session
        .insert(&format!("{PREF_PREFIX}{key}"), value.as_str())
        .await?;
    show_prefs(session).await
}

#[derive(Debug, Deserialize)]
struct LoginParams {
    user: Option<String>,
}

async fn login<C>(
    State(context): Ctx,
    session: Session<C>,
    Query(params): Query<LoginParams>,
) -> Result<Json<Value>, ShopError>
where
    C: Codec + Encodes<str> + Decodes<Cart> + Decodes<String>,
{
    let user = required(params.user, "user", MAX_USER_LEN)?;
    {
        let mut guard = session.load().await?;
        guard.insert("user", user.as_str())?;
        // Session-fixation protection: the id the client had before the login dies.
        guard.cycle_id();
    }
    cart_json(&context, &session, false).await
}

async fn logout<C>(State(context): Ctx, session: Session<C>) -> Result<Json<Value>, ShopError>
where
    C: Codec + Decodes<Cart> + Decodes<String>,
{
    session.invalidate().await?;
    Ok(Json(json!({
        "session": null,
        "items": {},
        "user": null,
        "served_by": context.served_by,
    })))
}

async fn static_file(Path(path): Path<String>) -> String {
    format!("static resource {path}\n")
}

async fn nodes(State(context): Ctx) -> Json<Value> {
    let nodes: Vec<Value> = context
        .sessions
        .nodes()
        .into_iter()
        .map(|(node, failover)| {
            // The stores report where each node is; the in-process one has none.
            let address = node.address.unwrap_or_else(|| "in-process".to_owned());
            json!({
                "id": node.id.as_str(),
                "address": address,
                "up": node.up,
                "failover": failover,
                "operations": node.operations,
                "failures": node.failures,
                "down_transitions": node.down_transitions,
                "mean_latency_micros": node.mean_latency.map(|latency| latency.as_micros() as u64),
                "connection_waits": node.connection_waits,
                "last_error": node.last_error.map(|(message, _)| message),
            })
        })
        .collect();
    Json(json!({ "nodes": nodes }))
}

async fn show_metrics(State(context): Ctx) -> impl IntoResponse {
    let text = context.metrics.render(&*context.sessions);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(error) => {
                    eprintln!("shop: cannot listen for SIGTERM ({error}); only SIGINT stops it");
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

async fn run(options: Options) -> Result<(), String> {
    let backend = Backend::connect(&options).await?;
    let store = match (&options.memcached, &options.redis) {
        (Some(spec), _) => format!("memcached {spec}"),
        // The spec as the store prints it: passwords masked.
        (_, Some(spec)) => format!(
            "redis {}{}",
            RedisSpec::parse(spec).map_err(|error| format!("--redis: {error}"))?,
            match options.wait_replicas {
                Some(replicas) => format!(", each write waits for {replicas} replica(s)"),
                None => String::new(),
            }
        ),
        (None, None) => "in-process store".to_owned(),
    };
    let shop = Shop::build(&options, backend)?;
    shop.metrics.install()?;
    let listener = tokio::net::TcpListener::bind(&options.listen)
        .await
        .map_err(|error| format!("cannot listen on {}: {error}", options.listen))?;
    let address: SocketAddr = listener.local_addr().map_err(|error| error.to_string())?;
    println!(
        "shop listening on http://{address} ({:?} mode, {:?} codec, {store})",
        options.mode, options.codec
    );
    // On SIGTERM or SIGINT, flush pending backups while still taking requests (the
    // manager commits synchronously from then on), and only then stop accepting: a
    // balancer that moves this server's clients elsewhere must find their newest
    // state in memcached, not a backup still being written.
    let sessions = Arc::clone(&shop.sessions);
    let drain = async move {
        shutdown_signal().await;
        let report = sessions.shutdown(SHUTDOWN_DEADLINE).await;
        println!(
            "shop stopping: {} pending backups written, {} unsaved",
            report.written, report.unsaved
        );
    };
    axum::serve(listener, shop.router)
        .with_graceful_shutdown(drain)
        .await
        .map_err(|error| error.to_string())?;
    let report = shop.sessions.shutdown(SHUTDOWN_DEADLINE).await;
    println!(
        "shop stopped: {} pending backups written, {} unsaved",
        report.written, report.unsaved
    );
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(Some(options)) => options,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("shop: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(options).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("shop: {message}");
            ExitCode::FAILURE
        }
    }
}
