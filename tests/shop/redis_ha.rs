//! The shop over replicated Redis deployments, each one node: a Sentinel group
//! (`redis+sentinel://`) and a Cluster (`redis+cluster://`), and the durable setting
//! (`--wait-replicas N`). The contract is the same as over one server; what the
//! durable setting adds is a 503 for a non-sticky update that the replicas did not
//! acknowledge in time.

use std::time::{Duration, Instant};

use http::StatusCode;
use serde_json::json;
use tandem_testkit::{RedisCluster, RedisSentinelGroup};

use crate::options::{Options, WAIT_TIMEOUT};
use crate::redis::shop_over;
use crate::shops::Framework;
use crate::{call, fill, options};

/// The basic cart flow over `url` in both modes, on each shop: fill a cart, add to
/// it, and find it again from a second server (non-sticky) or after a restart
/// (sticky), that is, in Redis. `extra` goes on every command line.
async fn cart_flow(url: &str, extra: &[&str]) {
    let runs = [Framework::Axum, Framework::Actix]
        .into_iter()
        .flat_map(|framework| {
            [("sticky", Some("a1")), ("non-sticky", None)]
                .map(|(mode, route)| (framework, mode, route))
        });
    for (framework, mode, route) in runs {
        let mut args = vec!["--redis", url, "--mode", mode];
        if let Some(route) = route {
            args.extend(["--route", route]);
        }
        args.extend(extra);
        let mode = format!("{framework}, {mode}");
        let shop = shop_over(framework, &args).await;
        let id = fill(&shop).await;
        assert!(
            id.contains("-r1"),
            "{mode}: the deployment is node r1: {id}"
        );
        let reply = call(&shop, "POST", "/cart/items?sku=pear&qty=1", Some(&id)).await;
        assert_eq!(reply.status, StatusCode::OK, "{mode}: {}", reply.body);
        assert_eq!(
            reply.json()["items"],
            json!({"apple": 2, "pear": 1}),
            "{mode}"
        );
        let report = shop.flush(Duration::from_secs(5)).await;
        assert_eq!(report.unsaved, 0, "{mode}: every backup written");
        let again = shop_over(framework, &args).await;
        let reply = call(&again, "GET", "/cart", Some(&id)).await;
        assert_eq!(reply.status, StatusCode::OK, "{mode}: {}", reply.body);
        assert_eq!(
            reply.json()["items"],
            json!({"apple": 2, "pear": 1}),
            "{mode}: from Redis, args {args:?}"
        );
        let nodes = call(&again, "GET", "/admin/nodes", None).await.json();
        assert_eq!(nodes["nodes"][0]["id"], "r1", "{nodes}");
        assert_eq!(nodes["nodes"][0]["up"], true, "{nodes}");
    }
}

/// A Sentinel group with one replica: the cart flow, then with `--wait-replicas 1`
/// the flow again; with the replica stopped (SIGSTOP) a non-sticky update answers
/// 503 (no acknowledgement within the wait timeout), and once it runs again
/// (SIGCONT) updates succeed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_a_sentinel_group_with_and_without_waiting_for_a_replica() {
    let group = RedisSentinelGroup::start(1, 1);
    let url = group.url();
    assert!(url.starts_with("redis+sentinel://"), "{url}");
    cart_flow(&url, &[]).await;
    cart_flow(&url, &["--wait-replicas", "1"]).await;

    let args = [
        "--redis",
        url.as_str(),
        "--mode",
        "non-sticky",
        "--wait-replicas",
        "1",
    ];
    for framework in [Framework::Axum, Framework::Actix] {
        unreplicated_update_is_503(framework, &group, &args).await;
    }
}

/// On `framework`'s shop: with the replica stopped, a non-sticky update answers 503
/// after the bounded wait; once the replica runs again, updates succeed again.
async fn unreplicated_update_is_503(
    framework: Framework,
    group: &RedisSentinelGroup,
    args: &[&str],
) {
    let shop = shop_over(framework, args).await;
    let id = fill(&shop).await;
    let replica = group.replicas()[0];
    replica.pause();
    let started = Instant::now();
    let reply = call(&shop, "POST", "/cart/items?sku=fig&qty=1", Some(&id)).await;
    let waited = started.elapsed();
    replica.resume();
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{framework}: an unreplicated non-sticky update fails: {}",
        reply.body
    );
    assert!(
        waited >= WAIT_TIMEOUT && waited < Duration::from_secs(5),
        "{framework}: the update waited for the replica, boundedly: {waited:?}"
    );
    // The replica catches up; updates are acknowledged again.
    let deadline = Instant::now() + Duration::from_secs(10);
    let reply = loop {
        let reply = call(&shop, "POST", "/cart/items?sku=plum&qty=1", Some(&id)).await;
        if reply.status == StatusCode::OK || Instant::now() > deadline {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "{framework}: after SIGCONT: {}",
        reply.body
    );
    let items = &reply.json()["items"];
    assert_eq!(items["apple"], 2, "{framework}: {items}");
    assert!(items["plum"].as_i64() >= Some(1), "{framework}: {items}");
    let reply = call(&shop, "GET", "/cart", Some(&id)).await;
    assert_eq!(reply.status, StatusCode::OK, "{framework}: {}", reply.body);
    assert_eq!(&reply.json()["items"], items, "{framework}");
}

/// A Cluster of three masters with a replica each: the cart flow, with and without
/// `--wait-replicas 1`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_a_cluster_with_and_without_waiting_for_a_replica() {
    let cluster = RedisCluster::start(3, 1);
    let url = cluster.url();
    assert!(url.starts_with("redis+cluster://"), "{url}");
    cart_flow(&url, &[]).await;
    cart_flow(&url, &["--wait-replicas", "1"]).await;
}

#[test]
fn the_wait_replicas_command_line() {
    let url = "redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/shop";
    assert_eq!(options(&["--redis", url]).wait_replicas, None);
    let durable = options(&["--redis", url, "--wait-replicas", "2"]);
    assert_eq!(durable.wait_replicas, Some(2));
    assert_eq!(
        options(&["--redis", url, "--wait-replicas", "0"]).wait_replicas,
        None,
        "0: writes do not wait"
    );
    let cluster = options(&["--redis", "redis+cluster://127.0.0.1:7000,127.0.0.1:7001"]);
    assert!(cluster.redis.is_some());
    for bad in [
        &["--wait-replicas", "1"][..],
        &["--wait-replicas", "0"],
        &["--memcached", "n1:127.0.0.1:11211", "--wait-replicas", "1"],
        &["--redis", url, "--wait-replicas", "-1"],
        &["--redis", url, "--wait-replicas", "one"],
        &["--redis", url, "--wait-replicas"],
    ] {
        let args = bad.iter().map(|arg| arg.to_string());
        let error = Options::parse(args).expect_err(&format!("{bad:?}"));
        assert!(error.contains("--wait-replicas"), "{bad:?}: {error}");
        assert_eq!(error.lines().count(), 1, "{error}");
    }
}
