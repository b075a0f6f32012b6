//! Helpers shared by the manager tests: real memcached processes, managers standing in
//! for app servers, and polling. Each test crate uses a part of them.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use tandem::memcached::{MemcachedConfig, MemcachedStore};
use tandem::{
    CookieUpdate, ManagerBuilder, Mode, NodeId, NodeSpec, RemoteStore, Route, SessionId,
    SessionManager, SpeedyCodec,
};
use tandem_testkit::MemcachedCluster;

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

pub async fn connect(cluster: &MemcachedCluster) -> Arc<MemcachedStore> {
    let config = MemcachedConfig::default()
        .with_operation_timeout(TIMEOUT)
        .with_probe_interval(PROBE);
    let spec = NodeSpec::parse(&cluster.node_spec()).unwrap();
    Arc::new(MemcachedStore::connect(&spec, config).await.unwrap())
}

/// A sticky-mode manager builder for an app server named `route`.
pub fn server(store: &Arc<MemcachedStore>, route: &str) -> ManagerBuilder<SpeedyCodec> {
    Manager::builder(Arc::clone(store) as Arc<dyn RemoteStore>)
        .route(Route::new(route).unwrap())
        .retry_interval(RETRY)
}

/// A non-sticky manager builder.
pub fn non_sticky(store: &Arc<MemcachedStore>) -> ManagerBuilder<SpeedyCodec> {
    Manager::builder(Arc::clone(store) as Arc<dyn RemoteStore>)
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

/// Polls `condition` every 10 ms until it holds or `limit` passes; returns how long
/// it took, or `None` if it never held.
pub async fn wait_until(limit: Duration, mut condition: impl FnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if condition() {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    condition().then(|| started.elapsed())
}
