//! Alternating and concurrent requests of one session on two servers.

use tandem_manager::{Concurrency, CookieUpdate};
use tandem_store_conformance::StoreFixture;

use crate::support::*;

/// Requests alternating between two servers each see the change the other made just
/// before, and keep the client's cookie.
pub async fn alternating_requests_on_two_servers_see_each_others_changes<F: StoreFixture>() {
    let started = start::<F>(2).await;
    let servers = two_non_sticky(&started.store, Concurrency::Merge);
    let id = create(&servers[0], 0).await;
    for n in 1..=20u32 {
        let (reader, writer) = (&servers[(n % 2) as usize], &servers[((n + 1) % 2) as usize]);
        assert_eq!(read_n(reader, &id).await, Some(n - 1));
        let mut session = writer.load(Some(id.as_str())).await.unwrap();
        session.insert("n", &n).unwrap();
        assert_eq!(
            writer.commit(session).await.unwrap().cookie,
            CookieUpdate::Keep
        );
    }
    assert_eq!(read_n(&servers[0], &id).await, Some(20));
}

/// Remote locks serialize the requests of a session across servers: 50 concurrent
/// increments on two servers all land, none of them a conflict.
pub async fn locks_make_50_concurrent_increments_exact<F: StoreFixture>() {
    let started = start::<F>(2).await;
    let servers = two_non_sticky(&started.store, Concurrency::Lock);
    let id = create(&servers[0], 0).await;
    assert_eq!(increment_concurrently(&servers, &id, 50).await, 50);
    assert_eq!(read_n(&servers[1], &id).await, Some(50));
    let conflicts: u64 = servers.iter().map(|server| server.stats().conflicts).sum();
    assert_eq!(conflicts, 0);
}

/// Merge never loses an increment silently across servers: every request that lost
/// the race on the attribute gets a conflict, counted, which names that attribute
/// alone, not the request's other changes.
pub async fn merge_answers_every_lost_race_with_a_conflict<F: StoreFixture>() {
    let started = start::<F>(2).await;
    let servers = two_non_sticky(&started.store, Concurrency::Merge);
    let id = create(&servers[0], 0).await;
    let succeeded = increment_concurrently(&servers, &id, 50).await;
    assert!(succeeded >= 1);
    assert_eq!(
        read_n(&servers[1], &id).await,
        Some(succeeded),
        "an increment was lost"
    );
    let conflicts: u64 = servers.iter().map(|server| server.stats().conflicts).sum();
    assert_eq!(conflicts, u64::from(50 - succeeded));
}

/// Merge keeps every one of 50 concurrent writes of distinct attributes on two
/// servers, re-applying a write whose compare-and-swap lost a race (at least one
/// did, or the case proves nothing).
pub async fn merge_keeps_50_concurrent_writes_of_distinct_attributes<F: StoreFixture>() {
    let started = start::<F>(2).await;
    let servers = two_non_sticky(&started.store, Concurrency::Merge);
    let id = create(&servers[0], 0).await;
    write_distinct_concurrently(&servers, &id, 50).await;
    let session = servers[1].load(Some(id.as_str())).await.unwrap();
    for i in 0..50u32 {
        let name = format!("pref.{i}");
        assert_eq!(session.get::<u32>(&name).unwrap(), Some(i), "{name}");
    }
    let retries: u64 = servers
        .iter()
        .map(|server| server.stats().merge_retries)
        .sum();
    assert!(
        retries > 0,
        "the writes never raced; the case proves nothing"
    );
}
