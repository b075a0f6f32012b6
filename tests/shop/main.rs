//! The `shop` example's HTTP contract, in process (axum), against real memcached.

// The example itself, so that its routes are tested as they ship. Its `main` is unused
// here.
#[path = "../common/mod.rs"]
mod common;
mod redis;
mod redis_ha;
#[allow(dead_code)]
#[path = "../../examples/shop.rs"]
mod shop;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};
use tandem::Mode;
use tandem::memcached::MemcachedStore;
use tandem_testkit::{MemcachedCluster, wait_until_quiet};
use tower::ServiceExt;

use common::{connect, operations};
use shop::{Backend, CodecChoice, Options, Shop};

/// Waits until the shop's background session work is done and memcached sees no more
/// operations, then returns the operation count.
async fn quiet(shop: &Shop, store: &MemcachedStore) -> u64 {
    wait_until_quiet(
        Duration::from_secs(5),
        || shop.sessions.pending_backups() == 0,
        || operations(store),
    )
    .await
    .expect("memcached never went quiet")
}

fn options(args: &[&str]) -> Options {
    Options::parse(args.iter().map(|arg| arg.to_string()))
        .unwrap()
        .unwrap()
}

fn start(args: &[&str], store: &Arc<MemcachedStore>) -> Shop {
    Shop::build(&options(args), Backend::Memcached(Arc::clone(store))).unwrap()
}

struct Reply {
    status: StatusCode,
    set_cookie: Option<String>,
    content_type: String,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|error| panic!("{error}: {}", self.body))
    }

    /// The value the response sets the session cookie to.
    fn cookie_value(&self) -> String {
        let header = self.set_cookie.as_deref().expect("a Set-Cookie header");
        let pair = header.split(';').next().unwrap();
        let (name, value) = pair.split_once('=').unwrap();
        assert_eq!(name, "tandem_session");
        value.to_owned()
    }

    fn clears_cookie(&self) -> bool {
        self.set_cookie.as_deref().is_some_and(|header| {
            header.starts_with("tandem_session=;") && header.contains("Max-Age=0")
        })
    }
}

