//! Abuse through HTTP, against real memcached: floods of random and forged cookies,
//! unknown but well-formed ids, oversized cookies. Every operation that reaches the
//! store is recorded, so the tests can say exactly what an attacker made it do.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::{Request, StatusCode, header};
use parking_lot::Mutex;
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use regex::Regex;
use tandem_codec::SpeedyCodec;
use tandem_core::{
    AddOutcome, CasOutcome, CasToken, Item, NodeId, NodeStatus, Precondition, RemoteStore,
    StoreError, StoreKey, Ttl, WriteItem, WriteOutcome,
};
use tandem_manager::SessionManager;
use tandem_memcached::MemcachedStore;
use tandem_testkit::MemcachedCluster;
use tandem_tower::{Session, SessionError, SessionLayer};
use tower::ServiceExt;

/// A store that records the key of every operation, then passes it to memcached.
struct Recording {
    inner: MemcachedStore,
    keys: Mutex<Vec<String>>,
}

impl Recording {
    fn record(&self, key: &StoreKey) {
        self.keys.lock().push(key.as_str().to_owned());
    }

    /// The keys recorded, but for the peer feed's items: the manager reads those on a
    /// timer, whatever clients send.
    fn keys(&self) -> Vec<String> {
        self.keys
            .lock()
            .iter()
            .filter(|key| !key.starts_with("tandem:feed:"))
            .cloned()
            .collect()
    }
}

#[async_trait]
impl RemoteStore for Recording {
    async fn get(&self, node: &NodeId, key: &StoreKey) -> Result<Option<Item>, StoreError> {
        self.record(key);
        self.inner.get(node, key).await
    }

    async fn set(
        &self,
        node: &NodeId,
        key: &StoreKey,
        value: &[u8],
        ttl: Ttl,
    ) -> Result<(), StoreError> {
        self.record(key);
        self.inner.set(node, key, value, ttl).await
    }

    async fn add(
        &self,
        node: &NodeId,
        key: &StoreKey,
        value: &[u8],
        ttl: Ttl,
    ) -> Result<AddOutcome, StoreError> {
        self.record(key);
        self.inner.add(node, key, value, ttl).await
    }

    async fn cas(
        &self,
        node: &NodeId,
        key: &StoreKey,
        value: &[u8],
        ttl: Ttl,
        cas: CasToken,
    ) -> Result<CasOutcome, StoreError> {
        self.record(key);
        self.inner.cas(node, key, value, ttl, cas).await
    }

    async fn delete(&self, node: &NodeId, key: &StoreKey) -> Result<bool, StoreError> {
        self.record(key);
        self.inner.delete(node, key).await
    }

    async fn touch(&self, node: &NodeId, key: &StoreKey, ttl: Ttl) -> Result<bool, StoreError> {
        self.record(key);
        self.inner.touch(node, key, ttl).await
    }

    async fn write(
        &self,
        node: &NodeId,
        key: &StoreKey,
        value: &[u8],
        ttl: Ttl,
        precondition: Precondition,
    ) -> Result<WriteOutcome, StoreError> {
        self.record(key);
        self.inner.write(node, key, value, ttl, precondition).await
    }

