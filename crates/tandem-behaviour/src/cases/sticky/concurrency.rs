//! Concurrent requests of one session in one process share one primary copy.

use tandem_manager::{CommitError, Concurrency};
use tandem_store_conformance::StoreFixture;

use crate::support::*;

/// Lock mode serializes the requests of a session: 32 concurrent read-modify-write
/// increments all land (some of them waited for the lock, counted), and the backup
/// holds the total.
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
    assert!(a1.stats().lock_waits > 0, "no request waited for the lock");
    settle(&a1).await;
    let a2 = sticky(&started.store, "a2").build().unwrap();
    assert_eq!(read_n(&a2, &id).await, Some(32));
}

/// Merge mode never loses an increment silently: every request that lost the race on
/// the attribute gets a conflict, counted. A request that changed the attribute after
/// reading an older value conflicts even if it writes the value the winner wrote; one
/// that changed only another attribute merges. A conflict names only the attribute
/// that lost, and refuses the whole commit: none of its other changes is applied.
pub async fn merge_mode_answers_every_lost_race_with_a_conflict<F: StoreFixture>() {
    let started = start::<F>(1).await;
    let a1 = sticky(&started.store, "a1").build().unwrap();
    let id = create(&a1, 0).await;
    let succeeded = increment_concurrently(std::slice::from_ref(&a1), &id, 32).await;
    let final_n = read_n(&a1, &id).await.unwrap();
    assert_eq!(final_n, succeeded, "an increment was lost silently");
    assert_eq!(a1.stats().conflicts, u64::from(32 - succeeded));

    // The same races, one step at a time, on a session of their own.
    let before = a1.stats().conflicts;
    let id = create(&a1, 0).await;
    let load = || a1.load(Some(id.as_str()));
    let (mut first, mut second, mut third) = (
        load().await.unwrap(),
        load().await.unwrap(),
        load().await.unwrap(),
    );
    first.insert("n", &1u32).unwrap();
    second.insert("m", &1u32).unwrap();
    // Also derived 1 from the 0 it read: the second increment would be lost.
    third.insert("n", &1u32).unwrap();
    a1.commit(first).await.unwrap();
    a1.commit(second).await.unwrap();
    let conflict = CommitError::Conflict {
        attributes: vec!["n".into()],
    };
    assert_eq!(a1.commit(third).await.unwrap_err(), conflict);

    let (mut stale, mut fresh) = (load().await.unwrap(), load().await.unwrap());
    fresh.insert("n", &2u32).unwrap();
    a1.commit(fresh).await.unwrap();
    stale.insert("n", &5u32).unwrap();
    stale.insert("unrelated", &1u32).unwrap();
    assert_eq!(a1.commit(stale).await.unwrap_err(), conflict);
    let session = load().await.unwrap();
    assert_eq!(session.get::<u32>("n").unwrap(), Some(2));
    assert_eq!(
        session.get::<u32>("m").unwrap(),
        Some(1),
        "the merge lost m"
    );
    assert_eq!(
        session.get::<u32>("unrelated").unwrap(),
        None,
        "a refused commit was applied in part"
    );
    a1.commit(session).await.unwrap();
    assert_eq!(a1.stats().conflicts, before + 2);
}

/// Merge mode keeps every one of 50 concurrent changes of different attributes, none of
/// them a conflict, and the backup another server loads holds them all and nothing
/// else.
pub async fn merge_mode_keeps_concurrent_changes_of_different_attributes<F: StoreFixture>() {
    let started = start::<F>(1).await;
    let a1 = sticky(&started.store, "a1").build().unwrap();
    let id = create(&a1, 0).await;
    write_distinct_concurrently(std::slice::from_ref(&a1), &id, 50).await;
    settle(&a1).await;
    let a2 = sticky(&started.store, "a2").build().unwrap();
    assert_eq!(a1.stats().conflicts, 0);
    let session = a2.load(Some(id.as_str())).await.unwrap();
    for i in 0..50u32 {
        let name = format!("pref.{i}");
        assert_eq!(session.get::<u32>(&name).unwrap(), Some(i), "{name}");
    }
    assert_eq!(
        session.names().count(),
        51,
        "n and the 50 changes, nothing else"
    );
}
