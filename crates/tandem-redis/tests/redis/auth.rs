//! Passwords and ACL users from the URL; wrong ones stop `connect`.

use tandem_core::{RemoteStore, Ttl};
use tandem_redis::ConnectError;
use tandem_testkit::{RedisOptions, RedisProcess};

use crate::common::{assert_names_r1, config, connect, key, node, try_connect};

/// A password with characters that must be percent-encoded in a URL.
const PASSWORD: &str = "pa:ss@w/rd,%1";

#[tokio::test]
async fn the_password_of_the_url_is_used() {
    let redis = RedisProcess::start_with(RedisOptions::default().password(PASSWORD));
    let store = connect(&redis.url(), config()).await;
    let (r1, k) = (node("r1"), key("k"));
    store.set(&r1, &k, b"v", Ttl::Never).await.unwrap();
    assert_eq!(store.get(&r1, &k).await.unwrap().unwrap().value, b"v");
    assert!(store.health()[0].up);
}

#[tokio::test]
async fn an_acl_user_is_used_and_the_default_user_is_not() {
    let redis = RedisProcess::start_with(RedisOptions::default().user("tandem", PASSWORD));
    let store = connect(&redis.url(), config()).await;
    let (r1, k) = (node("r1"), key("k"));
    store.set(&r1, &k, b"as tandem", Ttl::Never).await.unwrap();
    assert_eq!(
        store.get(&r1, &k).await.unwrap().unwrap().value,
        b"as tandem"
    );
    assert!(
        redis.url().starts_with("redis://tandem:"),
        "{}",
        redis.url()
    );

    // The same server without credentials: the default user is off.
    let anonymous = format!("redis://{}", redis.address());
    let error = try_connect(&anonymous, config()).await.unwrap_err();
    assert!(
        matches!(error, ConnectError::Authentication { .. }),
        "{error:?}"
    );
    assert_names_r1(&error);
}

#[tokio::test]
async fn wrong_credentials_are_a_startup_error_naming_the_node() {
    let redis = RedisProcess::start_with(RedisOptions::default().user("tandem", PASSWORD));
    let address = redis.address();
    let cases = [
        format!("r1=redis://tandem:wrong-Secret-1@{address}"),
        format!("r1=redis://nobody:wrong-Secret-1@{address}"),
        format!("r1=redis://:wrong-Secret-1@{address}"),
        format!("r1=redis://{address}"),
    ];
    for spec in &cases {
        let started = std::time::Instant::now();
        let error = try_connect(spec, config()).await.unwrap_err();
        println!("{spec}: {error} (after {:?})", started.elapsed());
        let ConnectError::Authentication { node, url, .. } = &error else {
            panic!("{spec}: expected an authentication error, got {error:?}");
        };
        assert_eq!(node.as_str(), "r1");
        assert!(url.contains(&address), "{url}");
        assert_names_r1(&error);
        for text in [error.to_string(), format!("{error:?}")] {
            assert!(!text.contains("wrong-Secret-1"), "{text}");
            assert!(!text.contains(PASSWORD), "{text}");
        }
        // Refused at once, not after a timeout or a retry loop.
        assert!(
            started.elapsed() < crate::common::TIMEOUT,
            "{:?}",
            started.elapsed()
        );
    }
}

/// Redis's own rule, not the store's: a default user without a password
/// (`nopass`) accepts any password in `HELLO ... AUTH`.
#[tokio::test]
async fn a_password_for_a_server_without_one_is_accepted_by_redis() {
    let redis = RedisProcess::start();
    let spec = format!("redis://:unneeded-Secret-2@{}", redis.address());
    let store = connect(&spec, config()).await;
    store
        .set(&node("r1"), &key("k"), b"v", Ttl::Never)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_database_the_server_does_not_have_is_a_startup_error() {
    let redis = RedisProcess::start();
    let error = try_connect(&format!("redis://{}/999", redis.address()), config())
        .await
        .unwrap_err();
    assert!(matches!(error, ConnectError::Rejected { .. }), "{error:?}");
    assert_names_r1(&error);

    // A database it has keeps its keys apart from database 0 (where the kit looks).
    let store = connect(&format!("redis://{}/3", redis.address()), config()).await;
    store
        .set(&node("r1"), &key("in-db-3"), b"v", Ttl::Never)
        .await
        .unwrap();
    assert_eq!(
        redis.keys(),
        Vec::<String>::new(),
        "the key went to database 0"
    );
    assert!(
        store
            .get(&node("r1"), &key("in-db-3"))
            .await
            .unwrap()
            .is_some()
    );
}
