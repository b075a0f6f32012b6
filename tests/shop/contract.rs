//! The contract both shops keep, each test run once per shop (see [`for_both_shops`]):
//! routes, JSON answers, statuses, cookies, sessions left alone where they must be.

use std::time::{Duration, Instant};

use http::StatusCode;
use serde_json::{Value, json};
use tandem::Mode;
use tandem_testkit::MemcachedCluster;

use crate::common::{connect, operations};
use crate::options::{CodecChoice, Options};
use crate::shops::{Framework, Served};
use crate::{call, fill, options, quiet, start};

async fn the_cart_and_its_cookie(framework: Framework) {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let shop = start(framework, &["--route", "a1"], &store).await;

    let reply = call(&shop, "GET", "/cart", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.json(),
        json!({"session": null, "items": {}, "user": null, "served_by": "a1"})
    );
    assert_eq!(reply.set_cookie, None, "GET /cart creates no session");

    let reply = call(&shop, "POST", "/cart/items?sku=apple&qty=2", None).await;
    let id = reply.cookie_value();
    assert!(id.ends_with("-n1.a1"), "{id}");
    assert_eq!(
        reply.set_cookie.as_deref(),
        Some(format!("tandem_session={id}; Path=/; Max-Age=1800; HttpOnly; SameSite=Lax").as_str()),
        "no Secure without --secure-cookie"
    );
    assert_eq!(
        reply.json(),
        json!({"session": id, "items": {"apple": 2}, "user": null, "served_by": "a1"})
    );

    // More of it, another item, then less: no new cookie while the id stays.
    for (uri, items) in [
        ("/cart/items?sku=apple&qty=3", json!({"apple": 5})),
        ("/cart/items?sku=pear&qty=1", json!({"apple": 5, "pear": 1})),
        (
            "/cart/items?sku=apple&qty=-4",
            json!({"apple": 1, "pear": 1}),
        ),
        ("/cart/items?sku=apple&qty=-1", json!({"pear": 1})),
        ("/cart/items?sku=kiwi&qty=-3", json!({"pear": 1})),
    ] {
        let reply = call(&shop, "POST", uri, Some(&id)).await;
        assert_eq!(reply.status, StatusCode::OK, "{uri}: {}", reply.body);
        assert_eq!(reply.json()["items"], items, "{uri}");
        assert_eq!(reply.set_cookie, None, "{uri}");
    }
    let reply = call(&shop, "GET", "/cart", Some(&id)).await;
    assert_eq!(reply.json()["session"], json!(id));
    assert_eq!(reply.json()["items"], json!({"pear": 1}));
    assert_eq!(reply.set_cookie, None);
}

async fn secure_cookie_and_max_inactive_options(framework: Framework) {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let shop = start(
        framework,
        &["--secure-cookie", "--max-inactive", "60"],
        &store,
    )
    .await;
    let reply = call(&shop, "POST", "/cart/items?sku=a&qty=1", None).await;
    let id = reply.cookie_value();
    assert_eq!(
        reply.set_cookie.as_deref(),
        Some(
            format!("tandem_session={id}; Path=/; Max-Age=60; Secure; HttpOnly; SameSite=Lax")
                .as_str()
        )
    );
    // Without a route the server names itself by its listen address.
    assert_eq!(reply.json()["served_by"], json!(shop.address.to_string()));
}

