//! Failures: an app server taken over by another, nodes becoming unavailable.

use std::time::Duration;

use tandem_core::{NodeId, StoreKey};
use tandem_manager::CookieUpdate;
use tandem_store_conformance::StoreFixture;

use crate::recorder::Recorder;
use crate::support::*;

/// The session interval a manager has unless it is given another: what its cookies
/// say.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(30 * 60);

/// When an app server is gone, another loads the session from the store and becomes
/// its owner: the route changes, the stored identity stays, and the new cookie is a
/// local hit there: a hundred unchanged requests send nothing to the store, and are
/// counted as local loads whose backup was skipped.
pub async fn another_server_takes_over_the_session_of_a_dead_one<F: StoreFixture>() {
    let started = start::<F>(2).await;
    let a1 = sticky(&started.store, "a1").build().unwrap();
    let id = create(&a1, 1).await;
    write_n(&a1, &id, 2).await;
    settle(&a1).await;
    drop(a1); // the app server is gone

    // Without the peer feed, whose background reads and announcements would be
    // recorded with the request's operations.
    let recorder = Recorder::wrap(&started.store);
    let a2 = sticky(&recorder.store(), "a2")
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
    let before = recorder.count();
    assert!(before > 0, "the takeover read nothing through the recorder");
    let stats = a2.stats();
    for _ in 0..100 {
        assert_eq!(read_n(&a2, &taken).await, Some(2));
    }
    assert_eq!(recorder.count(), before, "a local hit used the store");
    let after = a2.stats();
    assert_eq!(after.loaded_local, stats.loaded_local + 100);
    assert_eq!(
        after.backups_skipped_unchanged,
        stats.backups_skipped_unchanged + 100
    );
    assert_eq!(after.backups_written, stats.backups_written);
}

/// A server that the balancer sends a session back to, after another server changed
/// it, reloads it instead of trusting the stale copy it still holds. Each move of the
/// client rewrites the id's route to the server that serves it, and a change made
/// after the client moved once more lands there.
pub async fn a_server_handed_back_a_session_reloads_instead_of_trusting_its_stale_copy<
    F: StoreFixture,
>() {
    let started = start::<F>(1).await;
    let a1 = sticky(&started.store, "a1").build().unwrap();
    let a2 = sticky(&started.store, "a2").build().unwrap();
    let id = create(&a1, 1).await;
    assert_eq!(id.route(), Some("a1"));
    settle(&a1).await;

    // The balancer moved the client to a2, which changed the session.
    let mut session = a2.load(Some(id.as_str())).await.unwrap();
    assert_eq!(session.id().route(), Some("a2"));
    session.insert("n", &2u32).unwrap();
    let on_a2 = new_id(a2.commit(session).await.unwrap().cookie);
    settle(&a2).await;
    assert_eq!(a2.stats().taken_over, 1);

    // Back on a1, which still holds n=1 locally.
    let session = a1.load(Some(on_a2.as_str())).await.unwrap();
    assert_eq!(session.id().route(), Some("a1"));
    assert_eq!(session.get::<u32>("n").unwrap(), Some(2));
    let back = new_id(a1.commit(session).await.unwrap().cookie);
    assert_eq!(back.route(), Some("a1"));
    assert_eq!(read_n(&a1, &back).await, Some(2));
    settle(&a1).await;

    // And to a2 again, with the cookie a1 gave: a change made there lands there.
    write_n(&a2, &back, 3).await;
    assert_eq!(read_n(&a2, &on_a2).await, Some(3));
}