async fn call(app: &Router, method: &str, uri: &str, cookie: Option<&str>) -> Reply {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(value) = cookie {
        request = request.header(header::COOKIE, format!("tandem_session={value}"));
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let headers = response.headers();
    let all: Vec<_> = headers.get_all(header::SET_COOKIE).iter().collect();
    assert!(all.len() <= 1, "at most one Set-Cookie: {all:?}");
    let set_cookie = all.first().map(|value| value.to_str().unwrap().to_owned());
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    Reply {
        status,
        set_cookie,
        content_type,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

/// Adds to the cart and returns the session cookie value.
async fn fill(app: &Router) -> String {
    let reply = call(app, "POST", "/cart/items?sku=apple&qty=2", None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.cookie_value()
}

#[tokio::test]
async fn the_cart_and_its_cookie() {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let app = start(&["--route", "a1"], &store).router;

    let reply = call(&app, "GET", "/cart", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.json(),
        json!({"session": null, "items": {}, "user": null, "served_by": "a1"})
    );
    assert_eq!(reply.set_cookie, None, "GET /cart creates no session");

    let reply = call(&app, "POST", "/cart/items?sku=apple&qty=2", None).await;
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
        let reply = call(&app, "POST", uri, Some(&id)).await;
        assert_eq!(reply.status, StatusCode::OK, "{uri}: {}", reply.body);
        assert_eq!(reply.json()["items"], items, "{uri}");
        assert_eq!(reply.set_cookie, None, "{uri}");
    }
    let reply = call(&app, "GET", "/cart", Some(&id)).await;
    assert_eq!(reply.json()["session"], json!(id));
    assert_eq!(reply.json()["items"], json!({"pear": 1}));
    assert_eq!(reply.set_cookie, None);
}

#[tokio::test]
async fn secure_cookie_and_max_inactive_options() {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let app = start(&["--secure-cookie", "--max-inactive", "60"], &store).router;
    let reply = call(&app, "POST", "/cart/items?sku=a&qty=1", None).await;
    let id = reply.cookie_value();
    assert_eq!(
        reply.set_cookie.as_deref(),
        Some(
            format!("tandem_session={id}; Path=/; Max-Age=60; Secure; HttpOnly; SameSite=Lax")
                .as_str()
        )
    );
    // Without a route the server names itself by its listen address.
    assert_eq!(reply.json()["served_by"], json!("127.0.0.1:8080"));
}

#[tokio::test]
async fn login_cycles_the_id_and_the_old_id_no_longer_loads() {
    let cluster = MemcachedCluster::start(2);
    let store = connect(&cluster).await;
    let shop = start(&["--route", "a1"], &store);
    let a1 = shop.router.clone();
    let old = fill(&a1).await;

    let reply = call(&a1, "POST", "/login?user=ann", Some(&old)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.json()["user"], json!("ann"));
    assert_eq!(reply.json()["items"], json!({"apple": 2}));
    let new = reply.cookie_value();
    assert_ne!(new, old);

    let reply = call(&a1, "GET", "/cart", Some(&new)).await;
    assert_eq!(reply.json()["session"], json!(new));
    assert_eq!(reply.json()["user"], json!("ann"));
    assert_eq!(reply.json()["items"], json!({"apple": 2}));

    let reply = call(&a1, "GET", "/cart", Some(&old)).await;
    assert_eq!(
        reply.json(),
        json!({"session": null, "items": {}, "user": null, "served_by": "a1"})
    );
    // The old id's cookie is left alone: clearing it in a response that races the
    // login's would delete the new cookie in the browser.
    assert_eq!(reply.set_cookie, None);

    // Another server cannot load the old id from memcached either.
    quiet(&shop, &store).await; // the old copy's tombstone
    let a2 = start(&["--route", "a2"], &store).router;
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

#[tokio::test]
async fn logout_ends_the_session_and_clears_the_cookie() {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let app = start(&["--mode", "non-sticky"], &store).router;
    let id = fill(&app).await;

    let reply = call(&app, "POST", "/logout", Some(&id)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.clears_cookie(), "{:?}", reply.set_cookie);
    assert_eq!(reply.json()["session"], Value::Null);
    let reply = call(&app, "GET", "/cart", Some(&id)).await;
    assert_eq!(reply.json()["session"], Value::Null);
    assert_eq!(reply.json()["items"], json!({}));

    let reply = call(&app, "POST", "/logout", None).await;
    assert_eq!((reply.status, reply.set_cookie), (StatusCode::OK, None));
}

#[tokio::test]
async fn client_mistakes_are_400_and_create_no_session() {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let shop = start(&[], &store);
    let app = shop.router;
    let id = fill(&app).await;
    let created = shop.sessions.stats().sessions_created;
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
            let reply = call(&app, "POST", uri, cookie).await;
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
        &app,
        "POST",
        "/cart/items?sku=apple&qty=9223372036854775807",
        Some(&id),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    assert_eq!(shop.sessions.stats().sessions_created, created);
    let reply = call(&app, "GET", "/cart", Some(&id)).await;
    assert_eq!(reply.json()["items"], json!({"apple": 2}));
}

#[tokio::test]
async fn malformed_cookies_are_no_session() {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let app = start(&["--mode", "non-sticky"], &store).router;
    let before = operations(&store);
    let long = "x".repeat(20_000);
    for cookie in ["%%%", "a;b", "Zm9v-n9", "\u{1F36A}", long.as_str(), "", "-"] {
        let request = Request::get("/cart")
            .header(
                header::COOKIE,
                format!("tandem_session={cookie}").into_bytes(),
            )
            .body(Body::empty())
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{cookie:.20}");
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["session"], Value::Null, "{cookie:.20}");
    }
    assert_eq!(
        operations(&store),
        before,
        "no memcached call for any of them"
    );
}

#[tokio::test]
async fn static_health_and_admin_paths_never_touch_sessions() {
    let cluster = MemcachedCluster::start(2);
    let store = connect(&cluster).await;
    // Non-sticky: every session use would be a memcached call.
    let shop = start(&["--mode", "non-sticky"], &store);
    let app = shop.router.clone();
    let id = fill(&app).await;

    let before = quiet(&shop, &store).await;
    let loads = shop.sessions.stats().loads;
    let reply = call(&app, "GET", "/static/css/site.css", Some(&id)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body.contains("css/site.css"));
    assert_eq!(reply.set_cookie, None);
    let reply = call(&app, "GET", "/static/logo.png", None).await;
    assert_eq!(reply.set_cookie, None);
    let reply = call(&app, "GET", "/healthz", Some(&id)).await;
    assert_eq!((reply.status, reply.body.as_str()), (StatusCode::OK, "ok"));
    for path in ["/metrics", "/admin/nodes"] {
        let reply = call(&app, "GET", path, Some(&id)).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        assert_eq!(reply.set_cookie, None, "{path}");
    }
    assert_eq!(operations(&store), before, "no memcached call");
    assert_eq!(shop.sessions.stats().loads, loads, "no session load");

    // The cart does use the session, and memcached with it.
    assert_eq!(
        call(&app, "GET", "/cart", Some(&id)).await.json()["items"],
        json!({"apple": 2})
    );
    assert!(operations(&store) > before);
}

#[tokio::test]
async fn preferences_live_in_their_own_attributes() {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let app = start(&[], &store).router;
    assert_eq!(
        call(&app, "GET", "/prefs", None).await.json(),
        json!({"prefs": {}})
    );
    let reply = call(&app, "POST", "/prefs?key=lang&value=de", None).await;
    let id = reply.cookie_value();
    assert_eq!(reply.json(), json!({"prefs": {"lang": "de"}}));
    let reply = call(
        &app,
        "POST",
        "/prefs?key=theme&value=dark%20blue",
        Some(&id),
    )
    .await;
    assert_eq!(
        reply.json(),
        json!({"prefs": {"lang": "de", "theme": "dark blue"}})
    );
    let reply = call(&app, "GET", "/prefs", Some(&id)).await;
    assert_eq!(
        reply.json(),
        json!({"prefs": {"lang": "de", "theme": "dark blue"}})
    );
    // The cart is a separate attribute.
    assert_eq!(
        call(&app, "GET", "/cart", Some(&id)).await.json()["items"],
        json!({})
    );
}

#[tokio::test]
async fn metrics_and_nodes() {
    let cluster = MemcachedCluster::start(2);
    let store = connect(&cluster).await;
    let app = start(&["--mode", "non-sticky"], &store).router;
    fill(&app).await;

    let reply = call(&app, "GET", "/metrics", None).await;
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

    let nodes = call(&app, "GET", "/admin/nodes", None).await.json();
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
    while n2_up(&app).await == json!(true) {
        assert!(Instant::now() < deadline, "n2 never marked down");
        fill(&app).await;
    }
    assert_eq!(n2_up(&app).await, json!(false));
    let nodes = call(&app, "GET", "/admin/nodes", None).await.json();
    assert_eq!(nodes["nodes"][1]["down_transitions"], json!(1));
    assert!(nodes["nodes"][1]["last_error"].is_string(), "{nodes}");
}

async fn n2_up(app: &Router) -> Value {
    call(app, "GET", "/admin/nodes", None).await.json()["nodes"][1]["up"].clone()
}

#[tokio::test]
async fn servers_with_different_codecs_share_sessions() {
    let cluster = MemcachedCluster::start(2);
    let store = connect(&cluster).await;
    let json_shop = start(&["--mode", "non-sticky", "--codec", "json"], &store).router;
    let speedy_shop = start(&["--mode", "non-sticky", "--codec", "speedy"], &store).router;
    let msgpack_shop = start(&["--mode", "non-sticky", "--codec", "msgpack"], &store).router;

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
