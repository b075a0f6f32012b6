//! The app: the same handlers over every session variant.
//!
//! ```text
//! GET  /cart      the cart's summary (404 if the session has no cart)
//! POST /cart      one more of the next line's article; the new summary
//! POST /session   creates a session holding a new cart (sets the cookie)
//! GET  /counter   the counter attribute (0 when absent)
//! POST /counter   counter + 1, read-modify-write: the lost-update test
//! GET  /healthz   ok, never touches a session
//! GET  /admin/stats  Tandem's manager counters and gauges as JSON ({} otherwise)
//! ```

use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::header::SET_COOKIE;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tandem_codec::SpeedyCodec;
use tandem_core::{NodeSpec, RemoteStore};
use tandem_manager::{Concurrency, Mode, SessionManager};
use tandem_memcached::{MemcachedConfig, MemcachedStore};
use tandem_redis::{RedisConfig, RedisSpec, RedisStore};
use tandem_tower::SessionLayer;
use tower_sessions::{CachingSessionStore, SessionManagerLayer};
use tower_sessions_moka_store::MokaStore;

use crate::cart::{CART, COUNTER, Cart};
use crate::memcached_store::MemcachedSessionStore;

/// The session layer under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Variant {
    /// No session layer: the baseline. `POST /session` only sets a cookie of the same
    /// shape, so that every variant's requests carry one.
    #[default]
    None,
    /// Tandem, sticky mode (local primary copy, asynchronous backup to memcached).
    TandemSticky,
    /// Tandem, non-sticky mode (memcached is the source of truth).
    TandemNonSticky,
    /// tower-sessions with its moka store.
    TowerSessionsMoka,
    /// tower-sessions with [`MemcachedSessionStore`].
    TowerSessionsMemcached,
    /// tower-sessions with `CachingSessionStore(moka store, memcached store)`.
    TowerSessionsCaching,
    /// tower-sessions with its published Redis store (`tower-sessions-redis-store`,
    /// over a fred connection pool): what its users run on Redis.
    TowerSessionsRedis,
    /// Tandem, sticky mode, with Redis as the remote tier.
    TandemStickyRedis,
    /// Tandem, non-sticky mode, with Redis as the remote tier.
    TandemNonStickyRedis,
}

impl Variant {
    /// Every variant, in table order.
    pub const ALL: [Variant; 9] = [
        Variant::None,
        Variant::TandemSticky,
        Variant::TandemNonSticky,
        Variant::TowerSessionsMoka,
        Variant::TowerSessionsMemcached,
        Variant::TowerSessionsCaching,
        Variant::TowerSessionsRedis,
        Variant::TandemStickyRedis,
        Variant::TandemNonStickyRedis,
    ];

