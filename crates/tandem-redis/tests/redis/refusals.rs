//! Refusals of one operation by a working server leave its node up; passwords
//! stay out of every error, status and debug output.

use tandem_core::{RemoteStore, StoreError, Ttl};
use tandem_testkit::{RedisOptions, RedisProcess, RedisReply};

use crate::common::{config, connect, key, node};

#[tokio::test]
async fn out_of_memory_and_foreign_data_are_refusals() {
    let redis = RedisProcess::start();
    let store = connect(&redis.url(), config()).await;
    let r1 = node("r1");

    redis.command(&["RPUSH", "list", "x"]);
    redis.command(&["SET", "short", "abc"]);
    for (k, what) in [("list", "WRONGTYPE"), ("short", "not written by tandem")] {
        let error = store.get(&r1, &key(k)).await.unwrap_err();
        assert!(matches!(error, StoreError::Server { .. }), "{error:?}");
        assert!(error.to_string().contains(what), "{error}");
    }
    let error = store
        .append(&r1, &key("list"), b"x", Ttl::Never)
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Server { .. }), "{error:?}");

    // A full server under `noeviction` refuses writes.
    assert_eq!(
        redis.command(&["CONFIG", "SET", "maxmemory", "1"]),
        RedisReply::Status("OK".into())
    );
    let error = store
        .set(&r1, &key("k"), b"too much", Ttl::Never)
        .await
        .unwrap_err();
    println!("full server: {error}");
    assert!(matches!(error, StoreError::Server { .. }), "{error:?}");
    assert!(error.to_string().contains("OOM"), "{error}");
    assert!(store.is_available(&r1), "a refusal took the node down");
    assert_eq!(store.node_health(&r1).unwrap().marked_down, 0);
    redis.command(&["CONFIG", "SET", "maxmemory", "0"]);
    store
        .set(&r1, &key("k"), b"fits", Ttl::Never)
        .await
        .unwrap();
}

#[tokio::test]
async fn passwords_are_absent_from_errors_status_and_debug_output() {
    const PASSWORD: &str = "Sup3r-Secret-Pw";
    let redis = RedisProcess::start_with(RedisOptions::default().user("app", PASSWORD));
    let spec = format!("r1={}", redis.url());
    let parsed = tandem_redis::RedisSpec::parse(&spec).unwrap();
    let store = connect(&spec, config()).await;
    let r1 = node("r1");
    store.set(&r1, &key("k"), b"v", Ttl::Never).await.unwrap();

    let mut printed = vec![
        parsed.to_string(),
        format!("{parsed:?}"),
        format!("{store:?}"),
        format!("{:?}", store.health()),
        format!("{:?}", store.node_status()),
    ];
    redis.kill();
    let error = store.get(&r1, &key("k")).await.unwrap_err();
    printed.push(format!("{error} {error:?}"));
    printed.push(format!("{store:?}"));
    printed.push(format!("{:?}", store.node_status()));
    let status = &store.node_status()[0];
    assert_eq!(
        status.address.as_deref(),
        Some(&*format!("redis://app:***@{}", redis.address()))
    );
    for text in &printed {
        assert!(!text.contains(PASSWORD), "{text}");
    }
}
