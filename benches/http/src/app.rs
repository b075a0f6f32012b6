//! The axum app: the handlers of [`crate::handlers`] over every session variant, and
//! what both apps share: the variants, their options and Tandem's setup.
//! `actix_app.rs` serves the same handlers on actix-web.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::header::SET_COOKIE;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tandem_codec::SpeedyCodec;
use tandem_core::{NodeSpec, RemoteStore};
use tandem_manager::{Concurrency, Mode, SessionManager};
use tandem_memcached::{MemcachedConfig, MemcachedStore};
use tandem_redis::{RedisConfig, RedisSpec, RedisStore};
use tandem_tower::SessionLayer;
use tower_sessions::{CachingSessionStore, SessionManagerLayer};
use tower_sessions_moka_store::MokaStore;

use crate::cart::{CART, COUNTER, Cart};
use crate::handlers::{Action, Failed, NoSession, Reply, SessionAccess, act};
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
    /// actix-web only: actix-session with its `RedisSessionStore` (`--redis URL`).
    ActixSessionRedis,
    /// actix-web only: actix-session with its `CookieSessionStore` (the whole state
    /// in the cookie).
    ActixSessionCookie,
}

impl Variant {
    /// Every variant, in table order.
    pub const ALL: [Variant; 11] = [
        Variant::None,
        Variant::TandemSticky,
        Variant::TandemNonSticky,
        Variant::TowerSessionsMoka,
        Variant::TowerSessionsMemcached,
        Variant::TowerSessionsCaching,
        Variant::TowerSessionsRedis,
        Variant::TandemStickyRedis,
        Variant::TandemNonStickyRedis,
        Variant::ActixSessionRedis,
        Variant::ActixSessionCookie,
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
            Variant::ActixSessionRedis => "actix-session-redis",
            Variant::ActixSessionCookie => "actix-session-cookie",
        }
    }

    /// Whether the variant needs memcached.
    pub fn uses_memcached(self) -> bool {
        !matches!(
            self,
            Variant::None | Variant::TowerSessionsMoka | Variant::ActixSessionCookie
        ) && !self.uses_redis()
    }

    /// Whether the variant needs Redis.
    pub fn uses_redis(self) -> bool {
        matches!(
            self,
            Variant::TowerSessionsRedis
                | Variant::TandemStickyRedis
                | Variant::TandemNonStickyRedis
                | Variant::ActixSessionRedis
        )
    }

    /// Whether the variant is Tandem's.
    pub fn is_tandem(self) -> bool {
        matches!(
            self,
            Variant::TandemSticky
                | Variant::TandemNonSticky
                | Variant::TandemStickyRedis
                | Variant::TandemNonStickyRedis
        )
    }

    /// Whether the variant is one of the other session layers of axum
    /// (tower-sessions) or of actix-web (actix-session): the ones an app on the other
    /// framework cannot use.
    pub fn framework(self) -> Option<Framework> {
        match self {
            Variant::TowerSessionsMoka
            | Variant::TowerSessionsMemcached
            | Variant::TowerSessionsCaching
            | Variant::TowerSessionsRedis => Some(Framework::Axum),
            Variant::ActixSessionRedis | Variant::ActixSessionCookie => Some(Framework::Actix),
            Variant::None
            | Variant::TandemSticky
            | Variant::TandemNonSticky
            | Variant::TandemStickyRedis
            | Variant::TandemNonStickyRedis => None,
        }
    }
}

/// The web framework the app runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Framework {
    /// axum 0.8 on hyper (`app.rs`).
    #[default]
    Axum,
    /// actix-web 4 (`actix_app.rs`).
    Actix,
}

impl FromStr for Framework {
    type Err = String;

    fn from_str(text: &str) -> Result<Framework, String> {
        match text {
            "axum" => Ok(Framework::Axum),
            "actix" => Ok(Framework::Actix),
            _ => Err(format!("unknown framework {text:?} (axum or actix)")),
        }
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
        check_variant(options, Framework::Axum)?;
        if let Some(manager) = tandem_manager(options).await? {
            let layer = SessionLayer::builder(manager.clone())
                .secure(false)
                .build()
                .map_err(|error| error.to_string())?;
            let router = routes::<tandem_tower::Session<SpeedyCodec>, _>()
                .route(
                    "/admin/stats",
                    get(
                        |axum::extract::State(manager): axum::extract::State<
                            SessionManager<SpeedyCodec>,
                        >| async move {
                            crate::handlers::tandem_stats(&manager)
                        },
                    ),
                )
                .layer(layer)
                .with_state(manager.clone());
            return Ok(App {
                router,
                manager: Some(manager),
            });
        }
        let router = match options.variant {
            Variant::TowerSessionsMoka => tower_sessions_routes(MokaStore::new(None)),
            Variant::TowerSessionsMemcached => tower_sessions_routes(
                MemcachedSessionStore::connect(&first_memcached(options)?, options.memcached_idle)
                    .await?,
            ),
            Variant::TowerSessionsRedis => {
                tower_sessions_routes(tower_sessions_redis(redis_url(options)?).await?)
            }
            Variant::TowerSessionsCaching => tower_sessions_routes(CachingSessionStore::new(
                MokaStore::new(None),
                MemcachedSessionStore::connect(&first_memcached(options)?, options.memcached_idle)
                    .await?,
            )),
            _ => routes::<NoSession, ()>(),
        };
        Ok(App {
            router,
            manager: None,
        })
    }
}

