//! Helpers of the Redis-specific tests.

use std::time::Duration;

use tandem_core::{NodeId, StoreKey};
use tandem_redis::{ConnectError, RedisConfig, RedisSpec, RedisStore};

/// The operation timeout of these tests: the store's default.
pub const TIMEOUT: Duration = Duration::from_millis(500);
/// How often a down node is probed.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// How much longer than expected a bounded wait may take on a busy machine.
pub const LATE: Duration = Duration::from_secs(1);
/// How long a node may take to be marked up again after its server is back.
pub const COMEBACK: Duration = Duration::from_secs(5);

pub fn config() -> RedisConfig {
    RedisConfig::default()
        .with_operation_timeout(TIMEOUT)
        .with_probe_interval(PROBE_INTERVAL)
}

pub fn node(id: &str) -> NodeId {
    NodeId::new(id).unwrap()
}

pub fn key(text: &str) -> StoreKey {
    StoreKey::new(text).unwrap()
}

/// A store over `spec` (a node spec or one URL).
pub async fn try_connect(spec: &str, config: RedisConfig) -> Result<RedisStore, ConnectError> {
    RedisStore::connect(&RedisSpec::parse(spec).unwrap(), config).await
}

pub async fn connect(spec: &str, config: RedisConfig) -> RedisStore {
    try_connect(spec, config)
        .await
        .unwrap_or_else(|error| panic!("cannot connect: {error}"))
}

/// Asserts that a startup error is one line that names node `r1`.
#[track_caller]
pub fn assert_names_r1(error: &ConnectError) {
    let text = error.to_string();
    assert!(text.contains("node r1 ("), "{text}");
    assert!(!text.contains('\n'), "{text}");
}
