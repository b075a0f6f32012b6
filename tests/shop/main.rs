//! The HTTP contract of the two shop examples, `shop` (axum) and `shop-actix`
//! (actix-web), against real memcached (and Redis in [`redis`], [`redis_ha`]).
//!
//! Each shop is served on a loopback port by its example's own `build` and `serve`
//! (the binaries' code path) and spoken to over TCP. Every contract test runs once per
//! shop, as `on_axum::<test>` and `on_actix::<test>`. [`mixed`] sends one client's
//! requests to both shops in turn; [`process`] runs the two binaries and stops them
//! with SIGTERM.

#[path = "../common/mod.rs"]
mod common;
// The examples' modules (all but their `main`), so that the routes are tested as they
// ship, served by the binaries' own `serve`; the parts only a binary uses are unused.
#[allow(dead_code)]
#[path = "../../examples/shop/app.rs"]
mod app;
#[allow(dead_code)]
#[path = "../../examples/shop/options.rs"]
mod options;
#[path = "../../examples/shop/actix.rs"]
mod shop_actix;
#[path = "../../examples/shop/axum.rs"]
mod shop_axum;
// The HTTP client and the served shops of the security tests.
#[allow(dead_code)]
#[path = "../shop_http/client.rs"]
mod client;
#[path = "../shop_http/shops.rs"]
mod shops;

/// Runs each contract test named (an `async fn(Framework)` of the enclosing module)
/// once per shop, as `on_axum::<name>` and `on_actix::<name>`.
macro_rules! for_both_shops {
    ($($test:ident),+ $(,)?) => {
        mod on_axum {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(crate::shops::Framework::Axum).await;
                }
            )+
        }

        mod on_actix {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(crate::shops::Framework::Actix).await;
                }
            )+
        }
    };
}

mod contract;
mod mixed;
mod process;
mod redis;
mod redis_ha;

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use serde_json::Value;
use tandem::memcached::MemcachedStore;
use tandem_testkit::wait_until_quiet;

use client::Client;
use common::operations;
use shops::{Framework, Remote, Served};

/// Waits until the shop's background session work is done and memcached sees no more
/// operations, then returns the operation count.
async fn quiet(shop: &Served, store: &MemcachedStore) -> u64 {
    wait_until_quiet(
        Duration::from_secs(5),
        || shop.pending_backups() == 0,
        || operations(store),
    )
    .await
    .expect("memcached never went quiet")
}

/// The shop of `framework` with the command line `args`, over `store`.
async fn start(framework: Framework, args: &[&str], store: &Arc<MemcachedStore>) -> Served {
    Served::over(framework, args, Remote::Memcached(Arc::clone(store))).await
}

/// One response, as the contract looks at it.
struct Reply {
    status: StatusCode,
    set_cookie: Option<String>,
    content_type: String,
    allow: String,
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

/// Sends `method uri` (with the session cookie `cookie`) on a new connection.
async fn call(shop: &Served, method: &str, uri: &str, cookie: Option<&str>) -> Reply {
    let framework = shop.framework;
    let reply = Client::new(shop.address)
        .send(method, uri, cookie)
        .await
        .unwrap_or_else(|error| panic!("{framework} shop: {error}"));
    assert!(
        reply.set_cookies.len() <= 1,
        "{framework} shop, {method} {uri}: at most one Set-Cookie: {:?}",
        reply.set_cookies
    );
    Reply {
        status: StatusCode::from_u16(reply.status).expect("a valid status"),
        set_cookie: reply.set_cookies.into_iter().next(),
        content_type: reply.content_type,
        allow: reply.allow,
        body: reply.body,
    }
}

/// Adds to the cart and returns the session cookie value.
async fn fill(shop: &Served) -> String {
    let reply = call(shop, "POST", "/cart/items?sku=apple&qty=2", None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.cookie_value()
}

/// The command line `args` (the two shops share its parser).
fn options(args: &[&str]) -> options::Options {
    options::Options::parse(args.iter().map(|arg| arg.to_string()))
        .unwrap()
        .unwrap()
}
