//! Every `RemoteStore` operation against a real memcached.

use std::time::{Duration, Instant};

use tandem_core::{
    AddOutcome, CasOutcome, CasToken, MAX_KEY_LEN, NodeSpec, RemoteStore, SetItem, StoreError,
    StoreKey, Ttl,
};
use tandem_memcached::{ConnectError, MemcachedConfig, MemcachedStore};
use tandem_testkit::{MemcachedCluster, MemcachedProcess};

use crate::common::{TIMEOUT, config, connect, key, node, remaining_ttl, single};

const THIRTY_ONE_DAYS: Duration = Duration::from_secs(31 * 24 * 3600);

#[tokio::test]
async fn set_then_get_round_trips_bytes_and_cas_tokens() {
    let memcached = MemcachedProcess::start();
    let store = single(&memcached, config()).await;
    let (n1, k) = (node("n1"), key("session:1"));

    assert_eq!(store.get(&n1, &k).await.unwrap(), None);
    let value: Vec<u8> = (0..=255).collect();
    store.set(&n1, &k, &value, Ttl::Never).await.unwrap();
    let first = store.get(&n1, &k).await.unwrap().unwrap();
    assert_eq!(first.value, value);

    store.set(&n1, &k, b"second", Ttl::Never).await.unwrap();
    let second = store.get(&n1, &k).await.unwrap().unwrap();
    assert_eq!(second.value, b"second");
    assert_ne!(second.cas, first.cas, "a write changes the CAS token");

    store.set(&n1, &k, b"", Ttl::Never).await.unwrap();
    assert_eq!(store.get(&n1, &k).await.unwrap().unwrap().value, b"");
}

#[tokio::test]
async fn add_on_an_existing_key_reports_exists_and_writes_nothing() {
    let memcached = MemcachedProcess::start();
    let store = single(&memcached, config()).await;
    let (n1, k) = (node("n1"), key("lock:1"));
    let ttl = Ttl::After(Duration::from_secs(30));

    assert_eq!(
        store.add(&n1, &k, b"first", ttl).await.unwrap(),
        AddOutcome::Stored
    );
    assert_eq!(
        store.add(&n1, &k, b"second", ttl).await.unwrap(),
        AddOutcome::Exists
    );
    assert_eq!(store.get(&n1, &k).await.unwrap().unwrap().value, b"first");
}

#[tokio::test]
async fn cas_detects_a_conflicting_write() {
    let memcached = MemcachedProcess::start();
    let store = single(&memcached, config()).await;
    let (n1, k) = (node("n1"), key("session:cas"));
    let ttl = Ttl::After(Duration::from_secs(60));

    store.set(&n1, &k, b"v1", ttl).await.unwrap();
    let stale = store.get(&n1, &k).await.unwrap().unwrap().cas;
    store.set(&n1, &k, b"v2", ttl).await.unwrap();

    assert_eq!(
        store.cas(&n1, &k, b"lost", ttl, stale).await.unwrap(),
        CasOutcome::Conflict
    );
    assert_eq!(store.get(&n1, &k).await.unwrap().unwrap().value, b"v2");

    let fresh = store.get(&n1, &k).await.unwrap().unwrap().cas;
    assert_eq!(
        store.cas(&n1, &k, b"v3", ttl, fresh).await.unwrap(),
        CasOutcome::Stored
    );
    assert_eq!(store.get(&n1, &k).await.unwrap().unwrap().value, b"v3");

    assert!(store.delete(&n1, &k).await.unwrap());
    assert_eq!(
        store.cas(&n1, &k, b"v4", ttl, fresh).await.unwrap(),
        CasOutcome::NotFound
    );
    assert_eq!(
        store
            .cas(&n1, &k, b"v4", ttl, CasToken(u64::MAX))
            .await
            .unwrap(),
        CasOutcome::NotFound
    );
    assert_eq!(store.get(&n1, &k).await.unwrap(), None);
}

