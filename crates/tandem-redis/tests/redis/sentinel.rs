//! A Sentinel group as one node, against real servers and sentinels: the store
//! finds the new master by itself after the master dies, hangs or is demoted, never
//! has a write acknowledged by a former master, follows the sentinels'
//! `+switch-master` announcements faster than its polling, and does without the
//! sentinels that are down or hung.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tandem_core::{RemoteStore, Ttl};
use tandem_redis::ConnectError;
use tandem_testkit::{RedisProcess, RedisReply, RedisSentinelGroup};

use crate::common::{LATE, TIMEOUT, assert_names_r1, config, connect, key, node, try_connect};
use crate::traffic::{Report, Traffic};

/// Generous: a failover takes a couple of seconds, more on a busy machine.
const FAILOVER: Duration = Duration::from_secs(20);

/// Runs a blocking step of the test kit (a failover, a wait) off the runtime's
/// workers, so that the traffic keeps running meanwhile.
pub async fn blocking<T: Send + 'static>(step: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(step).await.unwrap()
}

/// Asserts that every write of `acknowledged` is on `master` with its value (the
/// store's value is followed by its 8-byte CAS token).
#[track_caller]
fn assert_on(master: &RedisProcess, acknowledged: &[(String, String)]) {
    assert!(!acknowledged.is_empty());
    for (k, value) in acknowledged {
        match master.command(&["GET", k]) {
            RedisReply::Bulk(stored) => assert!(
                stored.starts_with(value.as_bytes()),
                "{k} on {}: {stored:?}",
                master.address()
            ),
            other => panic!(
                "{k}, acknowledged, is not on the master {}: {other:?}",
                master.address()
            ),
        }
    }
}

