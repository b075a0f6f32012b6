//! TLS: the server's certificate verified against a CA file, untrusted ones
//! refused at startup, client certificates presented when the server wants one.

use tandem_core::{RemoteStore, Ttl};
use tandem_redis::ConnectError;
use tandem_testkit::{RedisOptions, RedisProcess, untrusted_ca};

use crate::common::{assert_names_r1, config, connect, key, node, try_connect};

#[tokio::test]
async fn a_server_certificate_signed_by_the_ca_file_is_trusted() {
    let redis = RedisProcess::start_with(RedisOptions::default().tls().password("tls-Secret-3"));
    let files = redis.tls_files().unwrap();
    assert!(redis.url().starts_with("rediss://"), "{}", redis.url());
    let store = connect(&redis.url(), config().with_ca_file(&files.ca_cert)).await;
    let (r1, k) = (node("r1"), key("k"));
    store.set(&r1, &k, b"over TLS", Ttl::Never).await.unwrap();
    assert_eq!(
        store.get(&r1, &k).await.unwrap().unwrap().value,
        b"over TLS"
    );

    // valkeys:// is the same, and `localhost` is a name the certificate holds too.
    let valkey = format!("valkeys://:tls-Secret-3@localhost:{}", redis.port());
    let store = connect(&valkey, config().with_ca_file(&files.ca_cert)).await;
    assert!(store.get(&r1, &k).await.unwrap().is_some());
}

#[tokio::test]
async fn an_untrusted_server_certificate_is_a_startup_error() {
    let redis = RedisProcess::start_with(RedisOptions::default().tls().password("tls-Secret-4"));
    for config in [config().with_ca_file(untrusted_ca()), config()] {
        let started = std::time::Instant::now();
        let error = try_connect(&redis.url(), config).await.unwrap_err();
        println!("untrusted: {error} (after {:?})", started.elapsed());
        assert!(matches!(error, ConnectError::Tls { .. }), "{error:?}");
        assert_names_r1(&error);
        assert!(error.to_string().contains("certificate"), "{error}");
        assert!(!format!("{error} {error:?}").contains("tls-Secret-4"));
        assert!(started.elapsed() < crate::common::TIMEOUT);
    }
}

#[tokio::test]
async fn a_required_client_certificate_is_presented() {
    let redis = RedisProcess::start_with(RedisOptions::default().tls_client_auth());
    let files = redis.tls_files().unwrap();
    let with_cert = config()
        .with_ca_file(&files.ca_cert)
        .with_client_cert(&files.client_cert, &files.client_key);
    let store = connect(&redis.url(), with_cert).await;
    let (r1, k) = (node("r1"), key("k"));
    store.set(&r1, &k, b"mutual", Ttl::Never).await.unwrap();
    assert_eq!(store.get(&r1, &k).await.unwrap().unwrap().value, b"mutual");

    let error = try_connect(&redis.url(), config().with_ca_file(&files.ca_cert))
        .await
        .unwrap_err();
    println!("no client certificate: {error}");
    assert!(matches!(error, ConnectError::Tls { .. }), "{error:?}");
    assert_names_r1(&error);
}

#[tokio::test]
async fn unusable_tls_settings_are_refused_before_connecting() {
    let plain = RedisProcess::start();
    let error = try_connect(&plain.url(), config().with_ca_file(untrusted_ca()))
        .await
        .unwrap_err();
    assert!(
        matches!(error, ConnectError::InvalidConfig { .. }),
        "{error:?}"
    );

    let redis = RedisProcess::start_with(RedisOptions::default().tls());
    let missing = config().with_ca_file("/nonexistent/ca.pem");
    let error = try_connect(&redis.url(), missing).await.unwrap_err();
    assert!(
        matches!(
            error,
            ConnectError::TlsFile {
                what: "CA file",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("/nonexistent/ca.pem"), "{error}");
}
