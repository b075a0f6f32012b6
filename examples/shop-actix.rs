//! The shop of `shop.rs` on actix-web: the same command line, routes, JSON answers,
//! status codes, cookies, `/metrics`, `/admin/nodes` and shutdown on SIGTERM or
//! SIGINT; only the web framework differs. `shop.rs` documents the options and routes.
//!
//! ```sh
//! cargo run --release --example shop-actix                # in-process store, port 8080
//! cargo run --release --example shop-actix -- --memcached n1:127.0.0.1:11211,n2:127.0.0.1:11212 --route a2
//! curl -si -X POST 'localhost:8080/cart/items?sku=apple&qty=2'
//! ```
//!
//! Servers of both shops pointed at the same remote nodes share sessions: a balancer
//! may send one client's requests to either. Everything but the wiring in `shop/actix.rs`
//! (routes, extractors, responses) is in `shop/app.rs`, which both include.

use std::process::ExitCode;

// The command line and the framework-neutral shop, shared with `shop.rs`, and the
// actix-web wiring.
// `pub`: the tests include it too, and use what the binary does not (counters).
#[path = "shop/app.rs"]
pub mod app;
#[path = "shop/options.rs"]
mod options;
#[path = "shop/actix.rs"]
mod shop_actix;

#[tokio::main]
async fn main() -> ExitCode {
    app::main(shop_actix::build, |shop, listener| {
        shop_actix::serve(shop, listener, app::shutdown_signal())
    })
    .await
}
