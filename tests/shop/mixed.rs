//! One client's requests alternating between an axum shop and an actix-web shop over
//! the same memcached nodes, as a balancer in front of a mixed deployment sends them:
//! the session is one session whichever framework serves it.

use http::StatusCode;
use serde_json::{Value, json};
use tandem_testkit::MemcachedCluster;

use crate::common::connect;
use crate::shops::{Framework, Served};
use crate::{Reply, call, quiet, start};

/// The random part of a session id (`<random>-<node>[.<route>]`): a takeover keeps it.
fn random_part(id: &str) -> &str {
    id.split_once('-').map_or(id, |(random, _)| random)
}

/// `method uri` on `shop` with `cookie`, answered 200 (the step is named in failures).
async fn step(shop: &Served, method: &str, uri: &str, cookie: Option<&str>) -> Reply {
    let reply = call(shop, method, uri, cookie).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "{method} {uri} on the {} shop: {}",
        shop.framework,
        reply.body
    );
    reply
}

/// Adds one `sku` on `shop` to the cart of `id`, which holds `items`: the answer is
/// the cart with it, and sets no new cookie (the id stays). `items` gets it too.
async fn add_one(shop: &Served, id: &str, sku: &str, items: &mut Value) {
    let reply = step(
        shop,
        "POST",
        &format!("/cart/items?sku={sku}&qty=1"),
        Some(id),
    )
    .await;
    items[sku] = json!(1);
    assert_eq!(reply.json()["items"], *items, "{}", shop.framework);
    assert_eq!(reply.set_cookie, None, "{}: the id stays", shop.framework);
}

/// Asserts what `GET /cart` with `id` on `shop` shows: `user` and `items`, under the
/// same id (no new cookie), or no session at all if `items` is `None`.
async fn cart_is(shop: &Served, id: &str, user: Value, items: Option<Value>) {
    let reply = step(shop, "GET", "/cart", Some(id)).await;
    let framework = shop.framework;
    let json = reply.json();
    match items {
        Some(items) => {
            assert_eq!(json["session"], json!(id), "{framework}: {json}");
            assert_eq!(json["items"], items, "{framework}: {json}");
            assert_eq!(json["user"], user, "{framework}: {json}");
            assert_eq!(reply.set_cookie, None, "{framework}: the id stays");
        }
        None => assert_eq!(
            json,
            json!({"session": null, "items": {}, "user": null, "served_by": json["served_by"]}),
            "{framework}: no session for {id}"
        ),
    }
}

/// Non-sticky: every request goes to the other shop than the one before. The cart
/// and the preferences carry across every request; a login on either shop cycles the
/// id, and the old id is dead on the other; a logout on either is final on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_sticky_requests_alternate_between_axum_and_actix() {
    let cluster = MemcachedCluster::start(2);
    let store = connect(&cluster).await;
    let args = ["--mode", "non-sticky"];
    let axum = start(Framework::Axum, &args, &store).await;
    let actix = start(Framework::Actix, &args, &store).await;
    let shops = [&axum, &actix];

    let reply = step(&axum, "POST", "/cart/items?sku=apple&qty=2", None).await;
    let id = reply.cookie_value();
    // Every request on the other shop than the last, each adding one item.
    let mut expected = json!({"apple": 2});
    for (number, shop) in shops.iter().cycle().skip(1).take(6).enumerate() {
        add_one(shop, &id, &format!("sku{number}"), &mut expected).await;
    }
    step(&actix, "POST", "/prefs?key=lang&value=de", Some(&id)).await;
    let reply = step(&axum, "GET", "/prefs", Some(&id)).await;
    assert_eq!(reply.json(), json!({"prefs": {"lang": "de"}}));

    // Login on actix-web, then on axum: each time the old id is dead on the other.
    let mut id = id;
    for (user, login_on, other) in [("ann", &actix, &axum), ("bob", &axum, &actix)] {
        let reply = step(login_on, "POST", &format!("/login?user={user}"), Some(&id)).await;
        let new = reply.cookie_value();
        assert_ne!(new, id, "login on {} cycles the id", login_on.framework);
        assert_eq!(reply.json()["items"], expected);
        cart_is(other, &id, Value::Null, None).await;
        cart_is(other, &new, json!(user), Some(expected.clone())).await;
        cart_is(login_on, &id, Value::Null, None).await;
        id = new;
    }
    let reply = step(&actix, "GET", "/prefs", Some(&id)).await;
    assert_eq!(reply.json(), json!({"prefs": {"lang": "de"}}), "prefs kept");

    // Logout on actix-web is final on axum, and one on axum final on actix-web.
    for (logout_on, other) in [(&actix, &axum), (&axum, &actix)] {
        let reply = step(logout_on, "POST", "/logout", Some(&id)).await;
        assert!(reply.clears_cookie(), "{:?}", reply.set_cookie);
        cart_is(other, &id, Value::Null, None).await;
        // Using the ended id again starts a new, empty session.
        let reply = step(other, "POST", "/cart/items?sku=kiwi&qty=1", Some(&id)).await;
        let fresh = reply.cookie_value();
        assert_ne!(random_part(&fresh), random_part(&id), "{}", other.framework);
        assert_eq!(reply.json()["items"], json!({"kiwi": 1}));
        assert_eq!(reply.json()["user"], Value::Null);
        cart_is(logout_on, &fresh, Value::Null, Some(json!({"kiwi": 1}))).await;
        id = fresh;
    }
}

