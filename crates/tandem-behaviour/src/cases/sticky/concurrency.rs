//! Concurrent requests of one session in one process share one primary copy.

use tandem_manager::Concurrency;
use tandem_store_conformance::StoreFixture;

use crate::support::*;

/// Lock mode serializes the requests of a session: 32 concurrent read-modify-write
/// increments all land, and the backup holds the total.
pub async fn lock_mode_makes_32_concurrent_increments_exact<F: StoreFixture>() {
    let started = start::<F>(1).await;
    let a1 = sticky(&started.store, "a1")
        .concurrency(Concurrency::Lock)
        .build()
        .unwrap();
    let id = create(&a1, 0).await;
    assert_eq!(
        increment_concurrently(std::slice::from_ref(&a1), &id, 32).await,
        32
    );
    assert_eq!(read_n(&a1, &id).await, Some(32));
    settle(&a1).await;
    let a2 = sticky(&started.store, "a2").build().unwrap();
    assert_eq!(read_n(&a2, &id).await, Some(32));
}

/// Merge mode never loses an increment silently: every request that lost the race on
/// the attribute gets a conflict, counted.
pub async fn merge_mode_answers_every_lost_race_with_a_conflict<F: StoreFixture>() {
    let started = start::<F>(1).await;
    let a1 = sticky(&started.store, "a1").build().unwrap();
    let id = create(&a1, 0).await;
    let succeeded = increment_concurrently(std::slice::from_ref(&a1), &id, 32).await;
    let final_n = read_n(&a1, &id).await.unwrap();
    assert_eq!(final_n, succeeded, "an increment was lost silently");
    assert_eq!(a1.stats().conflicts, u64::from(32 - succeeded));
}

/// Merge mode keeps every one of 50 concurrent changes of different attributes, and
/// the backup another server loads holds them all.
pub async fn merge_mode_keeps_concurrent_changes_of_different_attributes<F: StoreFixture>() {
    let started = start::<F>(1).await;
    let a1 = sticky(&started.store, "a1").build().unwrap();
    let id = create(&a1, 0).await;
    write_distinct_concurrently(std::slice::from_ref(&a1), &id, 50).await;
    settle(&a1).await;
    let a2 = sticky(&started.store, "a2").build().unwrap();
    let session = a2.load(Some(id.as_str())).await.unwrap();
    for i in 0..50u32 {
        let name = format!("pref.{i}");
        assert_eq!(session.get::<u32>(&name).unwrap(), Some(i), "{name}");
    }
}
