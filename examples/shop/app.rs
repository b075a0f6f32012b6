//! The shop without its web framework: the remote tier, the manager per codec, the
//! handlers' logic over a [`Session`], parameter validation, metrics, the node table,
//! and the process around the server (command line, banner, signals, shutdown).
//!
//! `shop.rs` (axum) and `shop-actix.rs` (actix-web) include this file (as `app`, next
//! to `options`) and add only their wiring (`axum.rs`, `actix.rs`): routes, extractors,
//! and turning [`ShopError`] and JSON values into their responses. [`Session`] and [`SessionError`] are `tandem-http`'s, the same
//! types under both frameworks, which is what lets the logic live here once.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use serde::Deserialize;
use serde_json::{Value, json};
use tandem::memcached::{MemcachedConfig, MemcachedStore};
use tandem::redis::{RedisConfig, RedisSpec, RedisStore};
use tandem::{
    BackupMode, Codec, MemoryStore, NodeId, NodeSpec, RemoteStore, Route, SessionManager,
    manager::{ShutdownReport, Stats},
    model::{AttributeError, Decodes, Encodes, MAX_ATTRIBUTE_NAME_LEN, NodeStatus},
};
use tandem_codec::{JsonCodec, Migrating, MsgpackCodec, SpeedyCodec};
use tandem_http::{FromSettings, Session, SessionError, SettingsBuilder};

use crate::options::{CodecChoice, Options, USAGE, WAIT_TIMEOUT};

/// How long a shutdown may spend flushing backups.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);
/// How long a synchronous backup may hold a response (`--backup sync`).
const SYNC_BACKUP_TIMEOUT: Duration = Duration::from_secs(1);
/// Paths that never touch sessions.
const STATIC_PATHS: &str = "^/static/";

const MAX_SKU_LEN: usize = 128;
const MAX_USER_LEN: usize = 256;
const MAX_PREF_VALUE_LEN: usize = 4096;
const PREF_PREFIX: &str = "pref.";

/// The `Content-Type` of `/metrics`.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The body of `/healthz`.
pub const HEALTHY: &str = "ok";

/// The cart attribute: quantity per SKU. Written by whichever codec `--codec` names,
/// so it is both speedy- and serde-serializable.
pub type Cart = BTreeMap<String, i64>;

/// Each `--codec` writes with its own codec and reads the other two, so servers with
/// different `--codec` share sessions.
type WriteSpeedy = Migrating<SpeedyCodec, (JsonCodec, MsgpackCodec)>;
type WriteJson = Migrating<JsonCodec, (SpeedyCodec, MsgpackCodec)>;
type WriteMsgpack = Migrating<MsgpackCodec, (SpeedyCodec, JsonCodec)>;

/// What the shop stores with a codec: the cart and strings (user, preferences).
pub trait ShopCodec:
    Codec + Encodes<Cart> + Decodes<Cart> + Encodes<str> + Decodes<String>
{
}

impl<C> ShopCodec for C where
    C: Codec + Encodes<Cart> + Decodes<Cart> + Encodes<str> + Decodes<String>
{
}

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

/// What every handler shares: the node table and metrics, and the server's name.
pub struct Context {
    metrics: Arc<Metrics>,
    served_by: String,
    sessions: Arc<dyn Sessions>,
}

/// A shop ready to serve: `app` is the framework's part (a router, a server factory).
pub struct Shop<A> {
    /// The routes behind the session layer, as the framework holds them.
    pub app: A,
    /// The manager, for the admin routes and shutdown.
    pub sessions: Arc<dyn Sessions>,
    /// The Prometheus exporter.
    pub metrics: Arc<Metrics>,
}

/// A web framework's part of a shop: its routes for a manager of codec `C`.
pub trait Wiring {
    /// What the framework serves (an axum `Router`, an actix-web server factory).
    type App;

    /// The routes over `manager`, behind a session layer made with [`session_layer`].
    fn wire<C: ShopCodec>(
        self,
        manager: SessionManager<C>,
        context: Arc<Context>,
        options: &Options,
    ) -> Result<Self::App, String>;
}

impl<A> Shop<A> {
    /// The shop for `options` over `backend`, with the routes of `wiring`. Needs a
    /// tokio runtime.
    pub fn build<W: Wiring<App = A>>(
        options: &Options,
        backend: Backend,
        wiring: W,
    ) -> Result<Shop<A>, String> {
        match options.codec {
            CodecChoice::Speedy => Shop::with_codec::<WriteSpeedy, W>(options, backend, wiring),
            CodecChoice::Json => Shop::with_codec::<WriteJson, W>(options, backend, wiring),
            CodecChoice::Msgpack => Shop::with_codec::<WriteMsgpack, W>(options, backend, wiring),
        }
    }

