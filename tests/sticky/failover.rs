//! A memcached node restarted empty. (Takeover, relocation, failover nodes and every
//! node down are tested over any store by `tandem-behaviour`'s suite.)

use std::time::Duration;

use tandem::Route;
use tandem_testkit::MemcachedCluster;

use crate::common::*;

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
