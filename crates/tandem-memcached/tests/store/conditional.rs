//! Conditional writes, conditional deletes, appends and reads with the remaining TTL
//! against a real memcached.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tandem_core::{
    CasOutcome, CasToken, NodeId, Precondition, RemoteStore, StoreError, StoreKey, Ttl, WriteItem,
    WriteOutcome,
};
use tandem_memcached::MemcachedStore;
use tandem_testkit::MemcachedProcess;

use crate::common::{MARGIN, TIMEOUT, config, key, node, single};

/// The value and CAS token stored under `k`, if any.
async fn stored(store: &MemcachedStore, n1: &NodeId, k: &StoreKey) -> Option<(Vec<u8>, CasToken)> {
    let item = store.get(n1, k).await.unwrap()?;
    Some((item.value, item.cas))
}

/// The token of a `Stored(Some(_))` outcome; panics on anything else.
fn token_of(outcome: Result<WriteOutcome, StoreError>) -> CasToken {
    match outcome {
        Ok(WriteOutcome::Stored(Some(token))) => token,
        other => panic!("expected Stored with a token, got {other:?}"),
    }
}

/// The remaining lifetime of `k`; panics if it is absent or never expires.
async fn remaining(store: &MemcachedStore, n1: &NodeId, k: &StoreKey) -> Duration {
    match store.get_with_ttl(n1, k).await.unwrap() {
        Some((_, Ttl::After(left))) => left,
        other => panic!("expected an item with a TTL, got {other:?}"),
    }
}

/// Whether `left` is what memcached reports for an item given `seconds` to live a
/// moment ago: its clock ticks in whole seconds, so one or two less.
fn about(left: Duration, seconds: u64) -> bool {
    (Duration::from_secs(seconds.saturating_sub(2))..=Duration::from_secs(seconds)).contains(&left)
}

#[tokio::test]
async fn write_without_precondition_overwrites_and_returns_the_new_token() {
    let memcached = MemcachedProcess::start();
    let store = single(&memcached, config()).await;
    let (n1, k) = (node("n1"), key("plain"));

    store.set(&n1, &k, b"old", Ttl::Never).await.unwrap();
    let old = store.get(&n1, &k).await.unwrap().unwrap().cas;
    let token = token_of(
        store
            .write(&n1, &k, b"new", Ttl::Never, Precondition::None)
            .await,
    );
    assert_ne!(token, old);
    assert_eq!(
        stored(&store, &n1, &k).await,
        Some((b"new".to_vec(), token))
    );

    let created = token_of(
        store
            .write(&n1, &key("created"), b"v", Ttl::Never, Precondition::None)
            .await,
    );
    assert_eq!(
        stored(&store, &n1, &key("created")).await,
        Some((b"v".to_vec(), created))
    );
}

#[tokio::test]
async fn write_if_absent_stores_once_and_then_reports_exists() {
    let memcached = MemcachedProcess::start();
    let store = single(&memcached, config()).await;
    let (n1, k) = (node("n1"), key("lock:1"));
    let ttl = Ttl::After(Duration::from_secs(30));

    let token = token_of(
        store
            .write(&n1, &k, b"first", ttl, Precondition::Absent)
            .await,
    );
    assert_eq!(
        stored(&store, &n1, &k).await,
        Some((b"first".to_vec(), token))
    );
    assert_eq!(
        store
            .write(&n1, &k, b"second", ttl, Precondition::Absent)
            .await
            .unwrap(),
        WriteOutcome::Exists
    );
    assert_eq!(
        stored(&store, &n1, &k).await,
        Some((b"first".to_vec(), token)),
        "a refused add must not touch the item"
    );
}

#[tokio::test]
async fn write_with_a_cas_token_stores_only_over_that_token() {
    let memcached = MemcachedProcess::start();
    let store = single(&memcached, config()).await;
    let (n1, k) = (node("n1"), key("session:cas"));
    let ttl = Ttl::After(Duration::from_secs(60));

    store.set(&n1, &k, b"v1", ttl).await.unwrap();
    let read = store.get(&n1, &k).await.unwrap().unwrap().cas;
    let written = token_of(
        store
            .write(&n1, &k, b"v2", ttl, Precondition::Cas(read))
            .await,
    );
    assert_ne!(written, read);
    assert_eq!(
        stored(&store, &n1, &k).await,
        Some((b"v2".to_vec(), written))
    );

    assert_eq!(
        store
            .write(&n1, &k, b"lost", ttl, Precondition::Cas(read))
            .await
            .unwrap(),
        WriteOutcome::Conflict
    );
    assert_eq!(
        stored(&store, &n1, &k).await,
        Some((b"v2".to_vec(), written))
    );

    assert!(store.delete(&n1, &k).await.unwrap());
    assert_eq!(
        store
            .write(&n1, &k, b"lost", ttl, Precondition::Cas(written))
            .await
            .unwrap(),
        WriteOutcome::NotFound
    );
    assert_eq!(store.get(&n1, &k).await.unwrap(), None);
}