async fn login_cycles_the_id_and_the_old_id_no_longer_loads(framework: Framework) {
    let cluster = MemcachedCluster::start(2);
    let store = connect(&cluster).await;
    let a1 = start(framework, &["--route", "a1"], &store).await;
    let old = fill(&a1).await;

    let reply = call(&a1, "POST", "/login?user=ann", Some(&old)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.json()["user"], json!("ann"));
    assert_eq!(reply.json()["items"], json!({"apple": 2}));
    let new = reply.cookie_value();
    assert_ne!(new, old);

    let reply = call(&a1, "GET", "/cart", Some(&new)).await;
    assert_eq!(
        reply.json(),
        json!({"session": new, "items": {"apple": 2}, "user": "ann", "served_by": "a1"}),
        "{:?}",
        reply.set_cookie
    );

    let reply = call(&a1, "GET", "/cart", Some(&old)).await;
    assert_eq!(
        reply.json(),
        json!({"session": null, "items": {}, "user": null, "served_by": "a1"})
    );
    // The old id's cookie is left alone: clearing it in a response that races the
    // login's would delete the new cookie in the browser.
    assert_eq!(reply.set_cookie, None);

    // Another server cannot load the old id from memcached either.
    quiet(&a1, &store).await; // the old copy's tombstone
    let a2 = start(framework, &["--route", "a2"], &store).await;
    assert_eq!(
        call(&a2, "GET", "/cart", Some(&old)).await.json()["session"],
        Value::Null
    );
    let reply = call(&a2, "GET", "/cart", Some(&new)).await;
    assert_eq!(
        reply.json()["user"],
        json!("ann"),
        "the new id is taken over"
    );
    assert!(reply.cookie_value().ends_with(".a2"));

    // Login without a cookie creates a session with the user.
    let reply = call(&a1, "POST", "/login?user=bob", None).await;
    let bob = reply.cookie_value();
    assert_eq!(
        call(&a1, "GET", "/cart", Some(&bob)).await.json()["user"],
        json!("bob")
    );
}

async fn logout_ends_the_session_and_clears_the_cookie(framework: Framework) {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let shop = start(framework, &["--mode", "non-sticky"], &store).await;
    let id = fill(&shop).await;

    let reply = call(&shop, "POST", "/logout", Some(&id)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.clears_cookie(), "{:?}", reply.set_cookie);
    assert_eq!(reply.json()["session"], Value::Null);
    let reply = call(&shop, "GET", "/cart", Some(&id)).await;
    assert_eq!(reply.json()["session"], Value::Null);
    assert_eq!(reply.json()["items"], json!({}));

    let reply = call(&shop, "POST", "/logout", None).await;
    assert_eq!((reply.status, reply.set_cookie), (StatusCode::OK, None));
}