/// Takes the session with cookie `id` over on `to` (route `route`): the answer sets
/// a cookie naming `route` for the same session, with the cart `items`.
async fn take_over(to: &Served, route: &str, id: &str, items: &Value) -> String {
    let reply = step(to, "GET", "/cart", Some(id)).await;
    let new = reply.cookie_value();
    let framework = to.framework;
    assert!(new.ends_with(&format!(".{route}")), "{framework}: {new}");
    assert_eq!(
        random_part(&new),
        random_part(id),
        "{framework}: same session"
    );
    assert_eq!(
        &reply.json()["items"],
        items,
        "{framework}: the cart survives"
    );
    assert_eq!(reply.json()["session"], json!(new), "{framework}");
    new
}

/// Sticky, routes `a1` (axum) and `a2` (actix-web): a session created on a1 and then
/// sent to a2 is taken over (a cookie naming a2, the state kept), changed there, and
/// taken back by a1, which must not trust its stale copy; then once more. The
/// balancer moves a client once its server's backups are written (as after a
/// drain), so each hop waits for that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_sessions_are_taken_over_between_axum_and_actix() {
    let cluster = MemcachedCluster::start(2);
    let store = connect(&cluster).await;
    let a1 = start(Framework::Axum, &["--route", "a1"], &store).await;
    let a2 = start(Framework::Actix, &["--route", "a2"], &store).await;

    let reply = step(&a1, "POST", "/cart/items?sku=apple&qty=2", None).await;
    let mut id = reply.cookie_value();
    assert!(id.ends_with(".a1"), "{id}");
    let mut items = json!({"apple": 2});
    let hops: [(&Served, &str, &Served, &str); 4] = [
        (&a1, "a1", &a2, "a2"),
        (&a2, "a2", &a1, "a1"),
        (&a1, "a1", &a2, "a2"),
        (&a2, "a2", &a1, "a1"),
    ];
    for (number, (from, _, to, route)) in hops.into_iter().enumerate() {
        quiet(from, &store).await;
        id = take_over(to, route, &id, &items).await;
        // A change on the new owner, which the next hop must carry back.
        add_one(to, &id, &format!("hop{number}"), &mut items).await;
    }

    // A login on a2 after the takeover: the old id is dead on a1 too.
    quiet(&a1, &store).await;
    id = take_over(&a2, "a2", &id, &items).await;
    let reply = step(&a2, "POST", "/login?user=ann", Some(&id)).await;
    let new = reply.cookie_value();
    assert!(new.ends_with(".a2"), "{new}");
    assert_eq!(reply.json()["items"], items);
    quiet(&a2, &store).await;
    cart_is(&a1, &id, Value::Null, None).await;
    let taken = take_over(&a1, "a1", &new, &items).await;
    assert_eq!(
        step(&a1, "GET", "/cart", Some(&taken)).await.json()["user"],
        json!("ann")
    );
    // A logout on a1 is final on a2.
    let reply = step(&a1, "POST", "/logout", Some(&taken)).await;
    assert!(reply.clears_cookie(), "{:?}", reply.set_cookie);
    quiet(&a1, &store).await;
    cart_is(&a2, &taken, Value::Null, None).await;
}