#[tokio::test]
async fn the_token_a_write_returns_conditions_the_next_write() {
    let memcached = MemcachedProcess::start();
    let store = single(&memcached, config()).await;
    let (n1, k) = (node("n1"), key("chain"));
    let ttl = Ttl::After(Duration::from_secs(60));

    let operations = store.node_health(&n1).unwrap().operations;
    let t1 = token_of(store.write(&n1, &k, b"v1", ttl, Precondition::None).await);
    let t2 = token_of(
        store
            .write(&n1, &k, b"v2", ttl, Precondition::Cas(t1))
            .await,
    );
    let t3 = token_of(
        store
            .write(&n1, &k, b"v3", ttl, Precondition::Cas(t2))
            .await,
    );
    assert_eq!(
        store.node_health(&n1).unwrap().operations,
        operations + 3,
        "three writes, no read in between"
    );
    assert!(t1 != t2 && t2 != t3 && t1 != t3, "{t1:?} {t2:?} {t3:?}");
    assert_eq!(stored(&store, &n1, &k).await, Some((b"v3".to_vec(), t3)));
    assert_eq!(
        store
            .write(&n1, &k, b"late", ttl, Precondition::Cas(t2))
            .await
            .unwrap(),
        WriteOutcome::Conflict
    );
}

#[tokio::test]
async fn oversized_writes_are_refused_and_leave_the_old_value() {
    let memcached = MemcachedProcess::start();
    let store = single(&memcached, config()).await;
    let (n1, k) = (node("n1"), key("big"));
    let limit = store.max_item_size();

    let token = token_of(
        store
            .write(&n1, &k, b"good copy", Ttl::Never, Precondition::None)
            .await,
    );
    let too_large = vec![b'x'; limit + 1];
    for precondition in [
        Precondition::None,
        Precondition::Absent,
        Precondition::Cas(token),
    ] {
        assert_eq!(
            store
                .write(&n1, &k, &too_large, Ttl::Never, precondition)
                .await,
            Err(StoreError::TooLarge {
                size: limit + 1,
                limit
            }),
            "{precondition:?}"
        );
    }
    assert_eq!(
        stored(&store, &n1, &k).await,
        Some((b"good copy".to_vec(), token))
    );
    let health = store.node_health(&n1).unwrap();
    assert_eq!(
        (health.operations, health.failures),
        (2, 0),
        "refused before sending: {health:?}"
    );
}

#[tokio::test]
async fn write_many_pipelines_mixed_preconditions_and_answers_each_in_order() {
    let memcached = MemcachedProcess::start();
    let store = single(&memcached, config()).await;
    let n1 = node("n1");
    let ttl = Ttl::After(Duration::from_secs(60));
    let [existing, fresh, plain, current, stale, missing, big] = [
        "existing", "fresh", "plain", "current", "stale", "missing", "big",
    ]
    .map(key);
    for k in [&existing, &current, &stale, &big] {
        store.set(&n1, k, b"before", ttl).await.unwrap();
    }
    let stale_token = store.get(&n1, &stale).await.unwrap().unwrap().cas;
    store.set(&n1, &stale, b"newer", ttl).await.unwrap();
    let current_token = store.get(&n1, &current).await.unwrap().unwrap().cas;

    let oversized = vec![b'x'; store.max_item_size() + 1];
    let item = |key, value, precondition| WriteItem {
        key,
        value,
        ttl,
        precondition,
    };
    let items = [
        item(&existing, b"lost", Precondition::Absent),
        item(&fresh, b"fresh", Precondition::Absent),
        item(&plain, b"plain", Precondition::None),
        item(&big, &oversized, Precondition::None),
        item(&current, b"swapped", Precondition::Cas(current_token)),
        item(&stale, b"lost", Precondition::Cas(stale_token)),
        item(&missing, b"lost", Precondition::Cas(stale_token)),
    ];
    let operations = store.node_health(&n1).unwrap().operations;
    let results = store.write_many(&n1, &items).await;
    // One exchange for the six that were sent.
    assert_eq!(store.node_health(&n1).unwrap().operations, operations + 1);
    assert_eq!(results.len(), items.len());
    assert_eq!(results[0], Ok(WriteOutcome::Exists));
    let fresh_token = token_of(results[1].clone());
    let plain_token = token_of(results[2].clone());
    assert!(
        matches!(results[3], Err(StoreError::TooLarge { .. })),
        "{:?}",
        results[3]
    );
    let swapped_token = token_of(results[4].clone());
    assert_eq!(results[5], Ok(WriteOutcome::Conflict));
    assert_eq!(results[6], Ok(WriteOutcome::NotFound));

    assert_eq!(
        stored(&store, &n1, &fresh).await,
        Some((b"fresh".to_vec(), fresh_token))
    );
    assert_eq!(
        stored(&store, &n1, &plain).await,
        Some((b"plain".to_vec(), plain_token))
    );
    assert_eq!(
        stored(&store, &n1, &current).await,
        Some((b"swapped".to_vec(), swapped_token))
    );
    for (k, kept) in [
        (&existing, &b"before"[..]),
        (&big, b"before"),
        (&stale, b"newer"),
    ] {
        assert_eq!(store.get(&n1, k).await.unwrap().unwrap().value, kept, "{k}");
    }
    assert_eq!(store.get(&n1, &missing).await.unwrap(), None);
    assert_eq!(store.node_health(&n1).unwrap().failures, 0);
}