/// A session whose node became unavailable moves to a live node on its next request
/// with its newest state: the id's node part is rewritten, the client is told once,
/// the move is counted, and another server then finds the session there. A request
/// still carrying the old id follows the session and is told the new id.
pub async fn a_session_whose_node_died_moves_to_a_live_node_losing_nothing<F: StoreFixture>() {
    let case = "a_session_whose_node_died_moves_to_a_live_node_losing_nothing";
    let started = start::<F>(2).await;
    let a1 = sticky(&started.store, "a1").build().unwrap();
    let id = create(&a1, 1).await;
    settle(&a1).await;
    let dead = NodeId::new(id.node()).unwrap();
    let live = if &dead == started.node(0) {
        started.node(1)
    } else {
        started.node(0)
    };

    if !started.make_unavailable(&dead, case).await {
        return;
    }
    // A client follows the cookies it gets. A store that knows at once that the node
    // is unavailable has this request move the session already; otherwise this
    // change's backup fails, which is how the store learns the node is down.
    let mut current = id.clone();
    let mut moves = 0;
    if let CookieUpdate::Set { id: moved, .. } = write_n(&a1, &id, 2).await.cookie {
        (current, moves) = (moved, moves + 1);
    }
    started.wait_down(&dead).await;

    let session = a1.load(Some(current.as_str())).await.unwrap();
    assert_eq!(session.id().node(), live.as_str());
    assert_eq!(session.get::<u32>("n").unwrap(), Some(2));
    if let CookieUpdate::Set { id: moved, .. } = a1.commit(session).await.unwrap().cookie {
        (current, moves) = (moved, moves + 1);
    }
    assert_eq!(moves, 1, "the client was not told the new id exactly once");
    assert_eq!(current, id.with_node(live), "only the node part changes");
    assert_eq!(a1.stats().relocated, 1);
    settle(&a1).await;

    // A request still carrying the old id (sent before the client got the new one, or
    // by a client that missed it) follows the session, and is told the new id.
    let session = a1.load(Some(id.as_str())).await.unwrap();
    assert_eq!(session.get::<u32>("n").unwrap(), Some(2));
    assert_eq!(
        a1.commit(session).await.unwrap().cookie,
        CookieUpdate::Set {
            id: current.clone(),
            max_inactive: Some(DEFAULT_INTERVAL),
        },
        "the client was not told the new id"
    );
    assert_eq!(a1.stats().relocated, 1, "following is not another move");

    // Stored on the live node: another server finds it there.
    let a2 = sticky(&started.store, "a2").build().unwrap();
    assert_eq!(read_n(&a2, &current).await, Some(2));
}

/// Failover nodes hold no new session while a regular node is up, and take new
/// sessions once every regular node is down.
pub async fn failover_nodes_take_sessions_only_when_every_regular_node_is_down<F: StoreFixture>() {
    let case = "failover_nodes_take_sessions_only_when_every_regular_node_is_down";
    let started = start::<F>(3).await;
    let failover = started.node(2).clone();
    let a1 = sticky(&started.store, "a1")
        .failover_nodes([failover.clone()])
        .build()
        .unwrap();
    for n in 0..30 {
        assert_ne!(create(&a1, n).await.node(), failover.as_str());
    }
    settle(&a1).await;
    for index in 0..2 {
        let regular = started.node(index).clone();
        if !started.make_unavailable(&regular, case).await {
            return;
        }
        // Any failed operation marks the node down.
        let probe = StoreKey::new("probe").unwrap();
        assert!(started.store.get(&regular, &probe).await.is_err());
        started.wait_down(&regular).await;
    }
    let id = create(&a1, 99).await;
    assert_eq!(id.node(), failover.as_str());
    settle(&a1).await;
    let a2 = sticky(&started.store, "a2").build().unwrap();
    assert_eq!(read_n(&a2, &id).await, Some(99));
}

/// With every node down, sessions old and new are served from the local tier
/// (counted as degraded); their backups are written once a node is back, where
/// another server finds them.
pub async fn with_every_node_down_sessions_are_served_locally_and_backed_up_when_one_returns<
    F: StoreFixture,
>() {
    let case = "with_every_node_down_sessions_are_served_locally_and_backed_up_when_one_returns";
    let started = start::<F>(1).await;
    let node = started.node(0).clone();
    let a1 = sticky(&started.store, "a1").build().unwrap();
    let id = create(&a1, 1).await;
    settle(&a1).await;

    if !started.make_unavailable(&node, case).await {
        return;
    }
    write_n(&a1, &id, 2).await;
    started.wait_down(&node).await;
    for _ in 0..10 {
        assert_eq!(read_n(&a1, &id).await, Some(2));
    }
    let fresh = create(&a1, 3).await;
    assert_eq!(read_n(&a1, &fresh).await, Some(3));
    assert!(a1.stats().degraded > 0);

    started.make_available(&node).await;
    started.wait_available(&node).await;
    started.settle_after_recovery(&a1).await;
    let a2 = sticky(&started.store, "a2").build().unwrap();
    assert_eq!(read_n(&a2, &id).await, Some(2));
    assert_eq!(read_n(&a2, &fresh).await, Some(3));
}