    /// The `--variant` name.
    pub fn name(self) -> &'static str {
        match self {
            Variant::None => "none",
            Variant::TandemSticky => "tandem-sticky",
            Variant::TandemNonSticky => "tandem-nonsticky",
            Variant::TowerSessionsMoka => "tower-sessions-moka",
            Variant::TowerSessionsMemcached => "tower-sessions-memcached",
            Variant::TowerSessionsCaching => "tower-sessions-caching",
            Variant::TowerSessionsRedis => "tower-sessions-redis",
            Variant::TandemStickyRedis => "tandem-sticky-redis",
            Variant::TandemNonStickyRedis => "tandem-nonsticky-redis",
        }
    }

    /// Whether the variant needs memcached.
    pub fn uses_memcached(self) -> bool {
        !matches!(self, Variant::None | Variant::TowerSessionsMoka) && !self.uses_redis()
    }

    /// Whether the variant needs Redis.
    pub fn uses_redis(self) -> bool {
        matches!(
            self,
            Variant::TowerSessionsRedis
                | Variant::TandemStickyRedis
                | Variant::TandemNonStickyRedis
        )
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Variant {
    type Err = String;

    fn from_str(text: &str) -> Result<Variant, String> {
        Variant::ALL
            .into_iter()
            .find(|variant| variant.name() == text)
            .ok_or_else(|| {
                let names: Vec<&str> = Variant::ALL.iter().map(|v| v.name()).collect();
                format!("unknown variant {text:?} (one of {})", names.join(", "))
            })
    }
}

/// How to build the app.
#[derive(Debug, Clone, Default)]
pub struct AppOptions {
    /// The session layer.
    pub variant: Variant,
    /// memcached nodes as a Tandem node spec (`n1:127.0.0.1:11211,n2:...`). Tandem
    /// uses all of them; the tower-sessions memcached store uses the first.
    pub memcached: Option<String>,
    /// Tandem's concurrency mode (default merge, Tandem's default).
    pub concurrency: Concurrency,
    /// Idle memcached connections kept per node, for Tandem's store and the
    /// tower-sessions memcached store alike; `None`: Tandem's default (64).
    pub memcached_idle: Option<usize>,
    /// Tandem's read exchanges per memcached node (reads beyond them are pipelined
    /// together); `None`: Tandem's default.
    pub read_exchanges: Option<usize>,
    /// The Redis deployment, as a URL (`redis://127.0.0.1:6379`,
    /// `redis+sentinel://...`, `redis+cluster://...`): one node.
    pub redis: Option<String>,
    /// The durable setting for Tandem on Redis: each write waits for this many
    /// replica acknowledgements (within [`WAIT_TIMEOUT`]); `None`: writes do not wait.
    pub wait_replicas: Option<u32>,
}

/// How long a write waits for its replica acknowledgements with
/// [`AppOptions::wait_replicas`]; one not acknowledged in time fails (a non-sticky
/// commit answers 503, counted as a non-2xx answer).
pub const WAIT_TIMEOUT: Duration = Duration::from_millis(500);

/// A built app.
pub struct App {
    /// The routes with the variant's session layer.
    pub router: Router,
    /// Tandem's manager, for its counters and for flushing backups.
    pub manager: Option<SessionManager<SpeedyCodec>>,
}

impl App {
    /// Builds the app. Needs a tokio runtime (Tandem's manager spawns its background
    /// writer there).
    pub async fn build(options: &AppOptions) -> Result<App, String> {
        if options.wait_replicas.is_some()
            && !matches!(
                options.variant,
                Variant::TandemStickyRedis | Variant::TandemNonStickyRedis
            )
        {
            return Err(format!(
                "--wait-replicas is for the Tandem variants on Redis, not {}",
                options.variant
            ));
        }
        let spec = match (&options.memcached, options.variant.uses_memcached()) {
            (Some(text), true) => {
                Some(NodeSpec::parse(text).map_err(|error| format!("--memcached: {error}"))?)
            }
            (None, true) => {
                return Err(format!("variant {} needs --memcached", options.variant));
            }
            (_, false) => None,
        };
        let first_address = || {
            spec.as_ref()
                .and_then(|spec| spec.nodes().first())
                .map(|node| node.address())
                .ok_or_else(|| "--memcached names no node".to_owned())
        };
        let (router, manager) = match options.variant {
            Variant::None => (routes::<NoSession, ()>(), None),
            Variant::TandemSticky | Variant::TandemNonSticky => {
                let spec = spec.as_ref().ok_or("no memcached node spec")?;
                let mut config = MemcachedConfig::default();
                if let Some(idle) = options.memcached_idle {
                    config = config.with_max_idle_connections(idle);
                }
                if let Some(exchanges) = options.read_exchanges {
                    config = config.with_max_read_exchanges(exchanges);
                }
                let store = MemcachedStore::connect(spec, config)
                    .await
                    .map_err(|error| format!("memcached: {error}"))?;
                let mode = if options.variant == Variant::TandemSticky {
                    Mode::Sticky
                } else {
                    Mode::NonSticky
                };
                tandem_app(Arc::new(store), mode, options.concurrency)?
            }
            Variant::TandemStickyRedis | Variant::TandemNonStickyRedis => {
                let url = options
                    .redis
                    .as_deref()
                    .ok_or_else(|| format!("variant {} needs --redis", options.variant))?;
                let spec = RedisSpec::parse(url).map_err(|error| format!("--redis: {error}"))?;
                let mut config = RedisConfig::default();
                if let Some(replicas) = options.wait_replicas {
                    config = config.with_wait_replicas(replicas, WAIT_TIMEOUT);
                }
                let store = RedisStore::connect(&spec, config)
                    .await
                    .map_err(|error| format!("redis: {error}"))?;
                let mode = if options.variant == Variant::TandemStickyRedis {
                    Mode::Sticky
                } else {
                    Mode::NonSticky
                };
                tandem_app(Arc::new(store), mode, options.concurrency)?
            }
            Variant::TowerSessionsMoka => (tower_sessions_routes(MokaStore::new(None)), None),
            Variant::TowerSessionsMemcached => (
                tower_sessions_routes(
                    MemcachedSessionStore::connect(&first_address()?, options.memcached_idle)
                        .await?,
                ),
                None,
            ),
            Variant::TowerSessionsRedis => {
                let url = options
                    .redis
                    .as_deref()
                    .ok_or_else(|| format!("variant {} needs --redis", options.variant))?;
                (
                    tower_sessions_routes(tower_sessions_redis(url).await?),
                    None,
                )
            }
            Variant::TowerSessionsCaching => (
                tower_sessions_routes(CachingSessionStore::new(
                    MokaStore::new(None),
                    MemcachedSessionStore::connect(&first_address()?, options.memcached_idle)
                        .await?,
                )),
                None,
            ),
        };
        Ok(App { router, manager })
    }
}

/// Tandem's local tier in the benchmark: 4 GiB.
const LOCAL_CAPACITY_BYTES: u64 = 4 << 30;

/// The routes with Tandem's layer over `store`, and the manager.
fn tandem_app(
    store: Arc<dyn RemoteStore>,
    mode: Mode,
    concurrency: Concurrency,
) -> Result<(Router, Option<SessionManager<SpeedyCodec>>), String> {
    let manager = SessionManager::<SpeedyCodec>::builder(store)
        .mode(mode)
        .concurrency(concurrency)
        // Room for a million resident sessions (the default 256 MiB holds about
        // 200,000 of these), as the tower-sessions moka store, which is unbounded.
        .local_capacity_bytes(LOCAL_CAPACITY_BYTES)
        .build()
        .map_err(|error| error.to_string())?;
    let layer = SessionLayer::builder(manager.clone())
        .secure(false)
        .build()
        .map_err(|error| error.to_string())?;
    let router = routes::<tandem_tower::Session<SpeedyCodec>, _>()
        .route("/admin/stats", get(tandem_stats))
        .layer(layer)
        .with_state(manager.clone());
    Ok((router, Some(manager)))
}

/// Connections in the tower-sessions Redis store's fred pool: the number its
/// documentation's example uses.
const FRED_POOL_SIZE: usize = 6;

/// tower-sessions' Redis store over a connected fred pool, as its documentation sets
/// it up.
async fn tower_sessions_redis(
    url: &str,
) -> Result<
    tower_sessions_redis_store::RedisStore<tower_sessions_redis_store::fred::prelude::Pool>,
    String,
> {
    use tower_sessions_redis_store::fred::prelude::{ClientLike, Config, Pool};
    let config = Config::from_url(url).map_err(|error| format!("--redis: {error}"))?;
    let pool = Pool::new(config, None, None, None, FRED_POOL_SIZE)
        .map_err(|error| format!("redis pool: {error}"))?;
    // The connection task runs until the pool is dropped.
    let _connection = pool.connect();
    pool.wait_for_connect()
        .await
        .map_err(|error| format!("redis: {error}"))?;
    Ok(tower_sessions_redis_store::RedisStore::new(pool))
}

fn tower_sessions_routes<S: tower_sessions::SessionStore + Clone>(store: S) -> Router {
    routes::<tower_sessions::Session, ()>()
        .route("/admin/stats", get(|| async { "{}\n" }))
        .layer(SessionManagerLayer::new(store).with_secure(false))
        .with_state(())
}

/// The routes every variant serves, over its session handle `A`.
fn routes<A, S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    A: SessionAccess + FromRequestParts<S>,
{
    Router::new()
        .route("/cart", get(show_cart::<A, S>).post(bump_cart::<A, S>))
        .route("/session", axum::routing::post(create::<A, S>))
        .route(
            "/counter",
            get(show_counter::<A, S>).post(increment::<A, S>),
        )
        .route("/healthz", get(|| async { "ok\n" }))
}

/// What the handlers need of a session, whichever layer provides it. Errors are
/// already responses.
pub trait SessionAccess: Send + Sync + 'static {
    /// The cart attribute.
    fn cart(&self) -> impl Future<Output = Result<Option<Cart>, Response>> + Send;
    /// Stores the cart attribute.
    fn set_cart(&self, cart: &Cart) -> impl Future<Output = Result<(), Response>> + Send;
    /// The counter attribute.
    fn counter(&self) -> impl Future<Output = Result<Option<u64>, Response>> + Send;
    /// Stores the counter attribute.
    fn set_counter(&self, value: u64) -> impl Future<Output = Result<(), Response>> + Send;
    /// A cookie the handler must set itself on a new session (only the baseline,
    /// which has no layer to do it).
    fn creation_cookie(&self) -> Option<HeaderValue> {
        None
    }
}

