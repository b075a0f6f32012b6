//! The replicated deployments over TLS and with a password, against real
//! processes: a Sentinel group (`rediss+sentinel://:pw@...`: the password goes to
//! the master and replicas, the Sentinels are asked without one, over TLS) and a
//! Cluster (`rediss+cluster://:pw@...`), each trusted through the test CA; a wrong
//! password and an untrusted CA refused at startup, naming the node.

use tandem_core::{CasOutcome, Precondition, RemoteStore, Ttl, WriteItem, WriteOutcome};
use tandem_redis::{ConnectError, RedisStore};
use tandem_testkit::{RedisCluster, RedisOptions, RedisSentinelGroup, untrusted_ca};

use crate::common::{assert_names_r1, config, connect, key, node, try_connect};

const PASSWORD: &str = "ha-Tls-Secret-1";
const WRONG: &str = "ha-Wrong-Secret-2";

fn options() -> RedisOptions {
    RedisOptions::default().tls().password(PASSWORD)
}

/// set, get and cas round trips on node `r1` of `store`.
async fn round_trip(store: &RedisStore) {
    let (r1, k) = (node("r1"), key("session:1"));
    store.set(&r1, &k, b"first", Ttl::Never).await.unwrap();
    let item = store.get(&r1, &k).await.unwrap().unwrap();
    assert_eq!(item.value, b"first");
    let outcome = store
        .cas(&r1, &k, b"second", Ttl::Never, item.cas)
        .await
        .unwrap();
    assert_eq!(outcome, CasOutcome::Stored);
    let outcome = store
        .cas(&r1, &k, b"stale", Ttl::Never, item.cas)
        .await
        .unwrap();
    assert_eq!(outcome, CasOutcome::Conflict);
    assert_eq!(store.get(&r1, &k).await.unwrap().unwrap().value, b"second");
}

/// `url` with `PASSWORD` replaced by `WRONG`.
fn with_wrong_password(url: &str) -> String {
    assert!(url.contains(&format!(":{PASSWORD}@")), "{url}");
    url.replace(PASSWORD, WRONG)
}

/// Asserts that `error` is a one-line startup error of `r1` that shows no password.
#[track_caller]
fn assert_hides_passwords(error: &ConnectError) {
    assert_names_r1(error);
    for text in [error.to_string(), format!("{error:?}")] {
        assert!(!text.contains(PASSWORD), "{text}");
        assert!(!text.contains(WRONG), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_group_over_tls_with_a_password() {
    let group = RedisSentinelGroup::start_with(1, 1, options());
    let url = group.url();
    assert!(
        url.starts_with(&format!("rediss+sentinel://:{PASSWORD}@127.0.0.1:")),
        "{url}"
    );
    let ca = group.tls_files().unwrap().ca_cert.clone();
    let store = connect(&format!("r1={url}"), config().with_ca_file(&ca)).await;
    round_trip(&store).await;
    group.wait_for_replication();
    let replica = group.replicas()[0];
    assert_eq!(
        replica.command(&["EXISTS", "session:1"]),
        tandem_testkit::RedisReply::Integer(1)
    );

    refuses_wrong_credentials_and_untrusted_certificates(&url, &ca).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_over_tls_with_a_password() {
    let cluster = RedisCluster::start_with(3, 0, options());
    let url = cluster.url();
    assert!(
        url.starts_with(&format!("rediss+cluster://:{PASSWORD}@127.0.0.1:")),
        "{url}"
    );
    let ca = cluster.tls_files().unwrap().ca_cert.clone();
    let store = connect(&format!("r1={url}"), config().with_ca_file(&ca)).await;
    round_trip(&store).await;

    // write_many across slots, on every master.
    let r1 = node("r1");
    let names: Vec<String> = (0..30).map(|n| format!("spread:{n}")).collect();
    let keys: Vec<_> = names.iter().map(|name| key(name)).collect();
    let writes: Vec<WriteItem<'_>> = keys
        .iter()
        .map(|k| WriteItem {
            key: k,
            value: b"many",
            ttl: Ttl::Never,
            precondition: Precondition::Absent,
        })
        .collect();
    for outcome in store.write_many(&r1, &writes).await {
        assert!(
            matches!(outcome, Ok(WriteOutcome::Stored(_))),
            "{outcome:?}"
        );
    }
    let owners: std::collections::BTreeSet<u16> = names
        .iter()
        .map(|name| cluster.master_of_key(name).port())
        .collect();
    assert_eq!(owners.len(), 3, "{owners:?}");
    for (name, k) in names.iter().zip(&keys) {
        assert_eq!(store.get(&r1, k).await.unwrap().unwrap().value, b"many");
        assert_eq!(
            cluster.master_of_key(name).command(&["EXISTS", name]),
            tandem_testkit::RedisReply::Integer(1)
        );
    }

    refuses_wrong_credentials_and_untrusted_certificates(&url, &ca).await;
}

/// A wrong password is an authentication error, an untrusted CA a TLS error, both
/// at connect, naming the node and hiding the passwords.
async fn refuses_wrong_credentials_and_untrusted_certificates(url: &str, ca: &std::path::Path) {
    let wrong = with_wrong_password(&format!("r1={url}"));
    let error = try_connect(&wrong, config().with_ca_file(ca))
        .await
        .unwrap_err();
    println!("wrong password: {error}");
    assert!(
        matches!(error, ConnectError::Authentication { .. }),
        "{error:?}"
    );
    assert_hides_passwords(&error);

    let error = try_connect(&format!("r1={url}"), config().with_ca_file(untrusted_ca()))
        .await
        .unwrap_err();
    println!("untrusted CA: {error}");
    assert!(matches!(error, ConnectError::Tls { .. }), "{error:?}");
    assert_hides_passwords(&error);
}