    async fn write_many(
        &self,
        node: &NodeId,
        items: &[WriteItem<'_>],
    ) -> Vec<Result<WriteOutcome, StoreError>> {
        for item in items {
            self.record(item.key);
        }
        self.inner.write_many(node, items).await
    }

    async fn delete_if(
        &self,
        node: &NodeId,
        key: &StoreKey,
        cas: CasToken,
    ) -> Result<CasOutcome, StoreError> {
        self.record(key);
        self.inner.delete_if(node, key, cas).await
    }

    async fn append(
        &self,
        node: &NodeId,
        key: &StoreKey,
        value: &[u8],
        ttl: Ttl,
    ) -> Result<(), StoreError> {
        self.record(key);
        self.inner.append(node, key, value, ttl).await
    }

    async fn get_with_ttl(
        &self,
        node: &NodeId,
        key: &StoreKey,
    ) -> Result<Option<(Item, Ttl)>, StoreError> {
        self.record(key);
        self.inner.get_with_ttl(node, key).await
    }

    async fn get_and_touch(
        &self,
        node: &NodeId,
        key: &StoreKey,
        ttl: Ttl,
    ) -> Result<Option<Item>, StoreError> {
        self.record(key);
        self.inner.get_and_touch(node, key, ttl).await
    }

    fn nodes(&self) -> Vec<NodeId> {
        self.inner.nodes()
    }

    fn is_available(&self, node: &NodeId) -> bool {
        self.inner.is_available(node)
    }

    fn node_status(&self) -> Vec<NodeStatus> {
        self.inner.node_status()
    }
}

async fn cart(session: Session<SpeedyCodec>) -> Result<String, SessionError> {
    Ok(format!("{:?}", session.get::<u32>("n").await?))
}

/// How long the manager remembers an id unknown to memcached (the default, set
/// explicitly because the tests count lookups by it).
const NEGATIVE_CACHE_TTL: Duration = Duration::from_secs(2);

/// The most lookups of one unknown id a flood of requests taking `flood` can cause: a
/// lookup that finds nothing is remembered for [`NEGATIVE_CACHE_TTL`], so the next one
/// of the same id comes at least that much later. (Rounded up, to leave room for the
/// cache's clock.)
fn most_lookups(flood: Duration) -> u128 {
    1 + flood.as_millis().div_ceil(NEGATIVE_CACHE_TTL.as_millis())
}

async fn app(cluster: &MemcachedCluster) -> (Router, Arc<Recording>) {
    let store = Arc::new(Recording {
        inner: common::store(cluster).await,
        keys: Mutex::new(Vec::new()),
    });
    let manager =
        SessionManager::<SpeedyCodec>::builder(Arc::clone(&store) as Arc<dyn RemoteStore>)
            .negative_cache_ttl(NEGATIVE_CACHE_TTL)
            .build()
            .unwrap();
    let layer = SessionLayer::builder(manager).build().unwrap();
    (Router::new().route("/cart", get(cart)).layer(layer), store)
}

/// Sends `GET /cart` with this raw `Cookie` header; returns the status.
async fn request(app: &Router, cookie: &[u8]) -> StatusCode {
    let mut builder = Request::get("/cart");
    if let Ok(value) = http::HeaderValue::from_bytes(cookie) {
        builder = builder.header(header::COOKIE, value);
    }
    let response = app
        .clone()
        .oneshot(builder.body(Body::empty()).unwrap())
        .await
        .unwrap();
    response.status()
}

/// Random cookie headers: printable garbage, plausible-looking values, long ones.
fn random_cookies(count: usize) -> Vec<Vec<u8>> {
    let strategy = proptest::prop_oneof![
        "tandem_session=[ -~]{0,80}",
        "tandem_session=[A-Za-z0-9._-]{1,80}",
        "tandem_session=[A-Za-z0-9]{20,24}-[a-z0-9]{0,8}(\\.[a-z0-9]{0,12})?",
        "[ -~]{0,200}",
        "tandem_session=[A-Za-z0-9]{22}-n1[^A-Za-z0-9][ -~]{0,20}",
    ];
    let mut runner = TestRunner::deterministic();
    (0..count)
        .map(|_| {
            strategy
                .new_tree(&mut runner)
                .unwrap()
                .current()
                .into_bytes()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_forged_cookies_send_nothing_attacker_chosen_to_memcached() {
    let cluster = MemcachedCluster::start(2);
    let (app, store) = app(&cluster).await;
    let id_shape = Regex::new(r"^tandem:[A-Za-z0-9]{22}-n[12]$").unwrap();
    let cookies = random_cookies(10_000);
    let started = Instant::now();
    for cookie in &cookies {
        assert_eq!(request(&app, cookie).await, StatusCode::OK);
    }
    let most = most_lookups(started.elapsed());
    let keys = store.keys();
    // Only ids of the exact shape, naming a configured node, may be looked up.
    assert!(keys.iter().all(|key| id_shape.is_match(key)), "{keys:?}");
    // And only ids the attacker actually sent, each at most once per negative-cache
    // window of the flood.
    let sent: Vec<&str> = cookies
        .iter()
        .filter_map(|cookie| std::str::from_utf8(cookie).ok())
        .collect();
    let mut distinct = keys.clone();
    distinct.sort();
    distinct.dedup();
    for key in &distinct {
        let id = key.strip_prefix("tandem:").unwrap();
        assert!(
            sent.iter().any(|cookie| cookie.contains(id)),
            "{id} was never sent"
        );
        let lookups = keys.iter().filter(|looked_up| *looked_up == key).count();
        assert!(
            lookups as u128 <= most,
            "{id} looked up {lookups} times, at most {most} expected"
        );
    }
    println!(
        "{} forged cookies: {} memcached lookups of {} distinct well-formed ids",
        cookies.len(),
        keys.len(),
        distinct.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_one_unknown_id_reaches_memcached_once() {
    let cluster = MemcachedCluster::start(1);
    let (app, store) = app(&cluster).await;
    let cookie = b"tandem_session=abcdefghijABCDEFGHIJ01-n1";
    let started = Instant::now();
    for _ in 0..10_000 {
        assert_eq!(request(&app, cookie).await, StatusCode::OK);
    }
    // The negative cache answers for 2 s: at most one lookup per window.
    let most = most_lookups(started.elapsed());
    let lookups = store.keys().len() as u128;
    assert!(
        (1..=most).contains(&lookups),
        "{lookups} lookups, at most {most} expected"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_cookies_are_no_session_and_no_lookup() {
    let cluster = MemcachedCluster::start(1);
    let (app, store) = app(&cluster).await;
    let long_id = format!("tandem_session={}-n1", "a".repeat(8 * 1024));
    let many = (0..500)
        .map(|i| format!("c{i}=abcdefghijABCDEFGHIJ01-n1"))
        .collect::<Vec<_>>()
        .join("; ");
    for cookie in [long_id, many] {
        assert_eq!(request(&app, cookie.as_bytes()).await, StatusCode::OK);
    }
    assert_eq!(store.keys(), Vec::<String>::new());
}
