//! memcached-specific behaviour of the operations: the 30-day TTL rule, where keys
//! land, the item size limit and what memcached does beyond it, pipelined batches.
//! The `RemoteStore` contract itself is checked by the conformance suite
//! (`tests/conformance.rs`).

use std::time::Duration;

use tandem_core::{
    AddOutcome, CasToken, NodeSpec, Precondition, RemoteStore, SetItem, StoreError, StoreKey, Ttl,
};
use tandem_memcached::{ConnectError, MemcachedConfig, MemcachedStore};
use tandem_testkit::{MemcachedCluster, MemcachedProcess};

use crate::common::{LATE, beside_a_timeout, config, connect, key, node, single};

const THIRTY_ONE_DAYS: Duration = Duration::from_secs(31 * 24 * 3600);

#[tokio::test]
async fn get_and_touch_is_one_round_trip() {
    let memcached = MemcachedProcess::start();
    let store = single(&memcached, config()).await;
    let (n1, k) = (node("n1"), key("gat"));
    store
        .set(&n1, &k, b"v", Ttl::After(Duration::from_secs(2)))
        .await
        .unwrap();
    let operations = store.node_health(&n1).unwrap().operations;

    let item = store
        .get_and_touch(&n1, &k, Ttl::After(Duration::from_secs(60)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(item.value, b"v");
    assert_eq!(store.node_health(&n1).unwrap().operations, operations + 1);
    assert!(memcached.remaining_ttl("gat").unwrap() > 50);
}

#[tokio::test]
async fn ttls_beyond_thirty_days_are_kept_not_expired_at_once() {
    let memcached = MemcachedProcess::start();
    let store = single(&memcached, config()).await;
    let (n1, k) = (node("n1"), key("long"));

    store
        .set(&n1, &k, b"v", Ttl::After(THIRTY_ONE_DAYS))
        .await
        .unwrap();
    assert_eq!(store.get(&n1, &k).await.unwrap().unwrap().value, b"v");
    // The lifetime plus the second the store adds for memcached's clock.
    let expected =
        i64::try_from((THIRTY_ONE_DAYS + tandem_memcached::EXPIRY_CLOCK_SLACK).as_secs()).unwrap();
    let remaining = memcached.remaining_ttl("long").unwrap();
    assert!(
        (expected - 5..=expected).contains(&remaining),
        "remaining {remaining} s, expected about {expected} s"
    );

    let forty_days = Duration::from_secs(40 * 24 * 3600);
    assert!(store.touch(&n1, &k, Ttl::After(forty_days)).await.unwrap());
    let remaining = memcached.remaining_ttl("long").unwrap();
    assert!(remaining > expected, "touch extended it to {remaining} s");

    assert_eq!(
        store
            .add(&n1, &key("long-add"), b"v", Ttl::After(THIRTY_ONE_DAYS))
            .await
            .unwrap(),
        AddOutcome::Stored
    );
    assert!(memcached.remaining_ttl("long-add").unwrap() > expected - 5);
}

#[tokio::test]
async fn never_means_no_expiry() {
    let memcached = MemcachedProcess::start();
    let store = single(&memcached, config()).await;
    let (n1, k) = (node("n1"), key("forever"));

    store.set(&n1, &k, b"v", Ttl::Never).await.unwrap();
    assert_eq!(memcached.remaining_ttl("forever"), Some(-1));

    store
        .set(&n1, &k, b"v", Ttl::After(Duration::from_secs(60)))
        .await
        .unwrap();
    // 60 s, plus the second the store adds for memcached's once-a-second clock.
    assert_eq!(memcached.remaining_ttl("forever"), Some(61));
    assert!(store.touch(&n1, &k, Ttl::Never).await.unwrap());
    assert_eq!(memcached.remaining_ttl("forever"), Some(-1));
    assert_eq!(store.get(&n1, &k).await.unwrap().unwrap().value, b"v");
}

#[tokio::test]
async fn each_key_goes_to_exactly_the_named_node() {
    let cluster = MemcachedCluster::start(2);
    let store = connect(&cluster.node_spec(), config()).await;
    let (n1, n2, k) = (node("n1"), node("n2"), key("session:x"));
    assert_eq!(store.nodes(), [n1.clone(), n2.clone()]);

    store.set(&n1, &k, b"on n1", Ttl::Never).await.unwrap();
    assert_eq!(store.get(&n2, &k).await.unwrap(), None);
    assert_eq!(cluster.node("n1").stats()["curr_items"], "1");
    assert_eq!(cluster.node("n2").stats()["curr_items"], "0");

    store.set(&n2, &k, b"on n2", Ttl::Never).await.unwrap();
    assert_eq!(store.get(&n1, &k).await.unwrap().unwrap().value, b"on n1");
    assert_eq!(store.get(&n2, &k).await.unwrap().unwrap().value, b"on n2");
    assert!(store.delete(&n2, &k).await.unwrap());
    assert!(store.get(&n1, &k).await.unwrap().is_some());
}

#[tokio::test]
async fn an_unknown_node_has_no_health() {
    // Nothing is contacted: connect only resolves the address.
    let store = connect("n1:127.0.0.1:11211", config()).await;
    assert!(store.node_health(&node("n9")).is_none());
    assert!(store.node_health(&node("n1")).is_some());
}

#[tokio::test]
async fn oversized_values_are_refused_before_they_are_sent() {
    let memcached = MemcachedProcess::start();
    let store = single(&memcached, config()).await;
    let (n1, k) = (node("n1"), key("big"));
    let limit = store.max_item_size();
    assert_eq!(limit, MemcachedConfig::default().max_value_size());

    let over = vec![b'x'; limit + 1];
    let too_large = |result: Result<(), StoreError>| {
        assert!(
            matches!(result, Err(StoreError::TooLarge { .. })),
            "{result:?}"
        );
    };
    too_large(store.set(&n1, &k, &over, Ttl::Never).await);
    too_large(store.add(&n1, &k, &over, Ttl::Never).await.map(|_| ()));
    too_large(
        store
            .cas(&n1, &k, &over, Ttl::Never, CasToken(1))
            .await
            .map(|_| ()),
    );
    for precondition in [
        Precondition::None,
        Precondition::Absent,
        Precondition::Cas(CasToken(1)),
    ] {
        too_large(
            store
                .write(&n1, &k, &over, Ttl::Never, precondition)
                .await
                .map(|_| ()),
        );
    }
    too_large(store.append(&n1, &k, &over, Ttl::Never).await);
    let health = store.node_health(&n1).unwrap();
    assert!(health.up);
    assert_eq!(
        (health.operations, health.failures),
        (0, 0),
        "refused before sending: {health:?}"
    );
}

#[tokio::test]
async fn a_value_memcached_refuses_is_too_large_and_the_node_stays_up() {
    let memcached = MemcachedProcess::start();
    // Misconfigured on purpose: the server runs with memcached's default `-I 1m`.
    let two_mib = 2 * 1024 * 1024;
    let store = single(&memcached, config().with_item_size_max(two_mib)).await;
    let (n1, k) = (node("n1"), key("big"));

    store.set(&n1, &k, b"good copy", Ttl::Never).await.unwrap();
    let size = 1536 * 1024;
    let error = store
        .set(&n1, &k, &vec![b'x'; size], Ttl::Never)
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::TooLarge { size: reported, .. } if reported == size),
        "{error:?}"
    );
    assert!(!error.is_node_failure());
    assert!(store.is_available(&n1));
    let health = store.node_health(&n1).unwrap();
    assert_eq!((health.failures, health.marked_down), (1, 0));
    let (message, _) = health.last_error.unwrap();
    assert!(message.contains("-I"), "{message}");

    // memcached drops the stored copy when it refuses a new value: this is why the
    // store refuses oversized values itself and item_size_max must match the servers.
    assert_eq!(store.get(&n1, &k).await.unwrap(), None);
    store.set(&n1, &k, b"again", Ttl::Never).await.unwrap();
    assert_eq!(store.get(&n1, &k).await.unwrap().unwrap().value, b"again");
}