async fn show_cart<A: SessionAccess + FromRequestParts<S>, S>(session: A) -> Response {
    match session.cart().await {
        Ok(Some(cart)) => cart.summary().into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, "no cart\n").into_response(),
        Err(response) => response,
    }
}

async fn bump_cart<A: SessionAccess + FromRequestParts<S>, S>(session: A) -> Response {
    let mut cart = match session.cart().await {
        Ok(Some(cart)) => cart,
        Ok(None) => return (StatusCode::NOT_FOUND, "no cart\n").into_response(),
        Err(response) => return response,
    };
    cart.bump();
    match session.set_cart(&cart).await {
        Ok(()) => cart.summary().into_response(),
        Err(response) => response,
    }
}

async fn create<A: SessionAccess + FromRequestParts<S>, S>(session: A) -> Response {
    if let Err(response) = session.set_cart(&Cart::new()).await {
        return response;
    }
    let mut response = "created\n".into_response();
    if let Some(cookie) = session.creation_cookie() {
        response.headers_mut().insert(SET_COOKIE, cookie);
    }
    response
}

async fn show_counter<A: SessionAccess + FromRequestParts<S>, S>(session: A) -> Response {
    match session.counter().await {
        Ok(value) => format!("{}\n", value.unwrap_or(0)).into_response(),
        Err(response) => response,
    }
}