/// Refuses a variant the framework cannot serve, and `--wait-replicas` where it means
/// nothing.
pub(crate) fn check_variant(options: &AppOptions, framework: Framework) -> Result<(), String> {
    if let Some(other) = options.variant.framework()
        && other != framework
    {
        return Err(format!(
            "variant {} runs on the other framework ({other:?})",
            options.variant
        ));
    }
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
    Ok(())
}

/// The memcached node spec of a variant that needs one.
fn memcached_spec(options: &AppOptions) -> Result<NodeSpec, String> {
    let text = options
        .memcached
        .as_deref()
        .ok_or_else(|| format!("variant {} needs --memcached", options.variant))?;
    NodeSpec::parse(text).map_err(|error| format!("--memcached: {error}"))
}

/// The first memcached node's address (the tower-sessions memcached store's node).
fn first_memcached(options: &AppOptions) -> Result<String, String> {
    memcached_spec(options)?
        .nodes()
        .first()
        .map(|node| node.address())
        .ok_or_else(|| "--memcached names no node".to_owned())
}

/// The Redis URL of a variant that needs one.
pub(crate) fn redis_url(options: &AppOptions) -> Result<&str, String> {
    options
        .redis
        .as_deref()
        .ok_or_else(|| format!("variant {} needs --redis", options.variant))
}

/// Tandem's local tier in the benchmark: 4 GiB.
const LOCAL_CAPACITY_BYTES: u64 = 4 << 30;

/// Tandem's manager for a Tandem variant (over memcached or Redis, in the variant's
/// mode, as configured); `None` for the other variants. Both frameworks' apps use it.
pub(crate) async fn tandem_manager(
    options: &AppOptions,
) -> Result<Option<SessionManager<SpeedyCodec>>, String> {
    let store: Arc<dyn RemoteStore> = match options.variant {
        Variant::TandemSticky | Variant::TandemNonSticky => {
            let mut config = MemcachedConfig::default();
            if let Some(idle) = options.memcached_idle {
                config = config.with_max_idle_connections(idle);
            }
            if let Some(exchanges) = options.read_exchanges {
                config = config.with_max_read_exchanges(exchanges);
            }
            let store = MemcachedStore::connect(&memcached_spec(options)?, config)
                .await
                .map_err(|error| format!("memcached: {error}"))?;
            Arc::new(store)
        }
        Variant::TandemStickyRedis | Variant::TandemNonStickyRedis => {
            let spec = RedisSpec::parse(redis_url(options)?)
                .map_err(|error| format!("--redis: {error}"))?;
            let mut config = RedisConfig::default();
            if let Some(replicas) = options.wait_replicas {
                config = config.with_wait_replicas(replicas, WAIT_TIMEOUT);
            }
            let store = RedisStore::connect(&spec, config)
                .await
                .map_err(|error| format!("redis: {error}"))?;
            Arc::new(store)
        }
        _ => return Ok(None),
    };
    let mode = if matches!(
        options.variant,
        Variant::TandemSticky | Variant::TandemStickyRedis
    ) {
        Mode::Sticky
    } else {
        Mode::NonSticky
    };
    let manager = SessionManager::<SpeedyCodec>::builder(store)
        .mode(mode)
        .concurrency(options.concurrency)
        // Room for a million resident sessions (the default 256 MiB holds about
        // 200,000 of these), as the tower-sessions moka store, which is unbounded.
        .local_capacity_bytes(LOCAL_CAPACITY_BYTES)
        .build()
        .map_err(|error| error.to_string())?;
    Ok(Some(manager))
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
    A: SessionAccess<Failure: IntoResponse + Send> + FromRequestParts<S> + Send + Sync + 'static,
{
    Router::new()
        .route(
            "/cart",
            get(|session: A| respond(Action::ShowCart, session))
                .post(|session: A| respond(Action::BumpCart, session)),
        )
        .route(
            "/session",
            post(|session: A| respond(Action::Create, session)),
        )
        .route(
            "/counter",
            get(|session: A| respond(Action::ShowCounter, session))
                .post(|session: A| respond(Action::Increment, session)),
        )
        .route("/healthz", get(|| async { "ok\n" }))
}

/// Runs a handler and makes its answer an axum response.
async fn respond<A>(action: Action, session: A) -> Response
where
    A: SessionAccess<Failure: IntoResponse + Send> + Sync,
{
    match act(action, &session).await {
        Ok(reply) => reply.into_response(),
        Err(failure) => failure.into_response(),
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let status = if self.found {
            StatusCode::OK
        } else {
            StatusCode::NOT_FOUND
        };
        let mut response = (status, self.body).into_response();
        if let Some(cookie) = self
            .set_cookie
            .and_then(|text| HeaderValue::try_from(text).ok())
        {
            response.headers_mut().insert(SET_COOKIE, cookie);
        }
        response
    }
}

impl IntoResponse for Failed {
    fn into_response(self) -> Response {
        (StatusCode::INTERNAL_SERVER_ERROR, format!("{}\n", self.0)).into_response()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for NoSession {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(_parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(NoSession::extract())
    }
}

impl SessionAccess for tower_sessions::Session {
    type Failure = Failed;

    async fn cart(&self) -> Result<Option<Cart>, Failed> {
        self.get::<Cart>(CART).await.map_err(Failed::of)
    }

    async fn set_cart(&self, cart: &Cart) -> Result<(), Failed> {
        self.insert(CART, cart).await.map_err(Failed::of)
    }

    async fn counter(&self) -> Result<Option<u64>, Failed> {
        self.get::<u64>(COUNTER).await.map_err(Failed::of)
    }

    async fn set_counter(&self, value: u64) -> Result<(), Failed> {
        self.insert(COUNTER, value).await.map_err(Failed::of)
    }
}
