//! Helpers shared by the root package's integration tests: the memcached store they
//! run against, managers standing in for app servers, sessions and their keys, and
//! polling (re-exported from `tandem-testkit`, where the helpers that need nothing of
//! Tandem live). Each test crate uses a part of them.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use tandem::memcached::{MemcachedConfig, MemcachedStore};
use tandem::{
    CookieUpdate, KeyPrefix, ManagerBuilder, Mode, NodeId, NodeSpec, RemoteStore, Route, SessionId,
    SessionManager, SpeedyCodec,
    model::{KeySpace, StoreKey},
};
use tandem_testkit::MemcachedCluster;
// Not every test crate polls both ways.
#[allow(unused_imports)]
pub use tandem_testkit::{wait_until, wait_until_async};

/// The operation timeout of the tests: short, to keep the suite fast.
pub const TIMEOUT: Duration = Duration::from_millis(200);
/// How often a down node is probed.
pub const PROBE: Duration = Duration::from_millis(100);
/// How often failed backups are retried.
pub const RETRY: Duration = Duration::from_millis(50);

pub type Manager = SessionManager<SpeedyCodec>;

pub fn node(id: &str) -> NodeId {
    NodeId::new(id).unwrap()
}

/// The store settings of the tests: [`TIMEOUT`] and [`PROBE`].
pub fn store_config() -> MemcachedConfig {
    MemcachedConfig::default()
        .with_operation_timeout(TIMEOUT)
        .with_probe_interval(PROBE)
}

/// A store over every node of `cluster` with [`store_config`].
pub async fn connect(cluster: &MemcachedCluster) -> Arc<MemcachedStore> {
    connect_with(cluster, store_config()).await
}

/// A store over every node of `cluster` with `config` (usually [`store_config`] with
/// a change).
pub async fn connect_with(
    cluster: &MemcachedCluster,
    config: MemcachedConfig,
) -> Arc<MemcachedStore> {
    let spec = NodeSpec::parse(&cluster.node_spec()).unwrap();
    Arc::new(MemcachedStore::connect(&spec, config).await.unwrap())
}

/// A sticky-mode manager builder for an app server named `route`.
pub fn server(store: &Arc<MemcachedStore>, route: &str) -> ManagerBuilder<SpeedyCodec> {
    sticky_over(Arc::clone(store) as Arc<dyn RemoteStore>, route)
}

/// A non-sticky manager builder.
pub fn non_sticky(store: &Arc<MemcachedStore>) -> ManagerBuilder<SpeedyCodec> {
    non_sticky_over(Arc::clone(store) as Arc<dyn RemoteStore>)
}

/// [`server`] over any store (a wrapper that injects faults, for example).
pub fn sticky_over(store: Arc<dyn RemoteStore>, route: &str) -> ManagerBuilder<SpeedyCodec> {
    Manager::builder(store)
        .route(Route::new(route).unwrap())
        .retry_interval(RETRY)
}

/// [`non_sticky`] over any store.
pub fn non_sticky_over(store: Arc<dyn RemoteStore>) -> ManagerBuilder<SpeedyCodec> {
    Manager::builder(store)
        .mode(Mode::NonSticky)
        .retry_interval(RETRY)
}

/// memcached operations sent so far, over every node.
pub fn operations(store: &MemcachedStore) -> u64 {
    store.health().iter().map(|node| node.operations).sum()
}

/// Creates a session with a counter `n` and returns its id.
pub async fn create(manager: &Manager, n: u32) -> SessionId {
    let mut session = manager.load(None).await.unwrap();
    session.insert("n", &n).unwrap();
    new_id(manager.commit(session).await.unwrap().cookie)
}

/// Creates sessions until one has its primary copy on `node`.
pub async fn create_on(manager: &Manager, node: &str, n: u32) -> SessionId {
    for _ in 0..200 {
        let id = create(manager, n).await;
        if id.node() == node {
            return id;
        }
    }
    panic!("no session landed on {node}");
}

/// The storage key of `id` in `space`, as the manager builds it (default prefix).
pub fn key(space: KeySpace, id: &SessionId) -> StoreKey {
    KeyPrefix::new("tandem:").unwrap().key(space, id)
}

pub fn new_id(cookie: CookieUpdate) -> SessionId {
    match cookie {
        CookieUpdate::Set { id, .. } => id,
        other => panic!("expected a cookie with an id, got {other:?}"),
    }
}

/// Reads attribute `n` in a request of its own; `None` if the session is new.
pub async fn read_n(manager: &Manager, id: &SessionId) -> Option<u32> {
    let session = manager.load(Some(id.as_str())).await.unwrap();
    let n = (!session.is_new()).then(|| session.get::<u32>("n").unwrap().unwrap());
    manager.commit(session).await.unwrap();
    n
}

/// Sets attribute `n` in a request of its own.
pub async fn write_n(manager: &Manager, id: &SessionId, n: u32) {
    let mut session = manager.load(Some(id.as_str())).await.unwrap();
    assert!(!session.is_new(), "session {id} is gone");
    session.insert("n", &n).unwrap();
    manager.commit(session).await.unwrap();
}

/// Waits until every backup of `manager` is written.
pub async fn settle<C: tandem::Codec>(manager: &SessionManager<C>) {
    let done = wait_until(Duration::from_secs(5), || manager.pending_backups() == 0).await;
    assert!(
        done.is_some(),
        "{} backups still pending",
        manager.pending_backups()
    );
}