    fn with_codec<C: ShopCodec, W: Wiring<App = A>>(
        options: &Options,
        backend: Backend,
        wiring: W,
    ) -> Result<Shop<A>, String> {
        let manager = manager::<C>(options, backend)?;
        let sessions: Arc<dyn Sessions> = Arc::new(manager.clone());
        let metrics = Arc::new(Metrics::new());
        let context = Arc::new(Context {
            metrics: Arc::clone(&metrics),
            served_by: options
                .route
                .clone()
                .unwrap_or_else(|| options.listen.clone()),
            sessions: Arc::clone(&sessions),
        });
        Ok(Shop {
            app: wiring.wire(manager, context, options)?,
            sessions,
            metrics,
        })
    }
}

/// The manager the options describe.
fn manager<C: Codec>(options: &Options, backend: Backend) -> Result<SessionManager<C>, String> {
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
        builder = builder.route(Route::new(route).map_err(|error| format!("--route: {error}"))?);
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
    builder.build().map_err(|error| error.to_string())
}

/// The session layer (tower) or middleware (actix-web) of the shop: the cookie is
/// `Secure` with `--secure-cookie`, and `/static/..` never touches sessions. Both
/// frameworks build theirs with `tandem-http`'s one settings builder.
pub fn session_layer<C: Codec, L: FromSettings<C>>(
    manager: SessionManager<C>,
    options: &Options,
) -> Result<L, String> {
    SettingsBuilder::<C, L>::new(manager)
        .secure(options.secure_cookie)
        .ignore(regex::Regex::new(STATIC_PATHS).map_err(|error| error.to_string())?)
        .build()
        .map_err(|error| error.to_string())
}

/// A handler's failure: the client's mistake (400), or the session's (the status
/// `tandem-http` gives it: 409, 413, 503, ...).
#[derive(Debug)]
pub enum ShopError {
    /// A missing or invalid query parameter; the message says which.
    BadRequest(String),
    /// Loading or using the session failed.
    Session(SessionError),
}

impl ShopError {
    /// A query string the framework could not parse into the handler's parameters.
    pub fn bad_query(error: impl std::fmt::Display) -> ShopError {
        bad(format!("invalid query string: {error}"))
    }

    /// The response, as an `http` 1 response that each framework converts.
    pub fn response(&self) -> http::Response<String> {
        match self {
            ShopError::BadRequest(message) => http::Response::builder()
                .status(http::StatusCode::BAD_REQUEST)
                .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
                .body(format!("{message}\n"))
                .unwrap_or_else(|_| unreachable!("a valid status and header")),
            ShopError::Session(error) => error.http_response(),
        }
    }
}

impl std::fmt::Display for ShopError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ShopError::BadRequest(message) => f.write_str(message),
            ShopError::Session(error) => write!(f, "{error}"),
        }
    }
}

impl From<SessionError> for ShopError {
    fn from(error: SessionError) -> ShopError {
        ShopError::Session(error)
    }
}