/// The port of the server the sentinels name now.
fn master_port(group: &RedisSentinelGroup) -> u16 {
    group.master().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_is_replaced_within_a_bounded_window() {
    let group = Arc::new(RedisSentinelGroup::start(2, 3));
    let store = Arc::new(connect(&group.url(), config()).await);
    let r1 = node("r1");
    let epoch = store.epoch(&r1).unwrap();
    let traffic = Traffic::start(&store, 4, "kill");
    traffic
        .wait_for_successes(50, Duration::from_secs(5))
        .await
        .unwrap();

    let old = master_port(&group);
    let killed = Instant::now();
    group.master().kill();
    let failover = {
        let group = Arc::clone(&group);
        blocking(move || {
            let old = group.servers().iter().find(|s| s.port() == old).unwrap();
            group.wait_for_master_change(old, FAILOVER);
        })
        .await;
        killed.elapsed()
    };
    let back = traffic
        .wait_for_successes(50, Duration::from_secs(10))
        .await
        .expect("the store serves again after the failover");
    let promoted = Instant::now();
    traffic
        .wait_for_successes(100, Duration::from_secs(5))
        .await
        .unwrap();
    let report: Report = traffic.stop().await;
    println!(
        "killed master: failover {failover:?}, store back {back:?} after it; {}",
        report.summary()
    );

    // Failures only around the failover: from the kill to a few operation
    // timeouts and probe intervals after the sentinels named the new master.
    let window = report.failure_window();
    assert!(!report.failures().is_empty(), "the kill cost nothing?");
    assert!(window <= failover + TIMEOUT * 3 + LATE, "{window:?}");
    for op in report.failures() {
        assert!(op.started + TIMEOUT + LATE >= killed, "{op:?}");
        assert!(op.outcome.as_ref().unwrap_err().is_node_failure(), "{op:?}");
    }
    assert!(report.slowest() <= TIMEOUT + LATE, "{:?}", report.slowest());
    let late = report.ops.iter().filter(|op| op.started >= promoted);
    assert!(late.clone().all(|op| op.outcome.is_ok()));
    assert!(late.count() >= 100);
    assert!(
        store.epoch(&r1).unwrap() > epoch,
        "another master, another epoch"
    );
    let new = group.master();
    assert_ne!(new.port(), old);
    assert_on(new, &report.acknowledged_since(promoted));
    let health = store.node_health(&r1).unwrap();
    println!(
        "health: marked down {} up {}, connections {}",
        health.marked_down, health.marked_up, health.connections_opened
    );
    assert!(health.up);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_graceful_failover_the_demoted_master_acknowledges_nothing() {
    // A probe interval far longer than the test: the store follows the failover
    // through the sentinels' announcement (or a READONLY), not its polling.
    let polling = Duration::from_secs(30);
    let group = Arc::new(RedisSentinelGroup::start(1, 3));
    let store = Arc::new(connect(&group.url(), config().with_probe_interval(polling)).await);
    let r1 = node("r1");
    let epoch = store.epoch(&r1).unwrap();
    // The store subscribes in the background: give it the time to.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let traffic = Traffic::start(&store, 4, "graceful");
    traffic
        .wait_for_successes(50, Duration::from_secs(5))
        .await
        .unwrap();

    let old = master_port(&group);
    let asked = Instant::now();
    let new = {
        let group = Arc::clone(&group);
        blocking(move || group.failover().port()).await
    };
    let switched = Instant::now();
    let followed = traffic
        .wait_for_successes(20, Duration::from_secs(5))
        .await
        .expect("the store follows the failover well within its probe interval");
    traffic
        .wait_for_successes(100, Duration::from_secs(5))
        .await
        .unwrap();
    let report = traffic.stop().await;
    println!(
        "graceful failover took {:?}; the store followed {followed:?} after; {}",
        switched - asked,
        report.summary()
    );
    assert!(followed < Duration::from_secs(2), "{followed:?}");
    assert!(report.slowest() <= TIMEOUT + LATE, "{:?}", report.slowest());
    // Every write acknowledged once the failover is complete (the old master is a
    // replica) is on the new master: none went to the demoted one.
    assert_ne!(new, old);
    let master = group.master();
    assert_eq!(master.port(), new);
    assert_on(master, &report.acknowledged_since(switched));
    assert!(store.epoch(&r1).unwrap() > epoch);
    let health = store.node_health(&r1).unwrap();
    assert!(health.up);
    println!(
        "health: {} failures, marked down {}, connections {}",
        health.failures, health.marked_down, health.connections_opened
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_paused_past_the_failover_gets_no_acknowledged_write() {
    let group = Arc::new(RedisSentinelGroup::start(2, 3));
    let store = Arc::new(connect(&group.url(), config()).await);
    let r1 = node("r1");
    let epoch = store.epoch(&r1).unwrap();
    let traffic = Traffic::start(&store, 4, "pause");
    traffic
        .wait_for_successes(50, Duration::from_secs(5))
        .await
        .unwrap();

    let old = master_port(&group);
    let paused = Instant::now();
    group.master().pause();
    let new = {
        let group = Arc::clone(&group);
        blocking(move || {
            let old = group.servers().iter().find(|s| s.port() == old).unwrap();
            group.wait_for_master_change(old, FAILOVER).port()
        })
        .await
    };
    let failover = paused.elapsed();
    let switched = Instant::now();
    // The old master comes back believing it is the master, until the sentinels
    // tell it otherwise (up to ten seconds later): a stale master.
    let old_server = group.servers().iter().find(|s| s.port() == old).unwrap();
    old_server.resume();
    traffic
        .wait_for_successes(200, Duration::from_secs(10))
        .await
        .expect("the store serves again");
    let stale = matches!(old_server.command(&["ROLE"]), RedisReply::Array(role) if role[0].as_str() == Some("master"));
    let report = traffic.stop().await;
    println!(
        "paused master: failover {failover:?}, old master still a master at the end: {stale}; {}",
        report.summary()
    );
    assert!(report.failure_window() <= failover + TIMEOUT * 3 + LATE);
    assert!(report.slowest() <= TIMEOUT + LATE, "{:?}", report.slowest());
    let acknowledged = report.acknowledged_since(switched);
    assert_on(group.master(), &acknowledged);
    assert_eq!(group.master().port(), new);
    if stale {
        // Still a master with its own data: none of those writes reached it.
        for (k, _) in &acknowledged {
            assert_eq!(old_server.command(&["EXISTS", k]), RedisReply::Integer(0));
        }
    }
    assert!(store.epoch(&r1).unwrap() > epoch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinels_that_are_down_or_hung_do_not_stop_the_store() {
    let group = Arc::new(RedisSentinelGroup::start(1, 3));

    // A service the sentinels do not know: a startup error that names the node,
    // also when a sentinel is down (its refused connection is not the answer).
    group.sentinels()[0].kill();
    let wrong = group.url().replace("/tandem", "/nope");
    let error = try_connect(&format!("r1={wrong}"), config())
        .await
        .unwrap_err();
    println!("unknown service: {error}");
    assert!(matches!(error, ConnectError::Rejected { .. }), "{error:?}");
    assert_names_r1(&error);
    assert!(error.to_string().contains("nope"), "{error}");

    // One sentinel dead, one hung: the third answers, at connect and later.
    group.sentinels()[1].pause();
    let started = Instant::now();
    let store = Arc::new(connect(&group.url(), config()).await);
    let took = started.elapsed();
    println!("connect with one sentinel dead and one hung: {took:?}");
    assert!(took < TIMEOUT, "{took:?}");
    let r1 = node("r1");
    assert!(store.is_available(&r1));
    store.set(&r1, &key("k"), b"v", Ttl::Never).await.unwrap();

    let traffic = Traffic::start(&store, 2, "few");
    let old = master_port(&group);
    let failed_over = Instant::now();
    let new = {
        let group = Arc::clone(&group);
        blocking(move || group.failover().port()).await
    };
    let switched = Instant::now();
    let followed = traffic
        .wait_for_successes(50, Duration::from_secs(10))
        .await
        .expect("the store follows the failover");
    let report = traffic.stop().await;
    println!(
        "failover through the one sentinel that answers: {:?}, followed {followed:?} after; {}",
        switched - failed_over,
        report.summary()
    );
    assert_ne!(new, old);
    assert_on(group.master(), &report.acknowledged_since(switched));
    assert_eq!(
        store.get(&r1, &key("k")).await.unwrap().unwrap().value,
        b"v"
    );
    group.sentinels()[1].resume();
}
