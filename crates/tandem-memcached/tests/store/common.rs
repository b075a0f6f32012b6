//! Helpers shared by the integration tests: each test starts its own memcached.

use std::time::{Duration, Instant};

use memcache::exp::{AsyncMetaClient, Meta};
use tandem_core::{NodeId, NodeSpec, StoreKey};
use tandem_memcached::{MemcachedConfig, MemcachedStore};
use tandem_testkit::MemcachedProcess;

/// The operation timeout of the tests: short, to keep the suite fast.
pub const TIMEOUT: Duration = Duration::from_millis(200);
/// The probe interval of the tests.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(250);
/// What a call on a paused node may take beyond the operation timeout: generous, as
/// the machine running the tests may be busy with other builds.
pub const MARGIN: Duration = Duration::from_secs(1);

pub fn config() -> MemcachedConfig {
    MemcachedConfig::default()
        .with_operation_timeout(TIMEOUT)
        .with_probe_interval(PROBE_INTERVAL)
}

pub fn node(id: &str) -> NodeId {
    NodeId::new(id).unwrap()
}

pub fn key(text: &str) -> StoreKey {
    StoreKey::new(text).unwrap()
}

pub async fn connect(spec: &str, config: MemcachedConfig) -> MemcachedStore {
    MemcachedStore::connect(&NodeSpec::parse(spec).unwrap(), config)
        .await
        .unwrap()
}

/// A store whose only node `n1` is `memcached`.
pub async fn single(memcached: &MemcachedProcess, config: MemcachedConfig) -> MemcachedStore {
    connect(&format!("n1:{}", memcached.address()), config).await
}

/// The remaining TTL of `key` in seconds as memcached reports it (`-1`: never
/// expires), read with a client of its own; `None` if the key is absent.
pub async fn remaining_ttl(memcached: &MemcachedProcess, key: &str) -> Option<i64> {
    let client = AsyncMetaClient::connect(memcached.addr()).await.unwrap();
    let result = client
        .get(key)
        .without_value()
        .meta(Meta::NONE.ttl())
        .send()
        .await
        .unwrap();
    result.hit().then(|| result.item.ttl.unwrap())
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
