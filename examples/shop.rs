//! A small shop on axum with Tandem sessions: a cart, preferences, login and logout.
//!
//! ```sh
//! cargo run --release --example shop                      # in-process store, port 8080
//! cargo run --release --example shop -- --memcached n1:127.0.0.1:11211,n2:127.0.0.1:11212 --route a1
//! cargo run --release --example shop -- --redis r1=redis://127.0.0.1:6379 --mode non-sticky
//! cargo run --release --example shop -- --redis redis+cluster://127.0.0.1:7000,127.0.0.1:7001 --wait-replicas 1
//! curl -si -X POST 'localhost:8080/cart/items?sku=apple&qty=2'
//! ```
//!
//! Options (all optional):
//!
//! ```text
//! --listen ADDR                  default 127.0.0.1:8080
//! --mode sticky|non-sticky       default sticky
//! --memcached NODESPEC           n1:host:port,n2:host:port (absent: in-process store)
//! --redis SPEC                   Redis or Valkey instead: r1=redis://[user:pass@]host:port[/db],...
//!                                or one URL (rediss:// for TLS; valkey:// and valkeys:// too).
//!                                A Sentinel group or a Cluster is one node:
//!                                redis+sentinel://[user:pass@]host:port[,host:port...]/SERVICE[/db]
//!                                redis+cluster://host:port[,host:port...]
//!                                (rediss+ and valkey+ forms too)
//! --tls-ca FILE                  the CA that verifies the remote tier's certificate (rediss://)
//! --wait-replicas N              Redis only, the durable setting: each write waits until N
//!                                replicas acknowledged it (WAIT), for at most 500 ms; one
//!                                not acknowledged in time fails (a non-sticky update
//!                                answers 503, a sync backup counts as failed). Absent or
//!                                0: writes do not wait
//! --failover-nodes IDS           node ids used only while every other node is down
//! --route NAME                   this server's route, for sticky load balancing
//! --codec speedy|json|msgpack    how new values are written (default speedy); sessions
//!                                written with any of the three are read
//! --concurrency none|lock|merge  default merge
//! --max-inactive SECS            default 1800; 0 = sessions never expire
//! --backup async|sync            default async
//! --secure-cookie                mark the cookie Secure (off: this serves plain HTTP)
//! ```
//!
//! HTTP:
//!
//! ```text
//! GET  /cart                     {"session", "items", "user", "served_by"}; creates no session
//! POST /cart/items?sku=S&qty=N   adds N (may be negative) to S in the `cart` attribute
//! GET  /prefs                    {"prefs": {..}}
//! POST /prefs?key=K&value=V      stores V in attribute `pref.K`
//! POST /login?user=U             sets the user and gives the session a new id
//! POST /logout                   ends the session, clears the cookie
//! GET  /static/<path>            text, never a session
//! GET  /healthz                  ok
//! GET  /metrics                  Prometheus text, names prefixed tandem_
//! GET  /admin/nodes              {"nodes": [{"id", "address", "up", "failover", "operations",
//!                                 "failures", "down_transitions", "mean_latency_micros",
//!                                 "connection_waits", "last_error"}]}
//! ```
//!
//! SIGTERM or SIGINT first flushes pending backups while requests are still served,
//! then stops accepting, lets running requests finish and writes what they left.
//!
//! `shop-actix` is the same program on actix-web. Everything but the wiring in
//! `shop/axum.rs` (routes, extractors, responses) is in `shop/app.rs`, which both
//! include.

use std::process::ExitCode;

// The shop, in files under examples/shop/ (which holds no main.rs and so is no example
// of its own): the command line, the framework-neutral shop, and the axum wiring.
// `pub`: the tests include it too, and use what the binary does not (counters).
#[path = "shop/app.rs"]
pub mod app;
#[path = "shop/options.rs"]
mod options;
#[path = "shop/axum.rs"]
mod shop_axum;

#[tokio::main]
async fn main() -> ExitCode {
    app::main(shop_axum::build, |shop, listener| {
        shop_axum::serve(shop, listener, app::shutdown_signal())
    })
    .await
}
