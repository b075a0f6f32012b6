//! Concurrent requests of one session in one process share one primary copy.

use tandem::Concurrency;
use tandem_testkit::MemcachedCluster;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_mode_makes_32_concurrent_increments_exact() {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let a1 = server(&store, "a1")
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
    let a2 = server(&store, "a2").build().unwrap();
    assert_eq!(read_n(&a2, &id).await, Some(32));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_mode_answers_every_lost_race_with_a_conflict() {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let a1 = server(&store, "a1").build().unwrap();
    let id = create(&a1, 0).await;
    let succeeded = increment_concurrently(std::slice::from_ref(&a1), &id, 32).await;
    let final_n = read_n(&a1, &id).await.unwrap();
    assert_eq!(final_n, succeeded, "an increment was lost silently");
    assert_eq!(a1.stats().conflicts, u64::from(32 - succeeded));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_mode_keeps_concurrent_changes_of_different_attributes() {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let a1 = server(&store, "a1").build().unwrap();
    let id = create(&a1, 0).await;
    let mut tasks = Vec::new();
    for i in 0..50u32 {
        let (a1, id) = (a1.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            let mut session = a1.load(Some(id.as_str())).await.unwrap();
            tokio::task::yield_now().await;
            session.insert(&format!("pref.{i}"), &i).unwrap();
            a1.commit(session).await.unwrap();
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    settle(&a1).await;
    let a2 = server(&store, "a2").build().unwrap();
    let session = a2.load(Some(id.as_str())).await.unwrap();
    for i in 0..50u32 {
        assert_eq!(session.get::<u32>(&format!("pref.{i}")).unwrap(), Some(i));
    }
}