#[tokio::test]
async fn write_many_on_a_paused_node_fails_every_item_within_the_timeout() {
    let memcached = MemcachedProcess::start();
    let store = single(&memcached, config()).await;
    let n1 = node("n1");
    let keys = ["a", "b", "c"].map(key);
    store.set(&n1, &keys[0], b"warm", Ttl::Never).await.unwrap();
    let oversized = vec![b'x'; store.max_item_size() + 1];
    let items = [
        WriteItem {
            key: &keys[0],
            value: b"v",
            ttl: Ttl::Never,
            precondition: Precondition::None,
        },
        WriteItem {
            key: &keys[1],
            value: b"v",
            ttl: Ttl::Never,
            precondition: Precondition::Absent,
        },
        WriteItem {
            key: &keys[2],
            value: &oversized,
            ttl: Ttl::Never,
            precondition: Precondition::None,
        },
        WriteItem {
            key: &keys[2],
            value: b"v",
            ttl: Ttl::Never,
            precondition: Precondition::Cas(CasToken(1)),
        },
    ];

    memcached.pause();
    let started = Instant::now();
    let results = store.write_many(&n1, &items).await;
    let elapsed = started.elapsed();
    memcached.resume();
    assert_eq!(results.len(), items.len());
    for (index, result) in results.iter().enumerate() {
        if index == 2 {
            assert!(
                matches!(result, Err(StoreError::TooLarge { .. })),
                "{result:?}"
            );
        } else {
            assert!(
                result.as_ref().is_err_and(StoreError::is_node_failure),
                "item {index}: {result:?}"
            );
        }
    }
    assert!(elapsed < TIMEOUT + MARGIN, "took {elapsed:?}");
    assert!(!store.is_available(&n1));
}

#[tokio::test]
async fn delete_if_removes_only_an_item_with_the_given_token() {
    let memcached = MemcachedProcess::start();
    let store = single(&memcached, config()).await;
    let (n1, k) = (node("n1"), key("lock:held"));
    let ttl = Ttl::After(Duration::from_secs(30));

    let mine = token_of(
        store
            .write(&n1, &k, b"mine", ttl, Precondition::Absent)
            .await,
    );
    store.set(&n1, &k, b"theirs", ttl).await.unwrap();
    assert_eq!(
        store.delete_if(&n1, &k, mine).await.unwrap(),
        CasOutcome::Conflict
    );
    let theirs = store.get(&n1, &k).await.unwrap().unwrap();
    assert_eq!(theirs.value, b"theirs", "a stale token deletes nothing");

    assert_eq!(
        store.delete_if(&n1, &k, theirs.cas).await.unwrap(),
        CasOutcome::Stored
    );
    assert_eq!(store.get(&n1, &k).await.unwrap(), None);
    assert_eq!(
        store.delete_if(&n1, &k, theirs.cas).await.unwrap(),
        CasOutcome::NotFound
    );
}

