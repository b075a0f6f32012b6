//! Helpers of the cases: a started fixture, managers standing in for app servers,
//! requests, and polling.

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use speedy::{Readable, Writable};
use tandem_codec::SpeedyCodec;
use tandem_core::{Item, KeyPrefix, KeySpace, NodeId, RemoteStore, Route, SessionId};
use tandem_manager::{CommitError, CommitOutcome, CookieUpdate, ManagerBuilder, Mode};
use tandem_manager::{Concurrency, SessionManager};
use tandem_store_conformance::StoreFixture;

/// The managers of the cases: the default codec.
pub(crate) type Manager = SessionManager<SpeedyCodec>;

/// The key prefix every manager of the cases uses, so that a case can read what a
/// node holds for a session.
const PREFIX: &str = "tandem:";

/// What a session's key holds once its id ended (logout, id change, expiry).
pub(crate) const TOMBSTONE: &[u8] = b"\xfftandem:ended:";

/// How often the managers retry failed backups: short, to keep the suite fast.
const RETRY: Duration = Duration::from_millis(50);

/// What a busy machine may add to a bound that only proves "no hang": generous,
/// because the machine running the tests may be loaded. No case asserts that
/// something took less than a few seconds.
pub(crate) const SLACK: Duration = Duration::from_secs(5);

/// How long background writes may take to land (see [`settle`]).
const SETTLE: Duration = Duration::from_secs(10);

/// A shopping cart: the kind of attribute the cases store.
#[derive(Debug, Clone, PartialEq, Readable, Writable)]
pub(crate) struct Cart {
    pub(crate) items: Vec<(String, u32)>,
}

/// A started fixture, its store and its nodes. The fixture is kept (not only the
/// store) because dropping it may stop the servers.
pub(crate) struct Started<F> {
    fixture: F,
    pub(crate) store: Arc<dyn RemoteStore>,
    nodes: Vec<NodeId>,
}

/// Starts a fixture with `nodes` nodes and checks that its store has them.
pub(crate) async fn start<F: StoreFixture>(nodes: usize) -> Started<F> {
    let fixture = F::start(nodes).await;
    let store = fixture.store();
    let ids = store.nodes();
    assert_eq!(
        ids.len(),
        nodes,
        "the fixture was asked for {nodes} nodes, its store has {ids:?}"
    );
    Started {
        fixture,
        store,
        nodes: ids,
    }
}

impl<F: StoreFixture> Started<F> {
    /// The store's node number `index` (0 is the first).
    pub(crate) fn node(&self, index: usize) -> &NodeId {
        &self.nodes[index]
    }

    /// The fixture's operation timeout: what one operation on an unavailable node
    /// may cost.
    pub(crate) fn operation_timeout(&self) -> Duration {
        self.fixture.operation_timeout()
    }

    /// How long to wait for a node that was made available again to be used.
    pub(crate) fn recovery_limit(&self) -> Duration {
        self.fixture.recovery_time() + SLACK
    }

    /// Makes `node` unavailable, or says that `case` is skipped (from here on) and
    /// returns `false`.
    pub(crate) async fn make_unavailable(&self, node: &NodeId, case: &str) -> bool {
        match self.fixture.make_unavailable(node).await {
            Ok(()) => true,
            Err(why) => {
                let fixture = std::any::type_name::<F>();
                let message = format!(
                    "SKIPPED from the fault on: {fixture} cannot make a node unavailable ({})",
                    why.reason()
                );
                note(case, &message);
                false
            }
        }
    }

    /// Makes `node` available again; a fixture that made it unavailable must be able
    /// to.
    pub(crate) async fn make_available(&self, node: &NodeId) {
        if let Err(why) = self.fixture.make_available(node).await {
            panic!(
                "the fixture made {node} unavailable but cannot make it available: {}",
                why.reason()
            );
        }
    }

    /// Waits until the store uses `node` again after [`make_available`](Self::make_available).
    pub(crate) async fn wait_available(&self, node: &NodeId) {
        let store = &self.store;
        let up = wait_until(self.recovery_limit(), || store.is_available(node)).await;
        assert!(up.is_some(), "{node} did not come back");
    }

    /// Waits until `node` is marked down (after an operation failed on it).
    pub(crate) async fn wait_down(&self, node: &NodeId) {
        let store = &self.store;
        let limit = self.operation_timeout() + SLACK;
        let down = wait_until(limit, || !store.is_available(node)).await;
        assert!(down.is_some(), "{node} was not marked down");
    }

    /// Waits until every backup of `manager` is written, allowing for a node that
    /// was just made available again.
    pub(crate) async fn settle_after_recovery(&self, manager: &Manager) {
        settle_within(manager, self.fixture.recovery_time() + SETTLE).await;
    }

    /// What the node that `id` names holds under its session key: a session, a
    /// tombstone, or nothing.
    pub(crate) async fn stored(&self, id: &SessionId) -> Option<Item> {
        let node = NodeId::new(id.node()).expect("a session id names a valid node");
        let key = KeyPrefix::new(PREFIX)
            .expect("a valid prefix")
            .key(KeySpace::Session, id);
        self.store
            .get(&node, &key)
            .await
            .unwrap_or_else(|error| panic!("get {key} on {node}: {error}"))
    }
}

/// Says `message` about `case` on standard error, past the test harness's output
/// capture, so that a skipped check is never mistaken for a passed one.
fn note(case: &str, message: &str) {
    let _ = writeln!(std::io::stderr(), "tandem-behaviour: {case}: {message}");
}

