//! Alternating and concurrent requests on two servers.

use tandem::{Concurrency, CookieUpdate};
use tandem_testkit::MemcachedCluster;

use crate::common::*;

/// Two non-sticky app servers over `cluster`.
async fn two_servers(cluster: &MemcachedCluster, concurrency: Concurrency) -> [Manager; 2] {
    let store = connect(cluster).await;
    let server = || non_sticky(&store).concurrency(concurrency).build().unwrap();
    [server(), server()]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alternating_requests_on_two_servers_see_each_others_changes() {
    let cluster = MemcachedCluster::start(2);
    let servers = two_servers(&cluster, Concurrency::Merge).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_make_50_concurrent_increments_exact() {
    let cluster = MemcachedCluster::start(2);
    let servers = two_servers(&cluster, Concurrency::Lock).await;
    let id = create(&servers[0], 0).await;
    assert_eq!(increment_concurrently(&servers, &id, 50).await, 50);
    assert_eq!(read_n(&servers[1], &id).await, Some(50));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_answers_every_lost_race_with_a_conflict() {
    let cluster = MemcachedCluster::start(2);
    let servers = two_servers(&cluster, Concurrency::Merge).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_keeps_50_concurrent_writes_of_distinct_attributes() {
    let cluster = MemcachedCluster::start(2);
    let servers = two_servers(&cluster, Concurrency::Merge).await;
    let id = create(&servers[0], 0).await;
    let mut tasks = Vec::new();
    for i in 0..50u32 {
        let (server, id) = (servers[i as usize % 2].clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            let mut session = server.load(Some(id.as_str())).await.unwrap();
            tokio::task::yield_now().await;
            session.insert(&format!("pref.{i}"), &i).unwrap();
            server.commit(session).await.unwrap();
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let session = servers[1].load(Some(id.as_str())).await.unwrap();
    for i in 0..50u32 {
        assert_eq!(
            session.get::<u32>(&format!("pref.{i}")).unwrap(),
            Some(i),
            "pref.{i}"
        );
    }
    let retries: u64 = servers
        .iter()
        .map(|server| server.stats().merge_retries)
        .sum();
    assert!(
        retries > 0,
        "the writes never raced; the test proves nothing"
    );
}