#[tokio::test]
async fn delete_reports_whether_the_key_existed() {
    let memcached = MemcachedProcess::start();
    let store = single(&memcached, config()).await;
    let (n1, k) = (node("n1"), key("session:del"));

    store.set(&n1, &k, b"v", Ttl::Never).await.unwrap();
    assert!(store.delete(&n1, &k).await.unwrap());
    assert_eq!(store.get(&n1, &k).await.unwrap(), None);
    assert!(!store.delete(&n1, &k).await.unwrap());
}

#[tokio::test]
async fn touch_extends_the_ttl_without_rewriting() {
    let memcached = MemcachedProcess::start();
    let store = single(&memcached, config()).await;
    let (n1, touched, untouched) = (node("n1"), key("touched"), key("untouched"));
    let two_seconds = Ttl::After(Duration::from_secs(2));

    let written = Instant::now();
    store.set(&n1, &touched, b"t", two_seconds).await.unwrap();
    store.set(&n1, &untouched, b"u", two_seconds).await.unwrap();
    let cas = store.get(&n1, &touched).await.unwrap().unwrap().cas;

    // memcached's clock ticks once a second, so a 2 s item lives between 1 and 3 s:
    // touch well inside that window, check after it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ten_seconds = Ttl::After(Duration::from_secs(10));
    assert!(store.touch(&n1, &touched, ten_seconds).await.unwrap());
    assert!(!store.touch(&n1, &key("absent"), ten_seconds).await.unwrap());
    assert!(remaining_ttl(&memcached, "touched").await.unwrap() > 8);

    tokio::time::sleep(Duration::from_millis(3200).saturating_sub(written.elapsed())).await;
    let item = store.get(&n1, &touched).await.unwrap().unwrap();
    assert_eq!(item.value, b"t");
    assert_eq!(item.cas, cas, "touch must not rewrite the item");
    assert_eq!(store.get(&n1, &untouched).await.unwrap(), None);
}