impl From<AttributeError> for ShopError {
    fn from(error: AttributeError) -> ShopError {
        ShopError::Session(error.into())
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
async fn cart_json<C: ShopCodec>(
    context: &Context,
    session: &Session<C>,
    show_id: bool,
) -> Result<Value, ShopError> {
    let guard = session.load().await?;
    let cart: Cart = guard.get("cart")?.unwrap_or_default();
    let user: Option<String> = guard.get("user")?;
    // A session exists after this request if it existed or this request stored
    // something, and it was not ended.
    let exists = !guard.is_invalidated() && (!guard.is_new() || guard.is_modified());
    let id = (show_id && exists).then(|| guard.id().as_str().to_owned());
    Ok(json!({
        "session": id,
        "items": cart,
        "user": user,
        "served_by": context.served_by,
    }))
}

/// `GET /cart`: creates no session.
pub async fn show_cart<C: ShopCodec>(
    context: &Context,
    session: &Session<C>,
) -> Result<Value, ShopError> {
    cart_json(context, session, true).await
}

/// The query of `POST /cart/items`.
#[derive(Debug, Deserialize)]
pub struct ItemParams {
    sku: Option<String>,
    qty: Option<String>,
}

/// `POST /cart/items?sku=S&qty=N`: adds N (may be negative) to S.
pub async fn add_item<C: ShopCodec>(
    context: &Context,
    session: &Session<C>,
    params: ItemParams,
) -> Result<Value, ShopError> {
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
    cart_json(context, session, true).await
}

/// `GET /prefs`: every `pref.K` attribute.
pub async fn show_prefs<C: ShopCodec>(session: &Session<C>) -> Result<Value, ShopError> {
    let guard = session.load().await?;
    let mut prefs = BTreeMap::new();
    for name in guard.names() {
        if let Some(key) = name.strip_prefix(PREF_PREFIX) {
            let value: Option<String> = guard.get(name)?;
            prefs.insert(key.to_owned(), value);
        }
    }
    Ok(json!({ "prefs": prefs }))
}

/// The query of `POST /prefs`.
#[derive(Debug, Deserialize)]
pub struct PrefParams {
    key: Option<String>,
    value: Option<String>,
}

/// `POST /prefs?key=K&value=V`: stores V in attribute `pref.K`.
pub async fn set_pref<C: ShopCodec>(
    session: &Session<C>,
    params: PrefParams,
) -> Result<Value, ShopError> {
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

/// The query of `POST /login`.
#[derive(Debug, Deserialize)]
pub struct LoginParams {
    user: Option<String>,
}

/// `POST /login?user=U`: sets the user and gives the session a new id.
pub async fn login<C: ShopCodec>(
    context: &Context,
    session: &Session<C>,
    params: LoginParams,
) -> Result<Value, ShopError> {
    let user = required(params.user, "user", MAX_USER_LEN)?;
    {
        let mut guard = session.load().await?;
        guard.insert("user", user.as_str())?;
        // Session-fixation protection: the id the client had before the login dies.
        guard.cycle_id();
    }
    cart_json(context, session, false).await
}

/// `POST /logout`: ends the session; the layer clears the cookie.
pub async fn logout<C: ShopCodec>(
    context: &Context,
    session: &Session<C>,
) -> Result<Value, ShopError> {
    session.invalidate().await?;
    Ok(json!({
        "session": null,
        "items": {},
        "user": null,
        "served_by": context.served_by,
    }))
}

/// `GET /static/<path>`: never a session.
pub fn static_file(path: &str) -> String {
    format!("static resource {path}\n")
}

/// `GET /admin/nodes`.
pub fn nodes(context: &Context) -> Value {
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
    json!({ "nodes": nodes })
}

/// `GET /metrics`: the Prometheus text, of [`METRICS_CONTENT_TYPE`].
pub fn metrics_text(context: &Context) -> String {
    context.metrics.render(&*context.sessions)
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
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

/// Waits for `signal`, then flushes pending backups while the server still takes
/// requests (the manager commits synchronously from then on); when it returns, the
/// server stops accepting. A balancer that moves this server's clients elsewhere
/// must find their newest state in the remote tier, not a backup still being written.
pub async fn flush_on(signal: impl Future<Output = ()>, sessions: Arc<dyn Sessions>) {
    signal.await;
    let report = sessions.shutdown(SHUTDOWN_DEADLINE).await;
    println!(
        "shop stopping: {} pending backups written, {} unsaved",
        report.written, report.unsaved
    );
}

/// After the server stopped: writes what the last requests left pending.
pub async fn stopped(sessions: &dyn Sessions) {
    let report = sessions.shutdown(SHUTDOWN_DEADLINE).await;
    println!(
        "shop stopped: {} pending backups written, {} unsaved",
        report.written, report.unsaved
    );
}

/// How the banner names the remote tier: Redis passwords masked.
fn describe_store(options: &Options) -> Result<String, String> {
    Ok(match (&options.memcached, &options.redis) {
        (Some(spec), _) => format!("memcached {spec}"),
        (_, Some(spec)) => format!(
            "redis {}{}",
            RedisSpec::parse(spec).map_err(|error| format!("--redis: {error}"))?,
            match options.wait_replicas {
                Some(replicas) => format!(", each write waits for {replicas} replica(s)"),
                None => String::new(),
            }
        ),
        (None, None) => "in-process store".to_owned(),
    })
}

/// Installs the shop's metrics as the process's, binds `--listen` and prints the
/// banner. The listener is non-blocking, as both frameworks want it.
fn listen<A>(options: &Options, shop: &Shop<A>) -> Result<TcpListener, String> {
    let store = describe_store(options)?;
    shop.metrics.install()?;
    let listener = TcpListener::bind(&options.listen)
        .and_then(|listener| listener.set_nonblocking(true).map(|()| listener))
        .map_err(|error| format!("cannot listen on {}: {error}", options.listen))?;
    let address: SocketAddr = listener.local_addr().map_err(|error| error.to_string())?;
    println!(
        "shop listening on http://{address} ({:?} mode, {:?} codec, {store})",
        options.mode, options.codec
    );
    Ok(listener)
}

/// The process: parses the command line (printing the usage for `--help` or a
/// mistake), connects the remote tier, builds the shop with `build`, listens and
/// prints the banner, and serves with `serve` until it returns; an error ends the
/// process with one line.
pub async fn main<A, F: Future<Output = Result<(), String>>>(
    build: impl FnOnce(&Options, Backend) -> Result<Shop<A>, String>,
    serve: impl FnOnce(Shop<A>, TcpListener) -> F,
) -> ExitCode {
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
    let run = async {
        let backend = Backend::connect(&options).await?;
        let shop = build(&options, backend)?;
        let listener = listen(&options, &shop)?;
        serve(shop, listener).await
    };
    match run.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("shop: {message}");
            ExitCode::FAILURE
        }
    }
}