async fn increment<A: SessionAccess + FromRequestParts<S>, S>(session: A) -> Response {
    let value = match session.counter().await {
        Ok(value) => value.unwrap_or(0) + 1,
        Err(response) => return response,
    };
    match session.set_counter(value).await {
        Ok(()) => format!("{value}\n").into_response(),
        Err(response) => response,
    }
}

async fn tandem_stats(
    axum::extract::State(manager): axum::extract::State<SessionManager<SpeedyCodec>>,
) -> Response {
    let stats = manager.stats();
    json!({
        "local_sessions": manager.local_sessions(),
        "pending_backups": manager.pending_backups(),
        "loads": stats.loads,
        "loaded_local": stats.loaded_local,
        "loaded_remote": stats.loaded_remote,
        "commits": stats.commits,
        "backups_written": stats.backups_written,
        "backups_coalesced": stats.backups_coalesced,
        "backups_skipped_unchanged": stats.backups_skipped_unchanged,
        "touches": stats.touches,
        "conflicts": stats.conflicts,
        "lock_waits": stats.lock_waits,
        "merge_retries": stats.merge_retries,
        "sessions_created": stats.sessions_created,
    })
    .to_string()
    .into_response()
}

/// The baseline's "session": a cart that is always there, nothing stored.
pub struct NoSession;