#[tokio::test]
async fn append_creates_a_missing_key_with_the_ttl_and_keeps_it_afterwards() {
    let memcached = MemcachedProcess::start();
    let store = single(&memcached, config()).await;
    let (n1, feed, forever) = (node("n1"), key("feed"), key("forever"));

    store
        .append(&n1, &feed, b"first;", Ttl::After(Duration::from_secs(60)))
        .await
        .unwrap();
    let (item, ttl) = store.get_with_ttl(&n1, &feed).await.unwrap().unwrap();
    assert_eq!(item.value, b"first;");
    assert!(
        matches!(ttl, Ttl::After(left) if about(left, 60)),
        "{ttl:?}"
    );

    store
        .append(&n1, &feed, b"second;", Ttl::After(Duration::from_secs(600)))
        .await
        .unwrap();
    let (appended, ttl) = store.get_with_ttl(&n1, &feed).await.unwrap().unwrap();
    assert_eq!(appended.value, b"first;second;");
    assert_ne!(appended.cas, item.cas, "an append changes the token");
    assert!(
        matches!(ttl, Ttl::After(left) if about(left, 60)),
        "the append changed the TTL: {ttl:?}"
    );

    store.set(&n1, &forever, b"x", Ttl::Never).await.unwrap();
    store
        .append(&n1, &forever, b"y", Ttl::After(Duration::from_secs(60)))
        .await
        .unwrap();
    let (item, ttl) = store.get_with_ttl(&n1, &forever).await.unwrap().unwrap();
    assert_eq!((item.value.as_slice(), ttl), (&b"xy"[..], Ttl::Never));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_all_land() {
    let memcached = MemcachedProcess::start();
    let store = Arc::new(single(&memcached, config()).await);
    let records: Vec<Vec<u8>> = (0..20)
        .map(|index| format!("rec{index:05}").into_bytes())
        .collect();

    let mut appends = tokio::task::JoinSet::new();
    for record in records.clone() {
        let store = Arc::clone(&store);
        appends.spawn(async move {
            let ttl = Ttl::After(Duration::from_secs(60));
            store.append(&node("n1"), &key("feed"), &record, ttl).await
        });
    }
    while let Some(joined) = appends.join_next().await {
        joined.unwrap().unwrap();
    }

    let value = store
        .get(&node("n1"), &key("feed"))
        .await
        .unwrap()
        .unwrap()
        .value;
    assert_eq!(value.len(), 160);
    let mut landed: Vec<Vec<u8>> = value.chunks(8).map(<[u8]>::to_vec).collect();
    landed.sort();
    assert_eq!(landed, records, "every record exactly once");
}

#[tokio::test]
async fn appends_past_the_item_limit_are_too_large_and_change_nothing() {
    let memcached = MemcachedProcess::start();
    let store = single(&memcached, config()).await;
    let (n1, feed) = (node("n1"), key("feed"));
    let limit = store.max_item_size();

    let full = vec![b'x'; limit];
    store.append(&n1, &feed, &full, Ttl::Never).await.unwrap();
    let before = stored(&store, &n1, &feed).await.unwrap();
    let error = store
        .append(&n1, &feed, &[b'y'; 1000], Ttl::Never)
        .await
        .unwrap_err();
    assert_eq!(
        error,
        StoreError::TooLarge {
            size: limit + 1000,
            limit
        }
    );
    assert_eq!(stored(&store, &n1, &feed).await.unwrap(), before);

    // A value over the limit on its own is refused before it is sent.
    let error = store
        .append(&n1, &key("new"), &vec![b'z'; limit + 1], Ttl::Never)
        .await
        .unwrap_err();
    assert_eq!(
        error,
        StoreError::TooLarge {
            size: limit + 1,
            limit
        }
    );
    assert_eq!(store.get(&n1, &key("new")).await.unwrap(), None);
    let health = store.node_health(&n1).unwrap();
    assert!(health.up && health.failures == 0, "{health:?}");
}

#[tokio::test]
async fn get_with_ttl_reports_the_remaining_lifetime() {
    let memcached = MemcachedProcess::start();
    let store = single(&memcached, config()).await;
    let (n1, forever, timed) = (node("n1"), key("forever"), key("timed"));
    store.set(&n1, &forever, b"f", Ttl::Never).await.unwrap();
    store
        .set(&n1, &timed, b"t", Ttl::After(Duration::from_secs(60)))
        .await
        .unwrap();

    let (item, ttl) = store.get_with_ttl(&n1, &forever).await.unwrap().unwrap();
    assert_eq!((item.value.as_slice(), ttl), (&b"f"[..], Ttl::Never));
    let (item, ttl) = store.get_with_ttl(&n1, &timed).await.unwrap().unwrap();
    assert_eq!(item, store.get(&n1, &timed).await.unwrap().unwrap());
    assert!(
        matches!(ttl, Ttl::After(left) if about(left, 60)),
        "{ttl:?}"
    );
    assert_eq!(store.get_with_ttl(&n1, &key("absent")).await.unwrap(), None);

    assert!(
        store
            .touch(&n1, &timed, Ttl::After(Duration::from_secs(600)))
            .await
            .unwrap()
    );
    let left = remaining(&store, &n1, &timed).await;
    assert!(about(left, 600), "{left:?}");
    assert!(store.touch(&n1, &timed, Ttl::Never).await.unwrap());
    let (_, ttl) = store.get_with_ttl(&n1, &timed).await.unwrap().unwrap();
    assert_eq!(ttl, Ttl::Never);
    assert!(
        store
            .touch(&n1, &forever, Ttl::After(Duration::from_secs(30)))
            .await
            .unwrap()
    );
    let left = remaining(&store, &n1, &forever).await;
    assert!(about(left, 30), "{left:?}");
}