/// A sticky-mode manager builder over `store` for an app server named `route`.
pub(crate) fn sticky(store: &Arc<dyn RemoteStore>, route: &str) -> ManagerBuilder<SpeedyCodec> {
    Manager::builder(Arc::clone(store))
        .key_prefix(KeyPrefix::new(PREFIX).expect("a valid prefix"))
        .route(Route::new(route).expect("a valid route"))
        .retry_interval(RETRY)
}

/// A non-sticky manager builder over `store`.
pub(crate) fn non_sticky(store: &Arc<dyn RemoteStore>) -> ManagerBuilder<SpeedyCodec> {
    Manager::builder(Arc::clone(store))
        .key_prefix(KeyPrefix::new(PREFIX).expect("a valid prefix"))
        .mode(Mode::NonSticky)
        .retry_interval(RETRY)
}

/// Two non-sticky app servers over `store`.
pub(crate) fn two_non_sticky(
    store: &Arc<dyn RemoteStore>,
    concurrency: Concurrency,
) -> [Manager; 2] {
    let server = || non_sticky(store).concurrency(concurrency).build().unwrap();
    [server(), server()]
}

/// Creates a session with a counter `n` and returns its id.
pub(crate) async fn create(manager: &Manager, n: u32) -> SessionId {
    let mut session = manager.load(None).await.unwrap();
    session.insert("n", &n).unwrap();
    new_id(manager.commit(session).await.unwrap().cookie)
}

/// Creates sessions until one lands on `node`; returns its id.
pub(crate) async fn create_on(manager: &Manager, node: &NodeId, n: u32) -> SessionId {
    for _ in 0..1000 {
        let id = create(manager, n).await;
        if id.node() == node.as_str() {
            return id;
        }
    }
    panic!("no new session landed on {node}");
}

/// The id a cookie update sets, which it must.
pub(crate) fn new_id(cookie: CookieUpdate) -> SessionId {
    match cookie {
        CookieUpdate::Set { id, .. } => id,
        other => panic!("expected a cookie with an id, got {other:?}"),
    }
}

/// Reads attribute `n` in a request of its own; `None` if the session is new.
pub(crate) async fn read_n(manager: &Manager, id: &SessionId) -> Option<u32> {
    let session = manager.load(Some(id.as_str())).await.unwrap();
    let n = (!session.is_new()).then(|| session.get::<u32>("n").unwrap().unwrap());
    manager.commit(session).await.unwrap();
    n
}

/// Sets attribute `n` in a request of its own; the commit's outcome.
pub(crate) async fn write_n(manager: &Manager, id: &SessionId, n: u32) -> CommitOutcome {
    let mut session = manager.load(Some(id.as_str())).await.unwrap();
    assert!(!session.is_new(), "session {id} is gone");
    session.insert("n", &n).unwrap();
    manager.commit(session).await.unwrap()
}

/// Waits until every backup of `manager` is written.
pub(crate) async fn settle(manager: &Manager) {
    settle_within(manager, SETTLE).await;
}

async fn settle_within(manager: &Manager, limit: Duration) {
    let done = wait_until(limit, || manager.pending_backups() == 0).await;
    assert!(
        done.is_some(),
        "{} backups still pending after {limit:?}",
        manager.pending_backups()
    );
}

/// Polls `condition` every 10 ms until it holds or `limit` passes; returns how long
/// it took, or `None` if it never held.
pub(crate) async fn wait_until(
    limit: Duration,
    mut condition: impl FnMut() -> bool,
) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if condition() {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    condition().then(|| started.elapsed())
}

/// Runs `requests` concurrent read-modify-write increments of `n`, spread over the
/// `servers` in turn, each also setting an attribute of its own (`seen.<i>`); returns
/// how many commits succeeded. Every failure must be a conflict on `n` alone: the
/// request's own attribute is no conflict.
pub(crate) async fn increment_concurrently(
    servers: &[Manager],
    id: &SessionId,
    requests: u32,
) -> u32 {
    let succeeded = Arc::new(AtomicU32::new(0));
    let mut tasks = Vec::new();
    for i in 0..requests {
        let server = servers[i as usize % servers.len()].clone();
        let (id, succeeded) = (id.clone(), Arc::clone(&succeeded));
        tasks.push(tokio::spawn(async move {
            let mut session = server.load(Some(id.as_str())).await.unwrap();
            let n: u32 = session.get("n").unwrap().unwrap();
            // Let the other requests run between the read and the write.
            tokio::task::yield_now().await;
            session.insert("n", &(n + 1)).unwrap();
            session.insert(&format!("seen.{i}"), &i).unwrap();
            match server.commit(session).await {
                Ok(_) => {
                    succeeded.fetch_add(1, Ordering::Relaxed);
                }
                Err(CommitError::Conflict { attributes }) => assert_eq!(attributes, ["n"]),
                Err(other) => panic!("unexpected commit error {other:?}"),
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    succeeded.load(Ordering::Relaxed)
}

/// Runs `requests` concurrent requests, spread over the `servers` in turn, each
/// setting its own attribute `pref.<i>` to `i`; every commit must succeed.
pub(crate) async fn write_distinct_concurrently(
    servers: &[Manager],
    id: &SessionId,
    requests: u32,
) {
    let mut tasks = Vec::new();
    for i in 0..requests {
        let (server, id) = (servers[i as usize % servers.len()].clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            let mut session = server.load(Some(id.as_str())).await.unwrap();
            tokio::task::yield_now().await;
            session.insert(&format!("pref.{i}"), &i).unwrap();
            server.commit(session).await.unwrap();
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}