/// Nanoseconds of CPU the baseline burns per request on top of its handler (default
/// 0), set by `bench-http-app serve --baseline-extra-cpu-ns`: a calibration of what
/// a given per-request cost does to requests/s on the machine, the way a session
/// layer's cost shows up in the figures.
pub static BASELINE_EXTRA_CPU_NS: AtomicU64 = AtomicU64::new(0);

/// Spins for [`BASELINE_EXTRA_CPU_NS`] (busy, not sleeping: it must cost CPU).
fn burn_baseline_extra_cpu() {
    let extra = Duration::from_nanos(BASELINE_EXTRA_CPU_NS.load(Ordering::Relaxed));
    if extra.is_zero() {
        return;
    }
    let started = Instant::now();
    while started.elapsed() < extra {
        std::hint::spin_loop();
    }
}

/// The baseline's cookie values: unique, and as long as a Tandem session id.
static NEXT_COOKIE: AtomicU64 = AtomicU64::new(0);

impl<S: Send + Sync> FromRequestParts<S> for NoSession {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(_parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        burn_baseline_extra_cpu();
        Ok(NoSession)
    }
}

impl SessionAccess for NoSession {
    async fn cart(&self) -> Result<Option<Cart>, Response> {
        Ok(Some(Cart::new()))
    }

    async fn set_cart(&self, _cart: &Cart) -> Result<(), Response> {
        Ok(())
    }

    async fn counter(&self) -> Result<Option<u64>, Response> {
        Ok(None)
    }

    async fn set_counter(&self, _value: u64) -> Result<(), Response> {
        Ok(())
    }

    fn creation_cookie(&self) -> Option<HeaderValue> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos());
        let serial = NEXT_COOKIE.fetch_add(1, Ordering::Relaxed);
        let value = format!("bench_session={nanos:x}{serial:08x}-n1; Path=/; HttpOnly");
        HeaderValue::from_str(&value).ok()
    }
}

impl SessionAccess for tandem_tower::Session<SpeedyCodec> {
    async fn cart(&self) -> Result<Option<Cart>, Response> {
        self.get::<Cart>(CART)
            .await
            .map_err(IntoResponse::into_response)
    }

    async fn set_cart(&self, cart: &Cart) -> Result<(), Response> {
        self.insert(CART, cart)
            .await
            .map(drop)
            .map_err(IntoResponse::into_response)
    }

    async fn counter(&self) -> Result<Option<u64>, Response> {
        self.get::<u64>(COUNTER)
            .await
            .map_err(IntoResponse::into_response)
    }

    async fn set_counter(&self, value: u64) -> Result<(), Response> {
        self.insert(COUNTER, &value)
            .await
            .map(drop)
            .map_err(IntoResponse::into_response)
    }
}

fn tower_sessions_error(error: tower_sessions::session::Error) -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")).into_response()
}

impl SessionAccess for tower_sessions::Session {
    async fn cart(&self) -> Result<Option<Cart>, Response> {
        self.get::<Cart>(CART).await.map_err(tower_sessions_error)
    }

    async fn set_cart(&self, cart: &Cart) -> Result<(), Response> {
        self.insert(CART, cart).await.map_err(tower_sessions_error)
    }

    async fn counter(&self) -> Result<Option<u64>, Response> {
        self.get::<u64>(COUNTER).await.map_err(tower_sessions_error)
    }

    async fn set_counter(&self, value: u64) -> Result<(), Response> {
        self.insert(COUNTER, value)
            .await
            .map_err(tower_sessions_error)
    }
}