#[tokio::test]
async fn get_and_touch_reads_and_extends_the_ttl_in_one_operation() {
    let memcached = MemcachedProcess::start();
    let store = single(&memcached, config()).await;
    let (n1, k) = (node("n1"), key("gat"));
    store
        .set(&n1, &k, b"v", Ttl::After(Duration::from_secs(2)))
        .await
        .unwrap();
    let cas = store.get(&n1, &k).await.unwrap().unwrap().cas;
    let operations = store.node_health(&n1).unwrap().operations;

    let item = store
        .get_and_touch(&n1, &k, Ttl::After(Duration::from_secs(60)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((item.value.as_slice(), item.cas), (&b"v"[..], cas));
    assert_eq!(store.node_health(&n1).unwrap().operations, operations + 1);
    assert!(remaining_ttl(&memcached, "gat").await.unwrap() > 50);
    let absent = store
        .get_and_touch(&n1, &key("absent"), Ttl::Never)
        .await
        .unwrap();
    assert_eq!(absent, None);
}

#[tokio::test]
async fn items_expire_after_their_ttl() {
    let memcached = MemcachedProcess::start();
    let store = single(&memcached, config()).await;
    let (n1, k) = (node("n1"), key("short"));

    store
        .set(&n1, &k, b"v", Ttl::After(Duration::from_secs(1)))
        .await
        .unwrap();
    assert!(store.get(&n1, &k).await.unwrap().is_some());
    // A 1 s item is gone within 2 s (memcached's clock has a 1 s resolution).
    let started = Instant::now();
    let mut gone = false;
    while !gone && started.elapsed() < Duration::from_millis(2500) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        gone = store.get(&n1, &k).await.unwrap().is_none();
    }
    assert!(gone, "a 1 s item still there after {:?}", started.elapsed());
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
    let expected = i64::try_from(THIRTY_ONE_DAYS.as_secs()).unwrap();
    let remaining = remaining_ttl(&memcached, "long").await.unwrap();
    assert!(
        (expected - 5..=expected).contains(&remaining),
        "remaining {remaining} s, expected about {expected} s"
    );

    let forty_days = Duration::from_secs(40 * 24 * 3600);
    assert!(store.touch(&n1, &k, Ttl::After(forty_days)).await.unwrap());
    let remaining = remaining_ttl(&memcached, "long").await.unwrap();
    assert!(remaining > expected, "touch extended it to {remaining} s");

    assert_eq!(
        store
            .add(&n1, &key("long-add"), b"v", Ttl::After(THIRTY_ONE_DAYS))
            .await
            .unwrap(),
        AddOutcome::Stored
    );
    assert!(remaining_ttl(&memcached, "long-add").await.unwrap() > expected - 5);
}

#[tokio::test]
async fn never_means_no_expiry() {
    let memcached = MemcachedProcess::start();
    let store = single(&memcached, config()).await;
    let (n1, k) = (node("n1"), key("forever"));

    store.set(&n1, &k, b"v", Ttl::Never).await.unwrap();
    assert_eq!(remaining_ttl(&memcached, "forever").await, Some(-1));

    store
        .set(&n1, &k, b"v", Ttl::After(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(remaining_ttl(&memcached, "forever").await, Some(60));
    assert!(store.touch(&n1, &k, Ttl::Never).await.unwrap());
    assert_eq!(remaining_ttl(&memcached, "forever").await, Some(-1));
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
async fn an_unknown_node_is_an_error_not_a_panic() {
    let memcached = MemcachedProcess::start();
    let store = single(&memcached, config()).await;
    let (n9, k) = (node("n9"), key("k"));

    let error = store.set(&n9, &k, b"v", Ttl::Never).await.unwrap_err();
    assert_eq!(error, StoreError::UnknownNode { node: "n9".into() });
    assert!(matches!(
        store.get(&n9, &k).await,
        Err(StoreError::UnknownNode { .. })
    ));
    assert!(!store.is_available(&n9));
    assert!(store.node_health(&n9).is_none());
    assert!(store.is_available(&node("n1")));
}

#[tokio::test]
async fn values_over_the_limit_are_refused_and_the_stored_copy_stays() {
    let memcached = MemcachedProcess::start();
    let store = single(&memcached, config()).await;
    let n1 = node("n1");
    let k = key(&"k".repeat(MAX_KEY_LEN));
    let limit = store.max_item_size();
    assert_eq!(limit, MemcachedConfig::default().max_value_size());

    store.set(&n1, &k, b"good copy", Ttl::Never).await.unwrap();
    let too_large = vec![b'x'; limit + 1];
    let error = store
        .set(&n1, &k, &too_large, Ttl::Never)
        .await
        .unwrap_err();
    assert_eq!(
        error,
        StoreError::TooLarge {
            size: limit + 1,
            limit
        }
    );
    let cas = store.get(&n1, &k).await.unwrap().unwrap().cas;
    assert!(matches!(
        store.cas(&n1, &k, &too_large, Ttl::Never, cas).await,
        Err(StoreError::TooLarge { .. })
    ));
    assert!(matches!(
        store.add(&n1, &key("other"), &too_large, Ttl::Never).await,
        Err(StoreError::TooLarge { .. })
    ));
    assert_eq!(
        store.get(&n1, &k).await.unwrap().unwrap().value,
        b"good copy"
    );
    let health = store.node_health(&n1).unwrap();
    assert!(health.up);
    assert_eq!(health.failures, 0, "refused before sending: {health:?}");

    // The limit is real: the largest accepted value fits a default memcached even
    // under the longest key.
    let largest = vec![b'y'; limit];
    store.set(&n1, &k, &largest, Ttl::Never).await.unwrap();
    assert_eq!(
        store.get(&n1, &k).await.unwrap().unwrap().value.len(),
        limit
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
    let started = Instant::now();
    let results = store.set_many(&n1, &items[..3]).await;
    assert!(
        results
            .iter()
            .all(|result| result.as_ref().is_err_and(StoreError::is_node_failure))
    );
    assert!(started.elapsed() < TIMEOUT + Duration::from_millis(150));
    memcached.resume();
}