#[tokio::test]
async fn connect_rejects_unusable_settings() {
    let spec = NodeSpec::parse("n1:127.0.0.1:11211").unwrap();
    let zero_timeout = config().with_operation_timeout(Duration::ZERO);
    let error = MemcachedStore::connect(&spec, zero_timeout)
        .await
        .unwrap_err();
    assert!(matches!(error, ConnectError::InvalidConfig { .. }));
    assert!(error.to_string().contains("timeout"), "{error}");
}

#[tokio::test]
async fn set_many_pipelines_a_batch_and_refuses_oversized_items_alone() {
    let memcached = MemcachedProcess::start();
    let store = single(&memcached, config()).await;
    let n1 = node("n1");
    let keys: Vec<StoreKey> = (0..20).map(|i| key(&format!("batch{i}"))).collect();
    let big = vec![0u8; store.config().max_value_size() + 1];
    let mut items: Vec<SetItem<'_>> = keys
        .iter()
        .map(|key| SetItem {
            key,
            value: b"v",
            ttl: Ttl::Never,
        })
        .collect();
    items[7].value = &big;
    let operations = store.node_health(&n1).unwrap().operations;
    let results = store.set_many(&n1, &items).await;
    assert_eq!(results.len(), 20);
    assert!(matches!(results[7], Err(StoreError::TooLarge { .. })));
    assert!(
        results
            .iter()
            .enumerate()
            .all(|(i, result)| i == 7 || result.is_ok())
    );
    // One exchange for the nineteen that were sent.
    assert_eq!(store.node_health(&n1).unwrap().operations, operations + 1);
    for (i, key) in keys.iter().enumerate() {
        let stored = store.get(&n1, key).await.unwrap();
        assert_eq!(stored.is_some(), i != 7, "item {i}");
    }

    memcached.pause();
    let before = store.node_health(&n1).unwrap();
    let batch = beside_a_timeout(store.set_many(&n1, &items[..3])).await;
    assert!(
        batch
            .output
            .iter()
            .all(|result| result.as_ref().is_err_and(StoreError::is_node_failure))
    );
    // On a hung node too the batch is one exchange, which costs one timeout.
    let after = store.node_health(&n1).unwrap();
    assert_eq!(
        (after.operations, after.failures),
        (before.operations + 1, before.failures + 1),
        "{after:?}"
    );
    assert!(batch.late() < LATE, "{}", batch.timings());
    memcached.resume();
}