async fn client_mistakes_are_400_and_create_no_session(framework: Framework) {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let shop = start(framework, &[], &store).await;
    let id = fill(&shop).await;
    let created = shop.stats().sessions_created;
    let long = format!("/cart/items?sku={}&qty=1", "s".repeat(200));
    let bad = [
        "/cart/items",
        "/cart/items?qty=1",
        "/cart/items?sku=&qty=1",
        "/cart/items?sku=a",
        "/cart/items?sku=a&qty=",
        "/cart/items?sku=a&qty=two",
        "/cart/items?sku=a&qty=1.5",
        "/cart/items?sku=a&qty=99999999999999999999",
        "/cart/items?sku=a&qty=1&qty=2",
        long.as_str(),
        "/prefs",
        "/prefs?key=lang",
        "/prefs?value=de",
        "/login",
        "/login?user=",
    ];
    for uri in bad {
        for cookie in [None, Some(id.as_str())] {
            let reply = call(&shop, "POST", uri, cookie).await;
            assert_eq!(
                reply.status,
                StatusCode::BAD_REQUEST,
                "{uri}: {}",
                reply.body
            );
            assert!(reply.content_type.starts_with("text/plain"), "{uri}");
            assert!(!reply.body.trim().is_empty(), "{uri}: a message");
            assert_eq!(reply.set_cookie, None, "{uri}");
        }
    }
    // Overflowing a quantity is refused, and the cart is as it was.
    let reply = call(
        &shop,
        "POST",
        "/cart/items?sku=apple&qty=9223372036854775807",
        Some(&id),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    assert_eq!(shop.stats().sessions_created, created);
    let reply = call(&shop, "GET", "/cart", Some(&id)).await;
    assert_eq!(reply.json()["items"], json!({"apple": 2}));
}

async fn malformed_cookies_are_no_session(framework: Framework) {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let shop = start(framework, &["--mode", "non-sticky"], &store).await;
    let before = operations(&store);
    let long = "x".repeat(20_000);
    for cookie in ["%%%", "a;b", "Zm9v-n9", "\u{1F36A}", long.as_str(), "", "-"] {
        let reply = call(&shop, "GET", "/cart", Some(cookie)).await;
        assert_eq!(reply.status, StatusCode::OK, "{cookie:.20}");
        let body = reply.json();
        assert_eq!(body["session"], Value::Null, "{cookie:.20}");
    }
    assert_eq!(
        operations(&store),
        before,
        "no memcached call for any of them"
    );
}

async fn static_health_and_admin_paths_never_touch_sessions(framework: Framework) {
    let cluster = MemcachedCluster::start(2);
    let store = connect(&cluster).await;
    // Non-sticky: every session use would be a memcached call.
    let shop = start(framework, &["--mode", "non-sticky"], &store).await;
    let id = fill(&shop).await;

    let before = quiet(&shop, &store).await;
    let loads = shop.stats().loads;
    let reply = call(&shop, "GET", "/static/css/site.css", Some(&id)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body.contains("css/site.css"));
    assert_eq!(reply.set_cookie, None);
    let reply = call(&shop, "GET", "/static/logo.png", None).await;
    assert_eq!(reply.set_cookie, None);
    let reply = call(&shop, "GET", "/healthz", Some(&id)).await;
    assert_eq!((reply.status, reply.body.as_str()), (StatusCode::OK, "ok"));
    for path in ["/metrics", "/admin/nodes"] {
        let reply = call(&shop, "GET", path, Some(&id)).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        assert_eq!(reply.set_cookie, None, "{path}");
    }
    assert_eq!(operations(&store), before, "no memcached call");
    assert_eq!(shop.stats().loads, loads, "no session load");

    // The cart does use the session, and memcached with it.
    assert_eq!(
        call(&shop, "GET", "/cart", Some(&id)).await.json()["items"],
        json!({"apple": 2})
    );
    assert!(operations(&store) > before);
}

async fn preferences_live_in_their_own_attributes(framework: Framework) {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let shop = start(framework, &[], &store).await;
    assert_eq!(
        call(&shop, "GET", "/prefs", None).await.json(),
        json!({"prefs": {}})
    );
    let reply = call(&shop, "POST", "/prefs?key=lang&value=de", None).await;
    let id = reply.cookie_value();
    assert_eq!(reply.json(), json!({"prefs": {"lang": "de"}}));
    let reply = call(
        &shop,
        "POST",
        "/prefs?key=theme&value=dark%20blue",
        Some(&id),
    )
    .await;
    assert_eq!(
        reply.json(),
        json!({"prefs": {"lang": "de", "theme": "dark blue"}})
    );
    let reply = call(&shop, "GET", "/prefs", Some(&id)).await;
    assert_eq!(
        reply.json(),
        json!({"prefs": {"lang": "de", "theme": "dark blue"}})
    );
    // The cart is a separate attribute.
    assert_eq!(
        call(&shop, "GET", "/cart", Some(&id)).await.json()["items"],
        json!({})
    );
}

async fn metrics_and_nodes(framework: Framework) {
    let cluster = MemcachedCluster::start(2);
    let store = connect(&cluster).await;
    let shop = start(framework, &["--mode", "non-sticky"], &store).await;
    fill(&shop).await;

    let reply = call(&shop, "GET", "/metrics", None).await;
    assert!(reply.content_type.starts_with("text/plain"));
    assert!(
        reply.body.contains("\ntandem_sessions_created_total 1\n"),
        "{}",
        reply.body
    );
    assert!(reply.body.contains("# TYPE tandem_loads_total counter\n"));
    assert!(
        reply.body.contains("# TYPE tandem_node_up gauge\n"),
        "{}",
        reply.body
    );
    for line in reply
        .body
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
    {
        let (name, value) = line.rsplit_once(' ').unwrap();
        assert!(name.starts_with("tandem_"), "{line}");
        value.parse::<f64>().unwrap();
    }

    // The backup write in flight counts as an operation before its latency does.
    quiet(&shop, &store).await;
    let nodes = call(&shop, "GET", "/admin/nodes", None).await.json();
    let nodes = nodes["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), cluster.ids().len());
    for (node, id) in nodes.iter().zip(cluster.ids()) {
        assert_eq!(node["id"], json!(id));
        assert_eq!(node["address"], json!(cluster.node(&id).address()));
        assert_eq!(node["up"], json!(true));
        assert_eq!(node["failover"], json!(false));
        assert!(node["operations"].as_u64().is_some(), "{node}");
        assert_eq!(node["connection_waits"], json!(0), "{node}");
        assert_eq!(node["last_error"], Value::Null);
    }
    let busiest = nodes
        .iter()
        .find(|node| node["operations"].as_u64() > Some(0))
        .unwrap();
    assert!(
        busiest["mean_latency_micros"].as_u64().is_some(),
        "{busiest}"
    );

    // A dead node shows as down once an operation on it failed.
    cluster.node("n2").kill();
    let deadline = Instant::now() + Duration::from_secs(5);
    while n2_up(&shop).await == json!(true) {
        assert!(Instant::now() < deadline, "n2 never marked down");
        fill(&shop).await;
    }
    assert_eq!(n2_up(&shop).await, json!(false));
    let nodes = call(&shop, "GET", "/admin/nodes", None).await.json();
    assert_eq!(nodes["nodes"][1]["down_transitions"], json!(1));
    assert!(nodes["nodes"][1]["last_error"].is_string(), "{nodes}");
}

async fn n2_up(shop: &Served) -> Value {
    call(shop, "GET", "/admin/nodes", None).await.json()["nodes"][1]["up"].clone()
}

async fn servers_with_different_codecs_share_sessions(framework: Framework) {
    let cluster = MemcachedCluster::start(2);
    let store = connect(&cluster).await;
    let json_shop = start(
        framework,
        &["--mode", "non-sticky", "--codec", "json"],
        &store,
    )
    .await;
    let speedy_shop = start(
        framework,
        &["--mode", "non-sticky", "--codec", "speedy"],
        &store,
    )
    .await;
    let msgpack_shop = start(
        framework,
        &["--mode", "non-sticky", "--codec", "msgpack"],
        &store,
    )
    .await;

    let reply = call(&json_shop, "POST", "/login?user=ann", None).await;
    let id = reply.cookie_value();
    let reply = call(
        &speedy_shop,
        "POST",
        "/cart/items?sku=apple&qty=2",
        Some(&id),
    )
    .await;
    assert_eq!(reply.json()["user"], json!("ann"), "speedy reads JSON");
    let reply = call(
        &msgpack_shop,
        "POST",
        "/cart/items?sku=apple&qty=1",
        Some(&id),
    )
    .await;
    assert_eq!(
        reply.json()["items"],
        json!({"apple": 3}),
        "msgpack reads speedy"
    );
    assert_eq!(reply.json()["user"], json!("ann"));
    let reply = call(&json_shop, "GET", "/cart", Some(&id)).await;
    assert_eq!(
        reply.json()["items"],
        json!({"apple": 3}),
        "JSON reads msgpack"
    );
}

#[test]
fn the_command_line() {
    let defaults = options(&[]);
    assert_eq!(defaults.listen, "127.0.0.1:8080");
    assert_eq!(defaults.mode, Mode::Sticky);
    assert_eq!(defaults.codec, CodecChoice::Speedy);
    assert_eq!(defaults.concurrency, tandem::Concurrency::Merge);
    assert_eq!(defaults.max_inactive, 1800);
    assert!(!defaults.backup_sync && !defaults.secure_cookie);
    assert_eq!((defaults.memcached, defaults.route), (None, None));

    let all = options(&[
        "--listen",
        "0.0.0.0:9000",
        "--mode",
        "non-sticky",
        "--memcached",
        "n1:127.0.0.1:11211,n2:127.0.0.1:11212",
        "--failover-nodes",
        "n2",
        "--route",
        "b7",
        "--codec",
        "msgpack",
        "--concurrency",
        "lock",
        "--max-inactive",
        "0",
        "--backup",
        "sync",
        "--secure-cookie",
    ]);
    assert_eq!(all.listen, "0.0.0.0:9000");
    assert_eq!(all.mode, Mode::NonSticky);
    assert_eq!(all.failover_nodes.as_deref(), Some("n2"));
    assert_eq!(all.route.as_deref(), Some("b7"));
    assert_eq!(all.codec, CodecChoice::Msgpack);
    assert_eq!(all.concurrency, tandem::Concurrency::Lock);
    assert_eq!(all.max_inactive, 0);
    assert!(all.backup_sync && all.secure_cookie);
    assert_eq!(
        options(&["--concurrency", "none"]).concurrency,
        tandem::Concurrency::LastWriterWins
    );

    for bad in [
        &["--mode", "both"][..],
        &["--codec", "xml"],
        &["--concurrency", "all"],
        &["--backup", "later"],
        &["--max-inactive", "-1"],
        &["--route", "a.b"],
        &["--memcached", "nope"],
        &["--failover-nodes", "n2"],
        &["--listen"],
        &["--verbose"],
    ] {
        let args = bad.iter().map(|arg| arg.to_string());
        assert!(Options::parse(args).is_err(), "{bad:?}");
    }
    assert_eq!(Options::parse(["--help".to_string()]), Ok(None));
}

/// What neither router knows: an unknown path is 404, a known path with another
/// method 405 naming the allowed ones; neither touches a session.
async fn unknown_paths_and_methods(framework: Framework) {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let shop = start(framework, &[], &store).await;
    let id = fill(&shop).await;
    let loads = shop.stats().loads;
    for (method, uri) in [
        ("GET", "/nowhere"),
        ("POST", "/cart/items/more"),
        ("GET", "/static/"),
    ] {
        let reply = call(&shop, method, uri, Some(&id)).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{method} {uri}");
        assert_eq!(reply.set_cookie, None, "{method} {uri}");
    }
    for (method, uri, allowed) in [
        ("GET", "/login", "POST"),
        ("GET", "/logout", "POST"),
        ("GET", "/cart/items", "POST"),
        ("POST", "/cart", "GET"),
        ("DELETE", "/prefs", "GET"),
        ("POST", "/healthz", "GET"),
    ] {
        let reply = call(&shop, method, uri, Some(&id)).await;
        assert_eq!(
            reply.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {uri}"
        );
        assert!(
            reply.allow.contains(allowed),
            "{method} {uri}: {}",
            reply.allow
        );
        assert_eq!(reply.set_cookie, None, "{method} {uri}");
    }
    assert_eq!(shop.stats().loads, loads, "no session load");
    assert_eq!(
        call(&shop, "GET", "/cart", Some(&id)).await.json()["items"],
        json!({"apple": 2})
    );
}

/// Stopping as on SIGTERM: the flush runs first, then the server stops accepting,
/// and every backup is written: a new server finds the session in memcached.
async fn stopping_writes_every_backup(framework: Framework) {
    let cluster = MemcachedCluster::start(2);
    let store = connect(&cluster).await;
    let shop = start(framework, &["--route", "a1"], &store).await;
    let id = fill(&shop).await;
    let reply = call(&shop, "POST", "/cart/items?sku=pear&qty=1", Some(&id)).await;
    assert_eq!(reply.json()["items"], json!({"apple": 2, "pear": 1}));
    let address = shop.address;
    shop.stop().await;
    assert!(
        crate::client::Client::new(address)
            .send("GET", "/healthz", None)
            .await
            .is_err(),
        "{framework}: still accepting after the stop"
    );
    let again = start(framework, &["--route", "a2"], &store).await;
    let reply = call(&again, "GET", "/cart", Some(&id)).await;
    assert_eq!(reply.json()["items"], json!({"apple": 2, "pear": 1}));
    assert!(reply.cookie_value().ends_with(".a2"), "taken over");
}

for_both_shops!(
    the_cart_and_its_cookie,
    secure_cookie_and_max_inactive_options,
    login_cycles_the_id_and_the_old_id_no_longer_loads,
    logout_ends_the_session_and_clears_the_cookie,
    client_mistakes_are_400_and_create_no_session,
    malformed_cookies_are_no_session,
    static_health_and_admin_paths_never_touch_sessions,
    preferences_live_in_their_own_attributes,
    metrics_and_nodes,
    servers_with_different_codecs_share_sessions,
    unknown_paths_and_methods,
    stopping_writes_every_backup,
);
