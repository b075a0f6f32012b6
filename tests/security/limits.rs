//! Limits and settings that must hold at their edges: the size check of an encrypted
//! session (L1), the cost of forged ids (L10), and configuration edge cases (L11).

use std::time::Duration;

use tandem::codec::{Encryption, EncryptionKey};
use tandem::{CommitError, Route, SessionId, envelope};
use tandem_testkit::MemcachedCluster;

use crate::common::*;
use crate::support::*;

/// L1: sticky with the encryption layer and a store item limit L (8 KiB, so the value
/// limit is a little under 8 KB). A new session whose envelope is 10 bytes under the
/// limit, less than the layer's 38 bytes of overhead, is either refused at commit
/// (`TooLarge`) or backed up. Today the check passes on the envelope, the sealed bytes
/// are over the limit, and the backup fails on every retry for as long as the session
/// lives.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn l1_an_encrypted_session_near_the_limit_is_refused_or_backed_up() {
    let cluster = MemcachedCluster::start(1);
    let store = connect_with(&cluster, store_config().with_item_size_max(8 * 1024)).await;
    let limit = store.config().max_value_size();
    let a = server(&store, "a1")
        .layer(Encryption::new(EncryptionKey::generate(1)))
        .build()
        .unwrap();
    let mut session = a.load(None).await.unwrap();
    session.insert("blob", &Vec::<u8>::new()).unwrap();
    let empty = envelope::encoded_len(session.session());
    let target = limit - 10;
    session.insert("blob", &vec![7u8; target - empty]).unwrap();
    assert_eq!(envelope::encoded_len(session.session()), target);
    match a.commit(session).await {
        Err(CommitError::TooLarge { .. }) => {}
        Err(other) => panic!("unexpected commit error {other:?}"),
        Ok(_) => {
            let saved = wait_until(Duration::from_secs(2), || a.pending_backups() == 0).await;
            let stats = a.stats();
            assert!(
                saved.is_some(),
                "the commit succeeded but its backup keeps failing: {} failures, {} pending",
                stats.backups_failed,
                a.pending_backups()
            );
        }
    }
}

/// L10: sticky; 200 requests with one forged, well-formed id whose route is another
/// server's (`-n1.zz`) cost at most a few memcached operations (the negative cache).
/// Today every one of them is a takeover that reads memcached.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn l10_forged_ids_with_a_foreign_route_do_not_each_read_memcached() {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let a = server(&store, "a1").build().unwrap();
    let forged = SessionId::generate(&node("n1"), Some(&Route::new("zz").unwrap()));
    let before = operations(&store);
    for _ in 0..200 {
        let session = a.load(Some(forged.as_str())).await.unwrap();
        assert!(session.is_new());
        a.commit(session).await.unwrap();
    }
    let spent = operations(&store) - before;
    assert!(
        spent <= 4,
        "200 requests with one unknown id cost {spent} memcached operations"
    );
}

/// L11: a negative-cache TTL beyond what the cache supports makes `build()` return an
/// error. Today `build()` panics inside the cache's builder.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn l11_an_absurd_negative_cache_ttl_is_an_error_not_a_panic() {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let builder = server(&store, "a1").negative_cache_ttl(Duration::from_secs(u64::MAX / 4));
    let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| builder.build()));
    match built {
        Ok(Err(_)) => {}
        Ok(Ok(_)) => panic!("build() accepted a negative cache TTL of u64::MAX / 4 seconds"),
        Err(_) => panic!("build() panicked on a negative cache TTL of u64::MAX / 4 seconds"),
    }
}

/// L11: `max_merge_retries(0)`, non-sticky, one server: two changed commits of one
/// session, one request after the other, both succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn l11_zero_merge_retries_sequential_changes_succeed() {
    let cluster = MemcachedCluster::start(2);
    let store = connect(&cluster).await;
    let a = non_sticky(&store).max_merge_retries(0).build().unwrap();
    let x = create(&a, 1).await;
    for n in [2u32, 3] {
        let mut session = a.load(Some(x.as_str())).await.unwrap();
        session.insert("n", &n).unwrap();
        let outcome = a.commit(session).await;
        assert!(outcome.is_ok(), "writing n = {n}: {}", describe(&outcome));
    }
}

/// L11: `max_merge_retries(0)`, non-sticky, one server: two requests of one session
/// loaded together, changing different attributes, committed one after the other:
/// both succeed, since nobody else wrote. Today the second fails with
/// `RetriesExhausted`: after the first write the shared copy has no CAS token, so its
/// only attempt is a guaranteed miss.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn l11_zero_merge_retries_overlapping_changes_succeed() {
    let cluster = MemcachedCluster::start(2);
    let store = connect(&cluster).await;
    let a = non_sticky(&store).max_merge_retries(0).build().unwrap();
    let x = create(&a, 1).await;
    let mut first = a.load(Some(x.as_str())).await.unwrap();
    let mut second = a.load(Some(x.as_str())).await.unwrap();
    first.insert("n", &2u32).unwrap();
    second.insert("m", &3u32).unwrap();
    let mut checks = Checks::default();
    for (what, session) in [("first", first), ("second", second)] {
        let outcome = a.commit(session).await;
        checks.check(outcome.is_ok(), || {
            format!("the {what} commit: {}", describe(&outcome))
        });
    }
    checks.finish();
}

/// L11: a max inactive interval under a millisecond (500 µs) is refused by `build()`
/// or is a real, short interval: the session is gone 3.5 s later (past its remote
/// TTL too). Today it rounds to "never expires" in the local tier and the envelope.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn l11_a_sub_millisecond_interval_is_refused_or_expires() {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let built = server(&store, "a1")
        .max_inactive(Some(Duration::from_micros(500)))
        .build();
    let Ok(a) = built else {
        return;
    };
    let x = create(&a, 1).await;
    settle(&a).await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let session = a.load(Some(x.as_str())).await.unwrap();
    assert!(
        session.is_new(),
        "a session with a 500 µs interval still loads after 3.5 s (interval now {:?})",
        session.max_inactive()
    );
}
