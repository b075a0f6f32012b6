//! Failures: an app server taken over by another, memcached nodes dying.

use std::time::Duration;

use tandem::{RemoteStore, Route};
use tandem_testkit::MemcachedCluster;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_server_takes_over_the_session_of_a_dead_one() {
    let cluster = MemcachedCluster::start(2);
    let store = connect(&cluster).await;
    let a1 = server(&store, "a1").build().unwrap();
    let id = create(&a1, 1).await;
    write_n(&a1, &id, 2).await;
    settle(&a1).await;
    drop(a1); // the app server is gone

    // Without the peer feed, whose background reads and announcements would be
    // counted below with the request's operations.
    let a2 = server(&store, "a2")
        .peer_feed_interval(None)
        .build()
        .unwrap();
    let session = a2.load(Some(id.as_str())).await.unwrap();
    assert_eq!(session.get::<u32>("n").unwrap(), Some(2));
    let taken = new_id(a2.commit(session).await.unwrap().cookie);
    // The takeover's write back, in the background.
    settle(&a2).await;
    assert_eq!(taken.route(), Some("a2"));
    assert_eq!(
        taken.storage_id(),
        id.storage_id(),
        "the stored identity stays"
    );
    assert_eq!(a2.stats().taken_over, 1);
    // The new cookie is now a plain local hit.
    let before = operations(&store);
    assert_eq!(read_n(&a2, &taken).await, Some(2));
    assert_eq!(operations(&store), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_handed_back_a_session_reloads_instead_of_trusting_its_stale_copy() {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let a1 = server(&store, "a1").build().unwrap();
    let a2 = server(&store, "a2").build().unwrap();
    let id = create(&a1, 1).await;
    settle(&a1).await;

    // The balancer moved the client to a2, which changed the session.
    let mut session = a2.load(Some(id.as_str())).await.unwrap();
    session.insert("n", &2u32).unwrap();
    let on_a2 = new_id(a2.commit(session).await.unwrap().cookie);
    settle(&a2).await;

    // Back on a1, which still holds n=1 locally.
    let session = a1.load(Some(on_a2.as_str())).await.unwrap();
    assert_eq!(session.get::<u32>("n").unwrap(), Some(2));
    let back = new_id(a1.commit(session).await.unwrap().cookie);
    assert_eq!(back.route(), Some("a1"));
    assert_eq!(read_n(&a1, &back).await, Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_whose_node_died_moves_to_a_live_node_losing_nothing() {
    let cluster = MemcachedCluster::start(2);
    let store = connect(&cluster).await;
    let a1 = server(&store, "a1").build().unwrap();
    let id = create(&a1, 1).await;
    settle(&a1).await;
    let dead = id.node().to_owned();
    let live = if dead == "n1" { "n2" } else { "n1" };

    cluster.node(&dead).kill();
    // This change's backup fails, which is how the manager learns the node is down.
    write_n(&a1, &id, 2).await;
    let down = wait_until(Duration::from_secs(2), || !store.is_available(&node(&dead))).await;
    assert!(down.is_some(), "the dead node was not marked down");

    let session = a1.load(Some(id.as_str())).await.unwrap();
    assert_eq!(session.id().node(), live);
    assert_eq!(session.get::<u32>("n").unwrap(), Some(2));
    let moved = new_id(a1.commit(session).await.unwrap().cookie);
    assert_eq!(moved.node(), live);
    assert_eq!(a1.stats().relocated, 1);
    settle(&a1).await;

    // Stored on the live node: another server finds it there.
    let a2 = server(&store, "a2").build().unwrap();
    assert_eq!(read_n(&a2, &moved).await, Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_nodes_take_sessions_only_when_every_regular_node_is_down() {
    let cluster = MemcachedCluster::start(3);
    let store = connect(&cluster).await;
    let a1 = server(&store, "a1")
        .failover_nodes([node("n3")])
        .build()
        .unwrap();
    for n in 0..30 {
        assert_ne!(create(&a1, n).await.node(), "n3");
    }
    settle(&a1).await;
    for regular in ["n1", "n2"] {
        cluster.node(regular).kill();
        // Any failed operation marks the node down.
        let probe = tandem::model::StoreKey::new("probe").unwrap();
        assert!(store.get(&node(regular), &probe).await.is_err());
    }
    let id = create(&a1, 99).await;
    assert_eq!(id.node(), "n3");
    settle(&a1).await;
    let a2 = server(&store, "a2").build().unwrap();
    assert_eq!(read_n(&a2, &id).await, Some(99));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_node_down_sessions_are_served_locally_and_backed_up_when_one_returns() {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let a1 = server(&store, "a1").build().unwrap();
    let id = create(&a1, 1).await;
    settle(&a1).await;

    cluster.node("n1").kill();
    write_n(&a1, &id, 2).await;
    let down = wait_until(Duration::from_secs(2), || !store.is_available(&node("n1"))).await;
    assert!(down.is_some());
    for _ in 0..10 {
        assert_eq!(read_n(&a1, &id).await, Some(2));
    }
    let fresh = create(&a1, 3).await;
    assert_eq!(read_n(&a1, &fresh).await, Some(3));
    assert!(a1.stats().degraded > 0);

    cluster.node("n1").restart(); // back, and empty
    let up = wait_until(Duration::from_secs(3), || store.is_available(&node("n1"))).await;
    assert!(up.is_some(), "the node did not come back");
    settle(&a1).await;
    let a2 = server(&store, "a2").build().unwrap();
    assert_eq!(read_n(&a2, &id).await, Some(2));
    assert_eq!(read_n(&a2, &fresh).await, Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_empty_node_is_refilled_by_the_next_touch() {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let a1 = server(&store, "a1")
        .max_inactive(Some(Duration::from_secs(2)))
        .build()
        .unwrap();
    let id = create(&a1, 4).await;
    settle(&a1).await;
    cluster.node("n1").restart();
    // Unchanged reads: the touch finds no copy, so the session is written again.
    let refilled = async {
        for _ in 0..30 {
            assert_eq!(read_n(&a1, &id).await, Some(4));
            settle(&a1).await;
            if cluster.node("n1").stats()["curr_items"] == "1" {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    assert!(refilled.await, "the restarted node was not refilled");
    assert!(a1.stats().touch_failures >= 1);
    let a2 = server(&store, "a2").build().unwrap();
    assert_eq!(
        read_n(&a2, &id.with_route(Some(&Route::new("a1").unwrap()))).await,
        Some(4)
    );
}
