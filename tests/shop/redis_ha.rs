//! The shop over replicated Redis deployments, each one node: a Sentinel group
//! (`redis+sentinel://`) and a Cluster (`redis+cluster://`), and the durable setting
//! (`--wait-replicas N`). The contract is the same as over one server; what the
//! durable setting adds is a 503 for a non-sticky update that the replicas did not
//! acknowledge in time.

use tandem_testkit::{RedisCluster, RedisSentinelGroup};

use super::*;

async fn shop_over(args: &[&str]) -> Shop {
    let backend = Backend::connect(&options(args))
        .await
        .expect("the shop connects");
    Shop::build(&options(args), backend).expect("the shop")
}

/// The basic cart flow over `url` in both modes: fill a cart, add to it, and find
/// it again from a second server (non-sticky) or after a restart (sticky), that is,
/// in Redis. `extra` goes on every command line.
async fn cart_flow(url: &str, extra: &[&str]) {
    for (mode, route) in [("sticky", Some("a1")), ("non-sticky", None)] {
        let mut args = vec!["--redis", url, "--mode", mode];
        if let Some(route) = route {
            args.extend(["--route", route]);
        }
        args.extend(extra);
        let shop = shop_over(&args).await;
        let id = fill(&shop.router).await;
        assert!(
            id.contains("-r1"),
            "{mode}: the deployment is node r1: {id}"
        );
        let reply = call(
            &shop.router,
            "POST",
            "/cart/items?sku=pear&qty=1",
            Some(&id),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{mode}: {}", reply.body);
        assert_eq!(
            reply.json()["items"],
            json!({"apple": 2, "pear": 1}),
            "{mode}"
        );
        let report = shop.sessions.shutdown(Duration::from_secs(5)).await;
        assert_eq!(report.unsaved, 0, "{mode}: every backup written");
        let again = shop_over(&args).await;
        let reply = call(&again.router, "GET", "/cart", Some(&id)).await;
        assert_eq!(reply.status, StatusCode::OK, "{mode}: {}", reply.body);
        assert_eq!(
            reply.json()["items"],
            json!({"apple": 2, "pear": 1}),
            "{mode}: from Redis, args {args:?}"
        );
        let nodes = call(&again.router, "GET", "/admin/nodes", None)
            .await
            .json();
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
    let shop = shop_over(&args).await;
    let id = fill(&shop.router).await;
    let replica = group.replicas()[0];
    replica.pause();
    let started = Instant::now();
    let reply = call(&shop.router, "POST", "/cart/items?sku=fig&qty=1", Some(&id)).await;
    let waited = started.elapsed();
    replica.resume();
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "an unreplicated non-sticky update fails: {}",
        reply.body
    );
    assert!(
        waited >= shop::WAIT_TIMEOUT && waited < Duration::from_secs(5),
        "the update waited for the replica, boundedly: {waited:?}"
    );
    // The replica catches up; updates are acknowledged again.
    let deadline = Instant::now() + Duration::from_secs(10);
    let reply = loop {
        let reply = call(
            &shop.router,
            "POST",
            "/cart/items?sku=plum&qty=1",
            Some(&id),
        )
        .await;
        if reply.status == StatusCode::OK || Instant::now() > deadline {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "after SIGCONT: {}",
        reply.body
    );
    let items = &reply.json()["items"];
    assert_eq!(items["apple"], 2, "{items}");
    assert!(items["plum"].as_i64() >= Some(1), "{items}");
    let reply = call(&shop.router, "GET", "/cart", Some(&id)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(&reply.json()["items"], items);
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
